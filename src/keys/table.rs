//! The in-memory key index: SHA-256 of the key → record. Records sit in one dense vector and an
//! open-addressing index of `u32`s points into it (4 bytes a slot instead of a hash map's
//! 40-byte entries). The SHA-256 digest is already uniform, so its first 8 bytes are the hash:
//! no hasher runs on the request path. Built whole, then swapped in whole.

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

impl KeyState {
    /// The one validity rule, over Unix seconds. Revocation wins over expiry: a revoked key
    /// says so even after it would have expired.
    pub fn at(expires: Option<i64>, revoked: Option<i64>, not_before: Option<i64>, now: i64) -> KeyState {
        if revoked.is_some_and(|t| t <= now) {
            KeyState::Revoked
        } else if expires.is_some_and(|t| t <= now) {
            KeyState::Expired
        } else if not_before.is_some_and(|t| t > now) {
            KeyState::NotYetValid
        } else {
            KeyState::Active
        }
    }
}

impl KeyRecord {
    pub fn state_at(&self, now: OffsetDateTime) -> KeyState {
        // Whole seconds: at 11:59:59.5 a key expiring at 12:00:00 is still valid.
        let (expires, revoked, not_before) = self.expires_revoked_not_before();
        let set = |t: u32| (t != 0).then_some(i64::from(t));
        KeyState::at(set(expires), set(revoked), set(not_before), now.unix_timestamp())
    }
}

#[derive(Debug, Default)]
pub struct KeyTable {
    records: Vec<KeyRecord>,
    /// 0 = empty, else index + 1 into `records`. Length is a power of two, at most 3/4 full.
    slots: Vec<u32>,
    /// Keys that have a successor: few at any time, so a set beside the records rather than a
    /// flag in each of them.
    rotated_out: rustc_hash::FxHashSet<Arc<str>>,
    /// (hash of id, record index), sorted: the id index tokens need to find their parent key,
    /// at 8 bytes a key.
    ids: Vec<(u32, u32)>,
}

fn id_hash(id: &str) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = rustc_hash::FxBuildHasher.build_hasher();
    h.write(id.as_bytes());
    let v = h.finish();
    (v ^ (v >> 32)) as u32
}

fn home(hash: &KeyHash, mask: usize) -> usize {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.0[..8]);
    (u64::from_le_bytes(first) as usize) & mask
}

impl KeyTable {
    /// Callers guarantee unique hashes (the loaders validate that).
    pub fn from_records(records: Vec<KeyRecord>) -> KeyTable {
        assert!(records.len() < u32::MAX as usize, "more keys than the index can address");
        let size = (records.len() * 4 / 3 + 1).next_power_of_two().max(8);
        let mask = size - 1;
        let mut slots = vec![0u32; size];
        for (i, r) in records.iter().enumerate() {
            let mut at = home(&r.hash, mask);
            while slots[at] != 0 {
                at = (at + 1) & mask;
            }
            slots[at] = i as u32 + 1;
        }
        let mut ids: Vec<(u32, u32)> = records.iter().enumerate().map(|(i, r)| (id_hash(&r.id), i as u32)).collect();
        ids.sort_unstable();
        KeyTable { records, slots, rotated_out: Default::default(), ids }
    }

    /// This table with `delta`'s records replacing those with the same id and the rest added:
    /// how a replica applies a batch of changed rows without re-reading the whole store.
    /// Records are shared, not copied; the index is rebuilt.
    pub fn with_changes(&self, delta: KeyTable) -> KeyTable {
        let replaced: rustc_hash::FxHashSet<Arc<str>> = delta.records.iter().map(|r| Arc::clone(&r.id)).collect();
        let mut records = Vec::with_capacity(self.records.len() + delta.records.len());
        records.extend(self.records.iter().filter(|r| !replaced.contains(&r.id)).cloned());
        let mut rotated: Vec<Arc<str>> =
            self.rotated_out.iter().filter(|id| !replaced.contains(*id)).cloned().collect();
        rotated.extend(delta.rotated_out);
        records.extend(delta.records);
        let mut t = KeyTable::from_records(records);
        t.set_rotated_out(rotated);
        t
    }

