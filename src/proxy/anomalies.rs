//! The anomaly detectors beside the request path: the steps tell them what they learnt about a
//! request (decision errors, never HTTP errors), and reports what they find once per episode: counted in
//! `keygate_anomalies_total{kind}`, written as an audit event, and handed to the alerter
//! (which never blocks).

use std::net::IpAddr;
use std::sync::Arc;

use super::limit::ceil_secs;
use crate::anomaly::{Anomaly, BlockStatus, Detectors, Kind, Now, Settings, Subject};
use crate::authn::AuthnError;
use crate::error::ApiError;
use crate::keys::KeyRecord;
use crate::metrics::Metrics;
use crate::policy::Denied;

/// Where anomalies go besides the metric and the log (the webhook alerter).
pub trait Notify: Send + Sync {
    fn notify(&self, a: &Anomaly);
}

pub struct Anomalies {
    detectors: Detectors,
    metrics: Arc<Metrics>,
    notify: Option<Arc<dyn Notify>>,
}

impl Anomalies {
    pub fn new(settings: Settings, metrics: Arc<Metrics>, notify: Option<Arc<dyn Notify>>) -> Anomalies {
        Anomalies { detectors: Detectors::new(settings), metrics, notify }
    }

    /// The detectors under reloaded settings, remembering what they had seen, reporting to
    /// `notify` (the running alerter when its settings did not change).
    pub fn reconfigured(&self, settings: Settings, notify: Option<Arc<dyn Notify>>) -> Anomalies {
        Anomalies { detectors: self.detectors.reconfigured(settings), metrics: Arc::clone(&self.metrics), notify }
    }

    /// Where anomalies go now, for a reload that keeps it.
    pub fn notifier(&self) -> Option<Arc<dyn Notify>> {
        self.notify.clone()
    }

    fn on(&self) -> bool {
        self.detectors.settings.enabled
    }

    /// Refuses an address blocked after an invalid-key burst.
    pub fn blocked(&self, ip: IpAddr, now: Now) -> Result<(), ApiError> {
        if !self.on() {
            return Ok(());
        }
        match self.detectors.ips.blocked(ip, now.mono) {
            None => Ok(()),
            Some(left) => {
                let retry_after = ceil_secs(left).max(1);
                Err(match self.detectors.settings.invalid_key_burst.block_status {
                    BlockStatus::TooManyRequests => ApiError::RateLimited { retry_after },
                    BlockStatus::Forbidden => ApiError::IpBlocked { retry_after },
                })
            }
        }
    }

    /// A request that did not authenticate. `key_id` is the table's id of the presented key
    /// when it exists (revoked or expired), never anything the client wrote.
    pub fn authn_failed(&self, e: &AuthnError, key_id: Option<&Arc<str>>, ip: IpAddr, now: Now, rid: &str) {
        if !self.on() {
            return;
        }
        let subject = || key_id.map_or(Subject::Ip(ip), |id| Subject::Key(Arc::clone(id)));
        let found = match e {
            AuthnError::Missing => None,
            AuthnError::Multiple
            | AuthnError::Malformed(_)
            | AuthnError::BadFormat
            | AuthnError::Unknown
            | AuthnError::TokenInvalid
            | AuthnError::TokenClinicsRevoked => {
                let a = self.detectors.ips.invalid_key(ip, now.mono);
                self.metrics.blocked_ips(self.detectors.ips.blocked_count());
                a
            }
            AuthnError::NotYetValid | AuthnError::TokenExpired => None,
            AuthnError::Revoked => {
                Some(Anomaly { kind: Kind::RevokedKeyUse, subject: subject(), detail: format!("from {ip}") })
            }
            AuthnError::Expired => {
                Some(Anomaly { kind: Kind::ExpiredKeyUse, subject: subject(), detail: format!("from {ip}") })
            }
            AuthnError::WrongEnvironment { key, proxy } => Some(Anomaly {
                kind: Kind::EnvironmentMismatch,
                subject: Subject::Ip(ip),
                detail: format!("a {key} key presented to a {proxy} proxy"),
            }),
        };
        if let Some(a) = found {
            self.report(a, now, rid);
        }
    }

    /// An authenticated request: networks, rate baseline, rotation grace. `rotated_out`: the
    /// store says the key has a successor (asked only when the detectors are on).
    pub fn authenticated(&self, key: &KeyRecord, rotated_out: impl FnOnce() -> bool, ip: IpAddr, now: Now, rid: &str) {
        if !self.on() {
            return;
        }
        for a in self.detectors.keys.seen(&key.id, ip, now).into_iter().flatten() {
            self.report(a, now, rid);
        }
        // Few keys are ever in rotation: that is checked (an empty set, usually) before any time.
        if rotated_out() {
            if let Some(end) = key.times().expires_at {
                if let Some(a) = self.detectors.keys.rotated_in_use(&key.id, end.unix_timestamp(), now) {
                    self.report(a, now, rid);
                }
            }
        }
    }

    /// The key was refused by policy (scope, clinic, route).
    pub fn refused(&self, key_id: &Arc<str>, denied: &Denied, now: Now, rid: &str) {
        if !self.on() {
            return;
        }
        let probing = match denied {
            Denied::InsufficientScope { .. }
            | Denied::ClinicNotAllowed
            | Denied::RouteNotFound
            | Denied::MethodNotAllowed { .. } => true,
            Denied::IpNotAllowed => false,
        };
        if probing {
            if let Some(a) = self.detectors.keys.refused(key_id, now) {
                self.report(a, now, rid);
            }
        }
    }

    fn report(&self, a: Anomaly, now: Now, rid: &str) {
        if !self.detectors.gate.pass(&a, now.mono) {
            return;
        }
        self.metrics.anomaly(a.kind.as_str());
        let (key_id, client_ip) = match &a.subject {
            Subject::Key(id) => (&**id, String::new()),
            Subject::Ip(ip) => ("", ip.to_string()),
        };
        tracing::warn!(
            target: "keygate::audit",
            event = "anomaly",
            kind = a.kind.as_str(),
            key_id,
            client_ip,
            detail = a.detail.as_str(),
            request_id = rid,
            "anomaly"
        );
        if let Some(n) = &self.notify {
            n.notify(&a);
        }
    }

    pub fn sweep(&self, now: Now) {
        self.detectors.sweep(now);
        self.metrics.blocked_ips(self.detectors.ips.blocked_count());
    }
}
