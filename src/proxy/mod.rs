//! The request path, as named steps in the order they run (Pingora's phase chart, as code).
//!
//! ```text
//!  admit ─► route, blocked? ─► public route? ─► JWKS? ─► authenticate ─► limit ─► token exchange? ─► authorize ─► upstream
//!    │          │                  │ yes          │ yes        │             │           │ yes             │            │
//!    │          │                  └─► upstream   └─► answer   │             │           └─► answer        ├─ empty     │
//!    ▼          ▼                      (no key)                ▼             ▼                             ▼  result    ▼
//!  ──────────────────────────────────────────── finish: headers, metrics, usage, audit line ─────────────────────────────────
//! ```
//!
//! Every early exit is an `ApiError` (or a finished answer) that goes to the one finishing step,
//! so each request is counted and logged once. In report-only mode (`enforce: false`, the
//! route's or the listener's, settled with the route) a policy refusal from `blocked?` to
//! `authorize` does not exit: `Trail::excuse` notes it and the request goes on to `upstream`;
//! admit's hygiene and keygate's own endpoints are enforced in every mode. The same steps,
//! without `upstream`, answer a front proxy's check (`check`). The decisions themselves are pure modules (`path`,
//! `sanitize`, `authn`, `policy`, `ratelimit`, `anomaly`); the steps turn them into answers.

mod admit;
pub mod anomalies;
mod authenticate;
mod authorize;
pub mod check;
mod credits;
mod finish;
pub mod forwarded;
pub mod limit;
pub mod live;
mod token_endpoints;
pub mod tokens;
mod upstream;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::anomaly::Now;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::forward::{Forwarder, UpstreamResponseBody};
use crate::metrics::Metrics;
use crate::store::source::KeySource;
use crate::textfmt::IpText;
use crate::usage::UsageBook;

pub use live::Live;

use anomalies::Anomalies;
use finish::Trail;
use limit::Limiter;
use tokens::Tokens;

pub type Body = Either<Full<Bytes>, UpstreamResponseBody>;

/// What the listener knows about the connection; the proxy knows nothing else of sockets.
#[derive(Debug, Clone)]
pub struct ConnFacts {
    pub peer: SocketAddr,
    /// The peer's address as text, formatted once per connection (for the audit line).
    pub peer_text: IpText,
    /// This hop in the forwarding headers, prepared once per connection.
    pub hop: forwarded::Hop,
    /// Set by the listener when its drain deadline cut the connection: a request dropped
    /// then was cut by keygate, not abandoned by its client.
    pub cut: Option<Arc<AtomicBool>>,
}

impl ConnFacts {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnFacts {
        // An IPv4 client on a dual-stack listener arrives as ::ffff:a.b.c.d: every decision,
        // budget, metric and audit line sees the IPv4 address.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let peer_text = IpText::new(peer.ip());
        ConnFacts { peer, peer_text, hop: forwarded::Hop::new(peer.ip(), peer_text, tls), cut: None }
    }

    /// The listener's drain-deadline flag.
    pub fn cut_by(mut self, flag: Arc<AtomicBool>) -> ConnFacts {
        self.cut = Some(flag);
        self
    }
}

/// Everything a request needs, built by `app` at start and again by each config reload; a
/// request runs on one (see `Live`).
pub struct Proxy {
    pub config: Arc<Config>,
    pub keys: KeySource,
    pub forwarder: Forwarder,
    pub metrics: Arc<Metrics>,
    pub usage: Arc<UsageBook>,
    pub limiter: Limiter,
    pub anomalies: Anomalies,
    /// The time every decision is made by (the system's, or a test's manual clock).
    pub clock: Clock,
    /// Zero of the monotonic clock the limiter and the detectors count in (a `clock` reading).
    pub epoch: Instant,
    /// JWT issuing and validation, when configured.
    pub tokens: Option<Arc<Tokens>>,
    /// For a store that can fall behind (PostgreSQL): whether the table may be trusted now.
    pub freshness: Option<Arc<crate::store::freshness::Freshness>>,
}

