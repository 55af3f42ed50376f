//! The last step, for every request however it ended: the request id and RateLimit headers on
//! the answer, the error turned into the standard body, metrics, usage and the audit line.
//! `Trail` is what the earlier steps learnt for it, filled in as they go; a request dropped
//! before it got here (its client gone, or cut by the drain deadline) is recorded by the
//! trail's Drop, once, if it had authenticated or was being forwarded: the upstream may have
//! acted on it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{Either, Full};
use time::OffsetDateTime;

use super::check::Shape;
use super::limit::Applied;
use super::{Body, Proxy};
use crate::anomaly::Now;
use crate::error::ApiError;
use crate::metrics::{RequestDone, NO_ROUTE};
use crate::policy::Enforcement;
use crate::request_id;
use crate::textfmt::IpText;

/// What the audit line and the metrics need to know about a request.
pub(super) struct Trail<'a> {
    proxy: &'a Proxy,
    /// On the real clock, for the request's duration.
    started: Instant,
    /// The request's one monotonic reading on the proxy's clock (`started` on the system clock).
    pub instant: Instant,
    pub rid: HeaderValue,
    pub method: Method,
    /// One clock reading per request: validity and usage see the same instant.
    pub now: OffsetDateTime,
    /// The same instant for windows and budgets.
    pub clock: Now,
    /// The key's rate-limit decision, for the response headers.
    pub limit: Option<Applied<'a>>,
    /// The key's credits and quotas after this request, for the response headers.
    pub credits: Option<crate::ratelimit::credits::Outcome>,
    pub route: &'a str,
    pub key_id: Option<Arc<str>>,
    pub client_ip: IpAddr,
    pub client_text: IpText,
    pub upstream_seconds: Option<f64>,
    pub outcome: &'static str,
    /// How the request authenticated: "key", "token" (a JWT standing for its parent key), or "".
    pub auth: &'static str,
    /// Which deployment shape answered (`Shape::as_str`, or `NO_SHAPE`): inline until a check
    /// says otherwise.
    pub shape: &'static str,
    /// Sent to the upstream (or on its way): a drop from here on is recorded, key or not.
    pub forwarding: bool,
    /// The listener's drain-deadline flag: why a dropped request ended.
    pub cut: Option<&'a AtomicBool>,
    /// The listener's enforcement (`enforce`, or `authz.enforce` for a check).
    pub listener: Enforcement,
    /// Whether this request's policy refusals are enforced or reported (the route's setting,
    /// else the listener's), settled when its route is looked up.
    pub enforcement: Enforcement,
    /// The first refusal report-only mode passed over: what an enforcing keygate would have
    /// answered.
    pub would_refuse: Option<&'static str>,
    /// The route has a clinic rule: a would-be refusal is always told to the upstream.
    pub clinic_rule: bool,
    /// Recorded already (by `record`): the drop records nothing.
    recorded: AtomicBool,
}

