//! `keys import`: a key table file (hashes only, validated whole as the proxy would load it) or
//! a TSV of keys issued elsewhere (hashed on the way in). Nothing is written unless all of it
//! is good, and an import never overwrites a key already there.

use anyhow::{bail, Context};
use time::OffsetDateTime;

use super::{tsv, KeysContext};
use crate::keys::file::RawTable;
use crate::keys::lifecycle::{self, KeySpec};
use crate::store::file::FileStore;

pub(super) fn import_file(ctx: &KeysContext, path: &std::path::Path) -> anyhow::Result<()> {
    // Validated whole, as the proxy would load it (the config's scopes included), before
    // anything is written.
    let incoming = FileStore::new(path, ctx.table_scopes.clone()).read()?;
    let (added, same) = ctx.store.modify(|t| import_table(t, incoming))?;
    println!(
        "Imported {added} keys from {} into {} ({same} already there, unchanged; hashes only).",
        path.display(),
        ctx.store.describe()
    );
    Ok(())
}

pub(super) fn import_tsv(
    ctx: &KeysContext,
    tsv: &std::path::Path,
    label: &str,
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(tsv).with_context(|| format!("{}", tsv.display()))?;
    let rows = tsv::parse(&text);
    let added = ctx.store.modify(|t| {
        let before = t.keys.len();
        for row in rows {
            let at = |e: lifecycle::LifecycleError| anyhow::anyhow!("{}: line {}: {e}", tsv.display(), row.line);
            if let Some(sc) = &row.scopes {
                lifecycle::check_scopes(&ctx.catalogue, sc).map_err(at)?;
            }
            let spec = KeySpec {
                label: label.to_string(),
                clinics: row.clinics.clone(),
                scopes: row.scopes.clone(),
                ..KeySpec::default()
            };
            lifecycle::import(t, &row.secret, spec, &ctx.format, now).map_err(at)?;
        }
        Ok(t.keys.len() - before)
    })?;
    println!("Imported {added} keys into {} (hashes only).", ctx.store.describe());
    Ok(())
}

/// Adds the keys of `incoming` that `t` lacks; returns (added, already there). A different key
/// under an id `t` has is refused: an import never overwrites.
fn import_table(t: &mut RawTable, incoming: RawTable) -> anyhow::Result<(usize, usize)> {
    let have: std::collections::HashMap<String, serde_json::Value> =
        t.keys.iter().map(|k| (k.id.clone(), serde_json::to_value(k).unwrap_or_default())).collect();
    let (mut added, mut same, mut clash) = (0, 0, Vec::new());
    for k in incoming.keys {
        match have.get(&k.id) {
            Some(v) if *v == serde_json::to_value(&k)? => same += 1,
            Some(_) => clash.push(k.id),
            None => {
                t.keys.push(k);
                added += 1;
            }
        }
    }
    if !clash.is_empty() {
        bail!("these ids are already in the store with different contents (nothing imported): {}", clash.join(", "));
    }
    Ok((added, same))
}
