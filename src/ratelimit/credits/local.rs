//! The in-process counters (one replica, or a replica that lost Redis and fails open): one
//! counter per key id in a sharded map, moved by `decide` under the entry's shard lock (held for
//! a few arithmetic operations, never across an await).

use std::sync::Arc;

use dashmap::DashMap;

use super::{decide, Charge, Counter, Outcome};

/// Key ids come from the key table, not from clients: the fast hasher is safe here.
#[derive(Default)]
pub struct LocalCredits {
    counters: DashMap<Arc<str>, Counter, rustc_hash::FxBuildHasher>,
}

impl LocalCredits {
    pub fn charge(&self, id: &Arc<str>, ch: &Charge<'_>) -> Outcome {
        let args = ch.args();
        let mut entry = match self.counters.get_mut(&**id) {
            Some(e) => e,
            None => self.counters.entry(Arc::clone(id)).or_default(),
        };
        let verdict = decide(&mut entry, &args);
        Outcome::of(verdict, &entry, ch)
    }

    /// The live counter of a key, if it has spent anything here.
    pub fn counter(&self, id: &str) -> Option<Counter> {
        self.counters.get(id).map(|c| *c)
    }

    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::credits::{Calendar, CreditPlan, Verdict};

    #[test]
    fn concurrent_charges_never_overspend() {
        let store = Arc::new(LocalCredits::default());
        let id: Arc<str> = Arc::from("k");
        let p = CreditPlan { balance: 1000, revision: 0, topped_up: 0, refill: None };
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (store, id) = (Arc::clone(&store), Arc::clone(&id));
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| {
                            let ch = Charge { plan: Some(&p), calendar: Calendar::default(), cost: 1, now: 0 };
                            store.charge(&id, &ch).verdict == Verdict::Allowed
                        })
                        .count()
                })
            })
            .collect();
        assert_eq!(handles.into_iter().map(|h| h.join().unwrap()).sum::<usize>(), 1000);
    }
}