impl Proxy {
    /// Housekeeping for the limiter and the detectors.
    pub fn sweep(&self) {
        let now = self.clock.wall();
        let mono = u64::try_from(self.clock.now().saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        self.limiter.sweep(mono);
        self.forwarder.sweep();
        self.anomalies.sweep(Now { mono, unix: now.unix_timestamp() });
        if let Some(t) = &self.tokens {
            t.sweep(now.unix_timestamp());
        }
    }

    /// One proxied request, whatever happens to it, ends in `finish`; dropped before that (its
    /// client gone, or cut by the drain deadline), its trail records it (`Trail`'s Drop).
    pub async fn handle(&self, req: Request<Incoming>, conn: Arc<ConnFacts>) -> Response<Body> {
        let _in_flight = self.metrics.in_flight();
        let mut trail = Trail::start(self, req.headers(), req.method(), (conn.peer.ip(), conn.peer_text));
        trail.cut = conn.cut.as_deref();
        let result = self.run(req, &conn, &mut trail).await;
        finish::finish(self, result, trail)
    }

    /// The steps in order; `?` is an early exit to `finish`. In report-only mode a policy
    /// refusal is noted by `trail.excuse` and the request goes on without what the step would
    /// have given it (no key after a failed authentication, so no identity headers).
    async fn run<'s>(
        &'s self,
        req: Request<Incoming>,
        conn: &ConnFacts,
        trail: &mut Trail<'s>,
    ) -> Result<Response<Body>, ApiError> {
        let (mut parts, body) = req.into_parts();
        let peer_trusted = admit::peer(self, &parts.headers, conn, trail);
        let admitted =
            admit::admit(self, &parts.uri, &parts.method, &mut parts.headers, &parts.extensions, peer_trusted)?;
        let route = authorize::route_for(self, &admitted, trail);
        let public = self.config.routes.public_route(&admitted.method, &admitted.path);
        let exchange = token_endpoints::exchange_route(self, &admitted);
        authorize::special_routes(public, exchange.is_some(), trail);
        let blocked = self.anomalies.blocked(trail.client_ip, trail.clock);
        trail.excuse(blocked)?;

        if public.is_some() {
            trail.outcome = "PUBLIC";
            let (uri, body_len) = (upstream::uri(&admitted.path, parts.uri.query())?, admitted.body_len);
            // Boxed (here and below): inline, its large state would be copied each time the request's
            // future moves (into hyper's slot, between steps); one allocation costs less.
            return Box::pin(upstream::forward(self, parts, (body, body_len), uri, None, conn, trail)).await;
        }
        if let Some(resp) = token_endpoints::jwks(self, &admitted, trail) {
            return Ok(resp);
        }

        let view = authenticate::view(self, trail)?;
        let who = authenticate::authenticate(self, view.as_ref(), &parts.headers, trail).await?;
        let key = who.as_ref().map(authenticate::Authenticated::key);
        limit::charge_excused(self, key, trail).await?;

        // Enforced (`special_routes`): a key reached it.
        if let (Some(endpoint), Some(who)) = (exchange, &who) {
            return token_endpoints::exchange(endpoint, who, &admitted, body, trail).await;
        }

        let query = parts.uri.query();
        let cost = route.cost();
        match authorize::authorize(self, key, &admitted, route, query, trail)? {
            Some(authorize::Verdict::EmptyResult(resp)) => Ok(resp.map(|b| Either::Left(Full::new(b)))),
            Some(authorize::Verdict::Forward) | None => {
                credits::spend_excused(self, key, cost, trail).await?;
                let (uri, body_len) = (upstream::uri(&admitted.path, query)?, admitted.body_len);
                Box::pin(upstream::forward(self, parts, (body, body_len), uri, key, conn, trail)).await
            }
        }
    }
}
