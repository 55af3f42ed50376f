//! Per-key detectors: a network the key has not been seen from recently, a rate far above the
//! key's own baseline (an EWMA of per-interval rates), and repeated refusals for scope, clinic
//! or route (a GCRA budget of refusals). One small state per key that was active recently, in
//! one map, updated under the shard lock for a few instructions and never across an await.

use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;

use super::{nanos, Anomaly, Kind, NewNetwork, Now, RateSpike, Settings, Subject};
use crate::ratelimit::{decide, Quota};

/// How many distinct networks a key remembers.
const NETS: usize = 4;

#[derive(Default)]
struct State {
    /// (network, last seen, monotonic nanos); last seen 0 = empty slot.
    nets: [(u128, u64); NETS],
    bucket_start: u64,
    bucket_count: u32,
    /// Requests per second, smoothed over intervals.
    baseline: f64,
    intervals: u32,
    spike_reported: bool,
    probe_tat: u64,
    last_seen: u64,
}

pub struct KeyWatch {
    /// Key ids come from the key table: the fast hasher is safe. Shared with the watch a reload
    /// builds from this one.
    keys: Arc<DashMap<Arc<str>, State, rustc_hash::FxBuildHasher>>,
    new_network: Option<(NewNetwork, u64)>,
    spike: Option<(RateSpike, u64, f64)>,
    probe: Option<Quota>,
    probe_threshold: u32,
    probe_window: std::time::Duration,
    rotated_warn: i64,
    /// Forget keys idle for this long (the longest memory any detector needs).
    idle: u64,
}

/// Up to two findings from one request (a new network and a spike can coincide).
pub type Findings = [Option<Anomaly>; 2];

impl KeyWatch {
    pub fn new(s: &Settings) -> KeyWatch {
        let spike = s.rate_spike.clone().map(|r| {
            let alpha = 2.0 / (f64::from(r.min_history.max(1)) + 1.0);
            let interval = nanos(r.interval).max(1);
            (r, interval, alpha)
        });
        let remember = s.new_network.as_ref().map_or(0, |n| nanos(n.remember));
        let spike_memory = spike.as_ref().map_or(0, |(r, i, _)| i.saturating_mul(u64::from(r.min_history) * 4));
        KeyWatch {
            keys: Arc::default(),
            new_network: s.new_network.clone().map(|n| (n.clone(), nanos(n.remember))),
            spike,
            probe: Quota::new(s.probing.threshold, s.probing.window, s.probing.threshold),
            probe_threshold: s.probing.threshold,
            probe_window: s.probing.window,
            rotated_warn: i64::try_from(s.rotated_key_warn_before.as_secs()).unwrap_or(i64::MAX),
            idle: remember.max(spike_memory).max(nanos(s.probing.window)),
        }
    }

    /// The same watch under new settings: each key's networks, baseline and refusals carry
    /// over (forgetting them would report every active key's next request from a "new" network).
    pub fn reconfigured(&self, s: &Settings) -> KeyWatch {
        KeyWatch { keys: Arc::clone(&self.keys), ..KeyWatch::new(s) }
    }

    /// An authenticated request by `id` from `ip`.
    pub fn seen(&self, id: &Arc<str>, ip: IpAddr, now: Now) -> Findings {
        let mut found: Findings = [None, None];
        if self.new_network.is_none() && self.spike.is_none() {
            return found;
        }
        let mut st = match self.keys.get_mut(&**id) {
            Some(s) => s,
            None => self.keys.entry(Arc::clone(id)).or_default(),
        };
        st.last_seen = now.mono;
        if let Some((cfg, remember)) = &self.new_network {
            if new_network(&mut st.nets, network(ip, cfg), now.mono, *remember) {
                found[0] = Some(Anomaly {
                    kind: Kind::NewNetwork,
                    subject: Subject::Key(Arc::clone(id)),
                    detail: format!(
                        "first request from {} within the last {}",
                        display_net(ip, cfg),
                        hum(cfg.remember)
                    ),
                });
            }
        }
        if let Some((cfg, interval, alpha)) = &self.spike {
            if let Some((rate, base)) = spike(&mut st, now.mono, *interval, *alpha, cfg) {
                found[1] = Some(Anomaly {
                    kind: Kind::RateSpike,
                    subject: Subject::Key(Arc::clone(id)),
                    detail: format!("{rate:.1} requests/s against a baseline of {base:.1}/s"),
                });
            }
        }
        found
    }

