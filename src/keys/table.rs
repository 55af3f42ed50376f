//! The in-memory key index: SHA-256 of the key → record. Built whole, then swapped in whole.

use std::collections::HashMap;
use std::sync::Arc;

use time::OffsetDateTime;

use super::{Environment, KeyHash, KeyRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    Active,
    Expired,
    Revoked,
    NotYetValid,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
            KeyState::NotYetValid => "not_yet_valid",
        }
    }

    pub const ALL: [KeyState; 4] = [KeyState::Active, KeyState::Expired, KeyState::Revoked, KeyState::NotYetValid];
}

impl KeyRecord {
    /// Revocation wins over expiry: a revoked key says so even after it would have expired.
    pub fn state_at(&self, now: OffsetDateTime) -> KeyState {
        if self.revoked_at.is_some_and(|t| t <= now) {
            KeyState::Revoked
        } else if self.expires_at.is_some_and(|t| t <= now) {
            KeyState::Expired
        } else if self.not_before.is_some_and(|t| t > now) {
            KeyState::NotYetValid
        } else {
            KeyState::Active
        }
    }
}

#[derive(Debug, Default)]
pub struct KeyTable {
    by_hash: HashMap<KeyHash, Arc<KeyRecord>>,
    /// Id → hash, for the admin API and reload housekeeping (never the request path).
    by_id: HashMap<String, KeyHash>,
}

impl KeyTable {
    /// Callers guarantee unique hashes (the loaders validate that).
    pub fn from_records(records: Vec<KeyRecord>) -> KeyTable {
        let by_id = records.iter().map(|r| (r.id.clone(), r.hash)).collect();
        let by_hash = records.into_iter().map(|r| (r.hash, Arc::new(r))).collect();
        KeyTable { by_hash, by_id }
    }

    /// The index is keyed by a SHA-256 digest, so probe timing reveals nothing about the secret
    /// itself; the final equality is still checked in constant time.
    pub fn lookup(&self, hash: &KeyHash) -> Option<&Arc<KeyRecord>> {
        self.by_hash.get(hash).filter(|r| r.hash.ct_eq(hash))
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<KeyRecord>> {
        self.by_id.get(id).and_then(|h| self.by_hash.get(h))
    }

    pub fn contains_id(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &Arc<KeyRecord>> {
        self.by_hash.values()
    }

    /// Key counts by environment and state, for the key-table gauge.
    pub fn census(&self, now: OffsetDateTime) -> HashMap<(Environment, KeyState), usize> {
        let mut out = HashMap::new();
        for env in [Environment::Live, Environment::Test] {
            for st in KeyState::ALL {
                out.insert((env, st), 0);
            }
        }
        for r in self.by_hash.values() {
            *out.entry((r.environment, r.state_at(now))).or_default() += 1;
        }
        out
    }
}
