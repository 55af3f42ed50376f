//! The key event log's entries: what a write did to each key (created, updated, rotated,
//! revoked), derived by comparing the table before and after. Pure, so both stores log the
//! same events for the same change.

use std::collections::HashMap;

use super::file::{RawKey, RawTable};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub key_id: String,
    pub kind: &'static str,
    pub reason: Option<String>,
}

/// The audit events that turn `before` into `after`: new keys are created; a key that gained a
/// revocation is revoked, one that gained a successor rotated; any other change is an update.
pub fn changes(before: &RawTable, after: &RawTable) -> Vec<Event> {
    let old: HashMap<&str, &RawKey> = before.keys.iter().map(|k| (k.id.as_str(), k)).collect();
    let mut out = Vec::new();
    for k in &after.keys {
        let event = match old.get(k.id.as_str()) {
            None => Some(("created", k.rotated_from.as_ref().map(|f| format!("rotated from {f}")))),
            Some(o) if o.revoked_at.is_none() && k.revoked_at.is_some() => Some(("revoked", k.revoke_reason.clone())),
            Some(o) if o.rotated_to.is_none() && k.rotated_to.is_some() => {
                Some(("rotated", k.rotated_to.as_ref().map(|t| format!("rotated to {t}"))))
            }
            Some(o) if !same(o, k) => Some(("updated", None)),
            Some(_) => None,
        };
        if let Some((kind, reason)) = event {
            out.push(Event { key_id: k.id.clone(), kind, reason });
        }
    }
    out
}

fn same(a: &RawKey, b: &RawKey) -> bool {
    // RawKey holds no floats or maps: equal JSON is equal keys.
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}