impl<'a> Trail<'a> {
    /// `client`: the address the request is judged for, until admit resolves a better one.
    pub fn start(p: &'a Proxy, headers: &HeaderMap, method: &Method, client: (IpAddr, IpText)) -> Trail<'a> {
        let started = Instant::now();
        let (instant, now) = p.clock.read_at(started);
        let rid = request_id::accept_or_generate(headers, p.config.limits.request_id_max_length, now);
        let mono = u64::try_from(instant.saturating_duration_since(p.epoch).as_nanos()).unwrap_or(u64::MAX);
        Trail {
            proxy: p,
            started,
            instant,
            rid,
            method: method.clone(),
            now,
            clock: Now { mono, unix: now.unix_timestamp() },
            limit: None,
            credits: None,
            route: NO_ROUTE,
            key_id: None,
            client_ip: client.0,
            client_text: client.1,
            upstream_seconds: None,
            outcome: "OK",
            auth: "",
            shape: Shape::Inline.as_str(),
            forwarding: false,
            cut: None,
            listener: p.config.enforce,
            enforcement: p.config.enforce,
            would_refuse: None,
            clinic_rule: false,
            recorded: AtomicBool::new(false),
        }
    }

    pub fn rid(&self) -> &str {
        self.rid.to_str().unwrap_or("")
    }

    /// A step's result under this request's enforcement: its refusal stands (`Err`), or, in
    /// report-only mode and when the refusal is the policy's, is noted and passed over
    /// (`Ok(None)`): the one place a refusal turns into forwarding.
    pub fn excuse<T>(&mut self, result: Result<T, ApiError>) -> Result<Option<T>, ApiError> {
        match result {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.enforcement.reports() && e.reportable() => {
                self.would_refuse.get_or_insert(e.code());
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether the upstream is told of this request's would-be refusal.
    pub fn tell_upstream(&self) -> bool {
        crate::policy::tell_upstream(
            self.would_refuse.is_some(),
            self.proxy.config.would_refuse_header,
            self.clinic_rule,
        )
    }
}

pub(super) fn finish(p: &Proxy, result: Result<Response<Body>, ApiError>, mut trail: Trail<'_>) -> Response<Body> {
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => refusal(&e, &mut trail).map(|b| Either::Left(Full::new(b))),
    };
    answer_headers(p, &trail, resp.headers_mut());
    record(p, &trail, resp.status());
    resp
}

/// The standard body for a refusal; the trail learns its code.
pub(super) fn refusal(e: &ApiError, trail: &mut Trail<'_>) -> Response<Bytes> {
    trail.outcome = e.code();
    e.to_response(trail.rid(), &crate::error::timestamp(trail.now))
}

/// The request id and up to three RateLimit headers, on every answer.
pub(super) fn answer_headers(p: &Proxy, trail: &Trail<'_>, h: &mut HeaderMap) {
    h.reserve(4);
    h.insert(request_id::HEADER.clone(), trail.rid.clone());
    if let Some(applied) = &trail.limit {
        p.limiter.headers(h, applied);
    }
    if let Some(o) = &trail.credits {
        super::credits::headers(h, o);
    }
}

/// A request that ended without an answer: its client went away (`CLIENT_CLOSED`, counted as
/// nginx's 499) or the drain deadline cut it (`DRAIN_CUT`, 503). Nothing was sent.
impl Drop for Trail<'_> {
    fn drop(&mut self) {
        if self.recorded.load(Ordering::Relaxed) || (self.key_id.is_none() && !self.forwarding) {
            return;
        }
        let cut = self.cut.is_some_and(|c| c.load(Ordering::Acquire));
        let (code, status) = match cut {
            true => ("DRAIN_CUT", StatusCode::SERVICE_UNAVAILABLE),
            false => ("CLIENT_CLOSED", StatusCode::from_u16(499).expect("499 is a status code")),
        };
        self.outcome = code;
        record(self.proxy, self, status);
    }
}

/// Metrics, usage and the audit line for one finished request.
pub(super) fn record(p: &Proxy, t: &Trail<'_>, status: StatusCode) {
    t.recorded.store(true, Ordering::Relaxed);
    let elapsed = t.started.elapsed().as_secs_f64();
    let done = RequestDone {
        code: t.outcome,
        route: t.route,
        shape: t.shape,
        status: status.as_u16(),
        method: &t.method,
        seconds: elapsed,
    };
    p.metrics.request(&done);
    if let Some(code) = t.would_refuse {
        p.metrics.would_refuse(code, t.route);
    }
    if let Some(id) = &t.key_id {
        let now_ms = i64::try_from(t.now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        p.usage.record(id, status.as_u16(), now_ms);
    }
    crate::auditlog::decision(&crate::auditlog::Decision {
        request_id: t.rid(),
        key_id: t.key_id.as_deref().unwrap_or(""),
        client_ip: t.client_text.as_str(),
        method: t.method.as_str(),
        route: t.route,
        status: status.as_u16(),
        code: t.outcome,
        auth: t.auth,
        shape: t.shape,
        duration_ms: elapsed * 1000.0,
        upstream_ms: t.upstream_seconds.map(|s| s * 1000.0),
        would_refuse: t.would_refuse,
    });
}