    /// The key was refused for scope, clinic or route.
    pub fn refused(&self, id: &Arc<str>, now: Now) -> Option<Anomaly> {
        let q = self.probe.as_ref()?;
        let mut st = match self.keys.get_mut(&**id) {
            Some(s) => s,
            None => self.keys.entry(Arc::clone(id)).or_default(),
        };
        st.last_seen = now.mono;
        let (v, tat) = decide(st.probe_tat, now.mono, q);
        st.probe_tat = tat;
        (!v.allowed).then(|| Anomaly {
            kind: Kind::ScopeProbing,
            subject: Subject::Key(Arc::clone(id)),
            detail: format!(
                "more than {} refusals for scope, clinic or route in {}",
                self.probe_threshold,
                hum(self.probe_window)
            ),
        })
    }

    /// A rotated-out key used within the warning time before its grace period ends.
    pub fn rotated_in_use(&self, id: &Arc<str>, grace_end_unix: i64, now: Now) -> Option<Anomaly> {
        let left = grace_end_unix - now.unix;
        (left > 0 && left <= self.rotated_warn).then(|| Anomaly {
            kind: Kind::RotatedKeyInUse,
            subject: Subject::Key(Arc::clone(id)),
            detail: format!(
                "rotated-out key still in use; it stops working in {}",
                hum(std::time::Duration::from_secs(left as u64))
            ),
        })
    }

    pub fn sweep(&self, now: Now) {
        self.keys.retain(|_, st| now.mono.saturating_sub(st.last_seen) < self.idle);
    }

    pub fn tracked(&self) -> usize {
        self.keys.len()
    }
}

fn hum(d: std::time::Duration) -> humantime::FormattedDuration {
    humantime::format_duration(d)
}

/// The network an address belongs to, at the configured prefix length, as one number.
fn network(ip: IpAddr, cfg: &NewNetwork) -> u128 {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let mask = if cfg.ipv4_prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(cfg.ipv4_prefix.min(32))) };
            u128::from(bits & mask)
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let p = u32::from(cfg.ipv6_prefix.min(128));
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            // Tag v6 networks so they never equal a v4 one.
            (bits & mask) | 1
        }
    }
}

fn display_net(ip: IpAddr, cfg: &NewNetwork) -> String {
    let prefix = match ip {
        IpAddr::V4(_) => cfg.ipv4_prefix,
        IpAddr::V6(_) => cfg.ipv6_prefix,
    };
    ipnet::IpNet::new(ip, prefix).map(|n| n.trunc().to_string()).unwrap_or_else(|_| ip.to_string())
}

/// Records `net` as seen; reports it when the key has recent history and none of it is from
/// this network. A key's first network, or the first after a long silence, is learnt quietly.
fn new_network(nets: &mut [(u128, u64); NETS], net: u128, now: u64, remember: u64) -> bool {
    let recent = |seen: u64| seen != 0 && now.saturating_sub(seen) < remember;
    if let Some(slot) = nets.iter_mut().find(|(n, seen)| *n == net && *seen != 0) {
        slot.1 = now;
        return false;
    }
    let has_history = nets.iter().any(|(_, seen)| recent(*seen));
    // Replace the empty or least recently seen slot.
    let oldest = nets.iter_mut().min_by_key(|(_, seen)| *seen).expect("NETS > 0");
    *oldest = (net, now.max(1));
    has_history
}