    pub fn set_rotated_out(&mut self, ids: Vec<Arc<str>>) {
        self.rotated_out = ids.into_iter().collect();
    }

    /// Whether the key has been rotated (a successor exists): its expiry is its grace end.
    pub fn is_rotated_out(&self, id: &str) -> bool {
        !self.rotated_out.is_empty() && self.rotated_out.contains(id)
    }

    /// The index is keyed by a SHA-256 digest, so probe timing reveals nothing about the secret
    /// itself; each candidate is still compared in constant time.
    pub fn lookup(&self, hash: &KeyHash) -> Option<&KeyRecord> {
        if self.records.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut at = home(hash, mask);
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            let r = &self.records[slot as usize - 1];
            if r.hash.ct_eq(hash) {
                return Some(r);
            }
            at = (at + 1) & mask;
        }
    }

    /// Indices of records whose hash an earlier record already has (the loader reports them).
    pub fn duplicate_hashes(&self) -> Vec<usize> {
        let mut dups = Vec::new();
        if self.records.is_empty() {
            return dups;
        }
        let mask = self.slots.len() - 1;
        for (i, r) in self.records.iter().enumerate() {
            let mut at = home(&r.hash, mask);
            loop {
                let j = self.slots[at] as usize - 1;
                if self.records[j].hash == r.hash {
                    if j != i {
                        dups.push(i);
                    }
                    break;
                }
                at = (at + 1) & mask;
            }
        }
        dups
    }

    /// By key id: a binary search of the id index, then a string compare per candidate.
    pub fn by_id(&self, id: &str) -> Option<&KeyRecord> {
        let h = id_hash(id);
        let start = self.ids.partition_point(|(x, _)| *x < h);
        self.ids[start..]
            .iter()
            .take_while(|(x, _)| *x == h)
            .map(|(_, i)| &self.records[*i as usize])
            .find(|r| &*r.id == id)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn records(&self) -> impl Iterator<Item = &KeyRecord> {
        self.records.iter()
    }

    /// Key counts by environment and state, for the key-table gauge.
    pub fn census(&self, now: OffsetDateTime) -> HashMap<(Environment, KeyState), usize> {
        let mut out = HashMap::new();
        for env in [Environment::Live, Environment::Test] {
            for st in KeyState::ALL {
                out.insert((env, st), 0);
            }
        }
        for r in &self.records {
            *out.entry((r.environment(), r.state_at(now))).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::file::parse;

    fn table(entries: &[(&str, char, &str)]) -> KeyTable {
        let mut y = String::from("keys:\n");
        for (id, h, extra) in entries {
            y.push_str(&format!(
                "  - id: {id}\n    hash: {}\n    environment: live\n{extra}",
                h.to_string().repeat(64)
            ));
        }
        parse(&y, "t", &crate::keys::Catalogue::unchecked()).unwrap()
    }

    fn hash(c: char) -> KeyHash {
        KeyHash::from_hex(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn changes_replace_by_id_add_the_rest_and_keep_everything_else() {
        let old = table(&[("k1", 'a', ""), ("k2", 'b', "    rotated_to: k3\n")]);
        let delta = table(&[
            ("k2", 'b', "    rotated_to: k3\n    revoked_at: 2026-01-01T00:00:00Z\n"),
            ("k3", 'c', "    rotated_from: k2\n"),
        ]);
        let t = old.with_changes(delta);
        assert_eq!(t.len(), 3);
        assert!(t.lookup(&hash('a')).is_some(), "untouched keys stay");
        assert!(t.lookup(&hash('b')).unwrap().times().revoked_at.is_some(), "the changed row wins");
        assert!(t.lookup(&hash('c')).is_some(), "new keys are added");
        assert!(t.is_rotated_out("k2") && !t.is_rotated_out("k3"));
        let t = t.with_changes(table(&[("k2", 'b', "")]));
        assert!(!t.is_rotated_out("k2"), "a replaced row's rotation link comes from the new row");
    }
}
