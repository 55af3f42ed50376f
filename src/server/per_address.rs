//! How many connections each client address holds open, so one client re-opening silent
//! connections cannot take every slot of `max_connections`: past `max_connections_per_ip` a
//! new connection from that address is closed at once (its others keep working).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::PerAddressCap;

#[derive(Debug, Default)]
pub struct PerAddress {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count, given back when it closes.
pub struct Slot {
    book: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for a new connection from `ip`, or `None` when the address is at its cap.
    /// Addresses without a cap (exempt, or the cap off) take no slot and never wait on the lock.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, cap: &PerAddressCap) -> Option<Option<Slot>> {
        let Some(max) = cap.for_peer(ip) else { return Some(None) };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Some(Slot { book: Arc::clone(self), ip }))
    }

    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        self.open.lock().unwrap().get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.book.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Forgotten when idle: the map holds only addresses with connections open.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_at_its_cap_is_refused_until_one_of_its_connections_closes() {
        let book = Arc::new(PerAddress::default());
        let cap = PerAddressCap { max: 2, exempt: vec!["10.0.0.0/8".parse().unwrap()] };
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let first = book.admit(a, &cap).unwrap();
        let second = book.admit(a, &cap).unwrap();
        assert!(book.admit(a, &cap).is_none(), "a third from the same address is refused");
        assert!(book.admit(b, &cap).is_some(), "another address is not affected");
        drop(first);
        assert_eq!(book.open(a), 1);
        let third = book.admit(a, &cap).unwrap();
        assert!(third.is_some());
        drop((second, third));
        assert_eq!(book.open(a), 0);
        assert!(book.open.lock().unwrap().is_empty(), "idle addresses are forgotten");
        for _ in 0..5 {
            assert!(matches!(book.admit("10.1.1.1".parse().unwrap(), &cap), Some(None)), "exempt: no slot, no cap");
        }
    }
}