/// Counts the request in the current interval; closes finished intervals into the baseline.
/// Reports (rate, baseline) once per interval when the rate is far above the baseline.
fn spike(st: &mut State, now: u64, interval: u64, alpha: f64, cfg: &RateSpike) -> Option<(f64, f64)> {
    let secs = interval as f64 / 1e9;
    if st.bucket_start == 0 {
        st.bucket_start = now.max(1);
    }
    let elapsed = now.saturating_sub(st.bucket_start);
    if elapsed >= interval {
        let closed = f64::from(st.bucket_count) / secs;
        st.baseline = if st.intervals == 0 { closed } else { st.baseline + alpha * (closed - st.baseline) };
        let empty = (elapsed / interval).saturating_sub(1);
        if empty > 0 {
            st.baseline *= (1.0 - alpha).powi(i32::try_from(empty).unwrap_or(i32::MAX));
        }
        st.intervals = st.intervals.saturating_add(u32::try_from(empty + 1).unwrap_or(u32::MAX));
        st.bucket_start += (elapsed / interval) * interval;
        st.bucket_count = 0;
        st.spike_reported = false;
    }
    st.bucket_count = st.bucket_count.saturating_add(1);
    if st.spike_reported || st.intervals < cfg.min_history {
        return None;
    }
    // The interval so far, as a rate over the whole interval: a lower bound, so an early
    // report is never a false one.
    let rate = f64::from(st.bucket_count) / secs;
    if rate >= cfg.min_rate && rate > cfg.factor * st.baseline {
        st.spike_reported = true;
        return Some((rate, st.baseline));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    const SEC: u64 = 1_000_000_000;

    fn now(s: u64) -> Now {
        Now { mono: s, unix: 1_800_000_000 + (s / SEC) as i64 }
    }

    fn watch() -> KeyWatch {
        KeyWatch::new(&Settings::default())
    }

    fn id() -> Arc<str> {
        Arc::from("key_1")
    }

    fn kinds(f: &Findings) -> Vec<Kind> {
        f.iter().flatten().map(|a| a.kind).collect()
    }

    #[test]
    fn the_first_network_is_learnt_quietly() {
        let w = watch();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(kinds(&w.seen(&id(), ip, now(SEC))).is_empty());
        assert!(kinds(&w.seen(&id(), "10.1.2.200".parse().unwrap(), now(2 * SEC))).is_empty(), "same /24");
    }

    #[test]
    fn a_new_network_beside_recent_history_fires_once() {
        let w = watch();
        w.seen(&id(), "10.1.2.3".parse().unwrap(), now(SEC));
        let f = w.seen(&id(), "198.51.100.7".parse().unwrap(), now(2 * SEC));
        let a = f[0].as_ref().expect("new network");
        assert_eq!(a.kind, Kind::NewNetwork);
        assert!(a.detail.contains("198.51.100.0/24"), "{}", a.detail);
        assert!(kinds(&w.seen(&id(), "198.51.100.9".parse().unwrap(), now(3 * SEC))).is_empty(), "now known");
        assert!(kinds(&w.seen(&id(), "10.1.2.3".parse().unwrap(), now(4 * SEC))).is_empty(), "still known");
    }

    #[test]
    fn a_reload_keeps_the_networks_a_key_was_seen_from() {
        let w = watch();
        w.seen(&id(), "10.1.2.3".parse().unwrap(), now(SEC));
        let mut s = Settings::default();
        s.new_network.as_mut().unwrap().remember = std::time::Duration::from_secs(3600);
        let after = w.reconfigured(&s);
        assert!(kinds(&after.seen(&id(), "10.1.2.4".parse().unwrap(), now(2 * SEC))).is_empty(), "still known");
        let f = after.seen(&id(), "198.51.100.7".parse().unwrap(), now(3 * SEC));
        assert!(f[0].as_ref().unwrap().detail.contains("within the last 1h"), "the new setting applies: {f:?}");
    }

    #[test]
    fn after_a_long_silence_any_network_is_learnt_quietly() {
        let w = watch();
        w.seen(&id(), "10.1.2.3".parse().unwrap(), now(SEC));
        let later = SEC + 25 * 3600 * SEC;
        assert!(kinds(&w.seen(&id(), "198.51.100.7".parse().unwrap(), now(later))).is_empty());
    }

    #[test]
    fn ipv6_networks_are_compared_by_prefix() {
        let w = watch();
        w.seen(&id(), "2001:db8:1:1::1".parse().unwrap(), now(SEC));
        assert!(kinds(&w.seen(&id(), "2001:db8:1:ffff::2".parse().unwrap(), now(2 * SEC))).is_empty(), "same /48");
        assert_eq!(kinds(&w.seen(&id(), "2001:db8:2::1".parse().unwrap(), now(3 * SEC))), vec![Kind::NewNetwork]);
    }

    /// `per_sec` requests a second for `secs` seconds from one address, from `start`.
    fn traffic(w: &KeyWatch, start: u64, secs: u64, per_sec: u64) -> Vec<Anomaly> {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut out = Vec::new();
        for i in 0..secs * per_sec {
            let t = start + i * SEC / per_sec;
            out.extend(w.seen(&id(), ip, now(t)).into_iter().flatten());
        }
        out
    }

    #[test]
    fn steady_and_mildly_bursty_traffic_is_not_a_spike() {
        let w = watch();
        assert!(traffic(&w, SEC, 600, 2).is_empty(), "ten minutes at 2/s");
        assert!(traffic(&w, 601 * SEC, 60, 8).is_empty(), "a minute at 4x the baseline");
    }

    #[test]
    fn a_rate_far_above_the_baseline_fires_once_per_interval() {
        let w = watch();
        traffic(&w, SEC, 600, 1);
        let found = traffic(&w, 601 * SEC, 10, 50);
        let spikes: Vec<_> = found.iter().filter(|a| a.kind == Kind::RateSpike).collect();
        assert!(!spikes.is_empty(), "50/s against 1/s");
        assert!(spikes.len() <= 2, "once per 10 s interval, not per request: {}", spikes.len());
        assert!(spikes[0].detail.contains("baseline of 1.0/s"), "{}", spikes[0].detail);
    }

    #[test]
    fn a_new_key_has_no_baseline_to_spike_against() {
        let w = watch();
        assert!(traffic(&w, SEC, 60, 100).iter().all(|a| a.kind != Kind::RateSpike));
    }

    #[test]
    fn repeated_refusals_are_probing_occasional_ones_are_not() {
        let w = watch();
        for i in 0..10 {
            assert_eq!(w.refused(&id(), now(i * 10 * SEC)), None, "one refusal every 10 s");
        }
        let mut fired = None;
        for _ in 0..11 {
            fired = fired.or(w.refused(&id(), now(200 * SEC)));
        }
        assert_eq!(fired.expect("11 refusals at once").kind, Kind::ScopeProbing);
    }

    #[test]
    fn rotated_keys_are_reported_close_to_the_end_of_their_grace() {
        let w = watch();
        let t = now(SEC);
        assert_eq!(w.rotated_in_use(&id(), t.unix + 48 * 3600, t), None, "two days left");
        let a = w.rotated_in_use(&id(), t.unix + 3600, t).expect("one hour left");
        assert!(a.detail.contains("1h"), "{}", a.detail);
        assert_eq!(w.rotated_in_use(&id(), t.unix - 1, t), None, "already over: the key is refused as expired");
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let w = watch();
        w.seen(&id(), "10.0.0.1".parse().unwrap(), now(SEC));
        w.sweep(now(SEC + 2 * 24 * 3600 * SEC));
        assert_eq!(w.tracked(), 0);
    }
}
