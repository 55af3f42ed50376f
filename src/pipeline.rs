//! One request, top to bottom: request id → sanitise → normalise path → blocked address? →
//! public route? → authenticate → limit → authorise → forward → respond. The key's budget is
//! charged before authorisation, so a key probing routes it may not use spends budget too. The decisions are made by pure modules; this
//! is the one place that turns them into a response, writes the audit line and counts metrics.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use time::OffsetDateTime;

use crate::anomaly::Now;
use crate::authn::AuthnError;
use crate::config::Config;
use crate::error::ApiError;
use crate::forward::{upstream_body, ForwardError, Forwarder, UpstreamResponseBody};
use crate::key_source::{Found, KeySource};
use crate::keys::KeyRecord;
use crate::limit::{self, Applied, Limiter};
use crate::metrics::{Metrics, NO_ROUTE};
use crate::policy::{self, Decision, RequestFacts};
use crate::textfmt::IpText;
use crate::tokens::Tokens;
use crate::usage::UsageBook;
use crate::watch::Watch;
use crate::{authn, client_ip, forwarded, framing, path, request_id, sanitize};

pub type Body = Either<Full<Bytes>, UpstreamResponseBody>;

/// What the listener knows about the connection; the pipeline knows nothing else of sockets.
#[derive(Debug, Clone)]
pub struct ConnFacts {
    pub peer: SocketAddr,
    /// The peer's address as text, formatted once per connection (for the audit line).
    pub peer_text: IpText,
    /// This hop in the forwarding headers, prepared once per connection.
    pub hop: forwarded::Hop,
}

impl ConnFacts {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnFacts {
        // An IPv4 client on a dual-stack listener arrives as ::ffff:a.b.c.d: every decision,
        // budget, metric and audit line sees the IPv4 address.
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let peer_text = IpText::new(peer.ip());
        ConnFacts { peer, peer_text, hop: forwarded::Hop::new(peer.ip(), peer_text, tls) }
    }
}

pub struct Pipeline {
    pub config: Arc<Config>,
    pub keys: KeySource,
    pub forwarder: Forwarder,
    pub metrics: Arc<Metrics>,
    pub usage: Arc<UsageBook>,
    pub limiter: Limiter,
    pub watch: Watch,
    /// Zero of the monotonic clock the limiter and the detectors count in.
    pub epoch: Instant,
    /// JWT issuing and validation, when configured.
    pub tokens: Option<Arc<Tokens>>,
    /// For a store that can fall behind (PostgreSQL): whether the table may be trusted now.
    pub freshness: Option<Arc<crate::keys::freshness::Freshness>>,
}

static X_ALLOWED_CLINICS: HeaderName = HeaderName::from_static("x-allowed-clinics");
static X_SCOPES: HeaderName = HeaderName::from_static("x-scopes");
static X_API_KEY_ID: HeaderName = HeaderName::from_static("x-api-key-id");
static X_API_KEY_ENV: HeaderName = HeaderName::from_static("x-api-key-environment");
static X_KEYGATE_SIGNATURE: HeaderName = HeaderName::from_static("x-keygate-signature");
static X_KEYGATE_CONTEXT: HeaderName = HeaderName::from_static("x-keygate-context");

/// What the audit line and the metrics need to know about a request, filled in as it goes.
struct Trail<'a> {
    /// One clock reading per request: validity and usage see the same instant.
    now: OffsetDateTime,
    /// The same instant for windows and budgets.
    clock: Now,
    /// The key's rate-limit decision, for the response headers.
    limit: Option<Applied<'a>>,
    route: &'a str,
    key_id: Option<Arc<str>>,
    client_ip: IpAddr,
    client_text: IpText,
    upstream_seconds: Option<f64>,
    outcome: &'static str,
    /// How the request authenticated: "key", "token" (a JWT standing for its parent key), or "".
    auth: &'static str,
}

impl Pipeline {
    /// Housekeeping for the limiter and the detectors.
    pub fn sweep(&self) {
        let now = OffsetDateTime::now_utc();
        let mono = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.limiter.sweep(mono);
        self.forwarder.sweep();
        self.watch.sweep(Now { mono, unix: now.unix_timestamp() });
        if let Some(t) = &self.tokens {
            t.sweep(now.unix_timestamp());
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: Arc<ConnFacts>) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = self.metrics.in_flight();
        let now = OffsetDateTime::now_utc();
        let rid = request_id::accept_or_generate(req.headers(), self.config.limits.request_id_max_length, now);
        let method = req.method().clone();
        let mono = u64::try_from(started.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut trail = Trail {
            now,
            clock: Now { mono, unix: now.unix_timestamp() },
            limit: None,
            route: NO_ROUTE,
            key_id: None,
            client_ip: conn.peer.ip(),
            client_text: conn.peer_text,
            upstream_seconds: None,
            outcome: "OK",
            auth: "",
        };
        let result = self.run(req, &conn, &rid, &mut trail).await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                trail.outcome = e.code();
                let now = timestamp();
                let rid_str = rid.to_str().unwrap_or("");
                e.to_response(rid_str, &now).map(|b| Either::Left(Full::new(b)))
            }
        };
        // The request id and up to three RateLimit headers.
        resp.headers_mut().reserve(4);
        resp.headers_mut().insert(request_id::HEADER.clone(), rid.clone());
        if let Some(applied) = &trail.limit {
            self.limiter.headers(resp.headers_mut(), applied);
        }
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.request(trail.outcome, trail.route, elapsed);
        if let Some(id) = &trail.key_id {
            let now_ms = i64::try_from(trail.now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            self.usage.record(id, resp.status().as_u16(), now_ms);
        }
        audit(&trail, &rid, &method, resp.status(), elapsed);
        resp
    }

    async fn run<'s>(
        &'s self,
        req: Request<Incoming>,
        conn: &ConnFacts,
        rid: &HeaderValue,
        trail: &mut Trail<'s>,
    ) -> Result<Response<Body>, ApiError> {
        let cfg = &*self.config;
        let (mut parts, body) = req.into_parts();
        if let Some(why) = parts.extensions.get::<crate::head_check::HeadFacts>().and_then(|f| f.refusal()) {
            return Err(ApiError::BadFraming(why));
        }
        // The parser lets heads through up to twice keygate's limits so that these refusals
        // carry the standard body (see server::builder).
        let target_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
        if parts.headers.len() > cfg.limits.max_headers
            || framing::head_size(target_len, &parts.headers) > cfg.limits.max_header_bytes
        {
            return Err(ApiError::HeadersTooLarge);
        }
        let body_len = framing::body_length(&parts.headers).map_err(|e| ApiError::BadFraming(e.reason()))?;
        if body_len.is_some_and(|len| len > cfg.limits.max_body_bytes) {
            return Err(ApiError::PayloadTooLarge { limit: cfg.limits.max_body_bytes });
        }
        let peer_trusted = client_ip::is_trusted(conn.peer.ip(), &cfg.trusted_proxies);
        trail.client_ip = client_ip::resolve(&parts.headers, conn.peer.ip(), &cfg.trusted_proxies);
        if trail.client_ip != conn.peer.ip() {
            trail.client_text = IpText::new(trail.client_ip);
        }
        let sanitized = sanitize::sanitize(&mut parts.headers, &cfg.headers, peer_trusted)
            .map_err(|why| ApiError::InvalidRequest(why.into()))?;
        let path = path::normalize(parts.uri.path()).map_err(|e| ApiError::InvalidRequest(e.reason().into()))?;
        let method = sanitized.method_override.as_ref().unwrap_or(&parts.method);
        let rid_str = rid.to_str().unwrap_or("");
        self.watch.blocked(trail.client_ip, trail.clock)?;

        if let Some(public) = cfg.routes.public_route(method, &path) {
            trail.route = &public.pattern;
            trail.outcome = "PUBLIC";
            let uri = self.upstream_uri(&path, parts.uri.query())?;
            return self.forward(parts, (body, body_len), uri, None, conn, rid, trail).await;
        }

        if let Some(tokens) = &self.tokens {
            if (method == Method::GET || method == Method::HEAD) && path == tokens.settings.jwks_path {
                trail.route = &tokens.settings.jwks_path;
                trail.outcome = "PUBLIC";
                return Ok(tokens.jwks().map(|b| Either::Left(Full::new(b))));
            }
        }

        if let Some(f) = &self.freshness {
            if !f.may_serve(Instant::now()) {
                return Err(ApiError::KeyStoreUnavailable);
            }
        }
        // One view for the whole request: a table snapshot (a swap during it affects the next
        // request), or the cache.
        let view = self.keys.view();
        let token = authn::bearer_token(&parts.headers);
        let jwt = match (&self.tokens, token) {
            (Some(tokens), Ok(t)) if crate::jwt::token::looks_like_jwt(t.expose()) => Some((tokens, t)),
            _ => None,
        };
        let (derived, parent, found);
        let (key, holder): (&KeyRecord, Option<&Found>) = match jwt {
            Some((tokens, t)) => {
                let claims = match tokens.claims(t.expose(), trail.now) {
                    Ok(c) => c,
                    Err(r) => return Err(self.refuse(r.as_authn, r.parent, r.error, trail, rid_str)),
                };
                parent = view.by_id(&claims.sub).await.map_err(store_down)?;
                match tokens.act_as(&claims, parent.as_ref().map(Found::record), cfg.environment, trail.now) {
                    Ok(k) => {
                        derived = k;
                        (&derived, parent.as_ref())
                    }
                    Err(r) => return Err(self.refuse(r.as_authn, r.parent, r.error, trail, rid_str)),
                }
            }
            None => {
                // Format, checksum and environment first: nothing is looked up for a token that
                // fails them.
                let hash = token.and_then(|t| authn::key_hash(t, &cfg.keys.format, cfg.environment));
                found = match hash {
                    Ok(h) => view.by_hash(&h).await.map_err(store_down)?,
                    Err(_) => None,
                };
                let record = found.as_ref();
                match hash.and_then(|_| authn::judge(record.map(Found::record), cfg.environment, trail.now)) {
                    Ok(key) => (key, record),
                    Err(e) => {
                        // The store's id of a revoked or expired key, for the anomaly report.
                        let known = authn::refused_id(&e, || record.map(Found::record));
                        return Err(self.refuse(e, known, e.into(), trail, rid_str));
                    }
                }
            }
        };
        trail.key_id = Some(Arc::clone(&key.id));
        trail.auth = if jwt.is_some() { "token" } else { "key" };
        self.watch.authenticated(key, || holder.is_some_and(Found::rotated_out), trail.client_ip, trail.clock, rid_str);
        if let Some(applied) = self.limiter.key(key, trail.clock.mono).await? {
            trail.limit = Some(applied);
            if !applied.verdict.allowed {
                // Charged before routing; the route is looked up for the label only when refused.
                if let Some(route) = cfg.routes.route_of(method, &path) {
                    trail.route = &route.spec.pattern;
                }
                return Err(limit::refusal(&applied));
            }
        }

        if let Some((tokens, issue)) = self.tokens.as_ref().and_then(|t| Some((t, t.settings.issue.as_ref()?))) {
            if path == issue.path {
                trail.route = &issue.path;
                if jwt.is_some() {
                    return Err(ApiError::InvalidRequest("a token cannot be exchanged; present the API key".into()));
                }
                if *method != Method::POST {
                    return Err(ApiError::MethodNotAllowed { allow: "POST".into() });
                }
                let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, issue.max_body_bytes))
                    .await
                    .map_err(|_| ApiError::PayloadTooLarge { limit: issue.max_body_bytes as u64 })?
                    .to_bytes();
                let resp = tokens.exchange(key, &body, trail.now)?;
                trail.outcome = "TOKEN_ISSUED";
                return Ok(resp.map(|b| Either::Left(Full::new(b))));
            }
        }

        let facts = RequestFacts { method, path: &path, query: parts.uri.query(), client_ip: trail.client_ip };
        let grant = policy::authorise(&cfg.routes, key, &facts).map_err(|r| {
            if let Some(route) = r.route {
                trail.route = &route.spec.pattern;
            }
            let e = ApiError::from(r.denied);
            self.watch.refused(&key.id, &e, trail.clock, rid_str);
            e
        })?;
        trail.route = &grant.route.spec.pattern;
        match grant.decision {
            Decision::EmptyResult => {
                trail.outcome = "EMPTY_RESULT";
                let mut resp = Response::new(Either::Left(Full::new(grant.route.spec.empty_body.clone())));
                resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                Ok(resp)
            }
            Decision::Forward => {
                let uri = self.upstream_uri(&path, parts.uri.query())?;
                self.forward(parts, (body, body_len), uri, Some(key), conn, rid, trail).await
            }
        }
    }

    /// A request that did not authenticate: the detectors hear of it, the address's budget pays
    /// for it, and `error` is the answer (or the 429 the address earned).
    fn refuse(
        &self,
        why: AuthnError,
        key_id: Option<Arc<str>>,
        error: ApiError,
        trail: &mut Trail<'_>,
        rid: &str,
    ) -> ApiError {
        self.watch.authn_failed(&why, key_id.as_ref(), trail.client_ip, trail.clock, rid);
        trail.key_id = key_id;
        match self.limiter.unauthenticated(trail.client_ip, trail.clock.mono) {
            Ok(()) => error,
            Err(limited) => limited,
        }
    }

    /// The authorised path, byte for byte, in origin form (the forwarder connects to the
    /// upstream's scheme and authority).
    fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, ApiError> {
        let mut pq = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .path_and_query(pq)
            .build()
            .map_err(|_| ApiError::InvalidRequest("request target cannot be forwarded".into()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        mut parts: http::request::Parts,
        (body, body_len): (Incoming, Option<u64>),
        uri: Uri,
        key: Option<&KeyRecord>,
        conn: &ConnFacts,
        rid: &HeaderValue,
        trail: &mut Trail<'_>,
    ) -> Result<Response<Body>, ApiError> {
        let cfg = &*self.config;
        let original_authority = parts.uri.authority().cloned();
        let h = &mut parts.headers;
        // Room for what is added below (request id, four key headers, three forwarding ones):
        // one resize instead of a rehash per doubling.
        h.reserve(8);
        if !cfg.forward_authorization {
            h.remove(header::AUTHORIZATION);
        }
        if !h.contains_key(header::HOST) {
            if let Some(a) = &original_authority {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    h.insert(header::HOST, v);
                }
            }
        }
        h.insert(request_id::HEADER.clone(), rid.clone());
        // keygate's rendering of the length it parsed, never the client's text ("007").
        if let Some(len) = body_len {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
        if let Some(k) = key {
            let clinics = match &k.clinics {
                Some(list) => HeaderValue::from_str(list).expect("clinic ids are validated at load"),
                None => HeaderValue::from_static("*"),
            };
            h.insert(X_ALLOWED_CLINICS.clone(), clinics);
            h.insert(X_SCOPES.clone(), k.profile.headers.scopes.clone());
            h.insert(X_API_KEY_ID.clone(), HeaderValue::from_str(&k.id).expect("key ids are validated at load"));
            h.insert(X_API_KEY_ENV.clone(), k.profile.headers.environment.clone());
        }
        forwarded::apply(h, &conn.hop);
        if let Some(signing) = &cfg.upstream_context {
            self.sign_context(signing, &mut parts.headers, &parts.method, &uri, rid, trail.now);
        }
        parts.uri = uri;
        // The upstream speaks HTTP/1.1 whatever the client spoke.
        parts.version = http::Version::HTTP_11;
        let req = Request::from_parts(parts, upstream_body(body, cfg.limits.max_body_bytes));

        let sent = Instant::now();
        let result = self.forwarder.send(req).await;
        let took = sent.elapsed().as_secs_f64();
        match result {
            Ok(mut resp) => {
                trail.upstream_seconds = Some(took);
                self.metrics.upstream_answered(trail.route, took);
                crate::sanitize::sanitize_response(resp.headers_mut());
                Ok(resp.map(Either::Right))
            }
            Err(ForwardError::Timeout) => {
                self.metrics.upstream_error("timeout");
                Err(ApiError::UpstreamTimeout)
            }
            Err(ForwardError::BodyTooLarge) => Err(ApiError::PayloadTooLarge { limit: cfg.limits.max_body_bytes }),
            // The client's fault, not the upstream's: counted as the client's refusal only.
            Err(ForwardError::ClientBody) => {
                Err(ApiError::BadFraming("the request body ended early or its chunked framing is malformed"))
            }
            Err(ForwardError::Unavailable { kind }) => {
                self.metrics.upstream_error(kind);
                Err(ApiError::UpstreamUnavailable)
            }
        }
    }
}

impl Pipeline {
    /// The signed upstream context over exactly what is forwarded (see `jwt::context`).
    fn sign_context(
        &self,
        signing: &crate::config::ContextSigning,
        h: &mut http::HeaderMap,
        method: &Method,
        uri: &Uri,
        rid: &HeaderValue,
        now: OffsetDateTime,
    ) {
        use crate::jwt::context::{self, Facts};
        let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        let f = Facts {
            request_id: rid.to_str().unwrap_or(""),
            method: method.as_str(),
            path_and_query: uri.path_and_query().map_or("/", |pq| pq.as_str()),
            clinics: get(&X_ALLOWED_CLINICS),
            scopes: get(&X_SCOPES),
            key_id: get(&X_API_KEY_ID),
        };
        let t = now.unix_timestamp();
        let value = match signing {
            crate::config::ContextSigning::Hmac { key_id, secret } => {
                Some((X_KEYGATE_SIGNATURE.clone(), context::hmac_header(key_id, secret, t, &f)))
            }
            crate::config::ContextSigning::Jwt { ttl, audience } => self.tokens.as_ref().and_then(|tokens| {
                let claims = context::ContextClaims {
                    iss: &tokens.settings.issuer,
                    aud: audience,
                    iat: t,
                    exp: t + ttl.as_secs() as i64,
                    facts: &f,
                };
                context::sign_jwt(&tokens.key_set(), &claims).map(|jwt| (X_KEYGATE_CONTEXT.clone(), jwt))
            }),
        };
        if let Some((name, v)) = value {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(name, v);
            }
        }
    }
}

/// A cache miss the database could not answer: no key can be judged (the reason, which names
/// no key, is for the debug log; the pool's keeper logs the outage itself).
fn store_down(e: crate::pgstore::cache::StoreDown) -> ApiError {
    tracing::debug!(reason = %e.0, "key lookup failed");
    ApiError::KeyStoreUnavailable
}

/// RFC 3339 UTC with milliseconds, as in the reference error body.
pub fn timestamp() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    OffsetDateTime::now_utc().format(&fmt).unwrap_or_default()
}

fn audit(t: &Trail<'_>, rid: &HeaderValue, method: &Method, status: StatusCode, seconds: f64) {
    crate::auditlog::decision(&crate::auditlog::Decision {
        request_id: rid.to_str().unwrap_or(""),
        key_id: t.key_id.as_deref().unwrap_or(""),
        client_ip: t.client_text.as_str(),
        method: method.as_str(),
        route: t.route,
        status: status.as_u16(),
        code: t.outcome,
        auth: t.auth,
        duration_ms: seconds * 1000.0,
        upstream_ms: t.upstream_seconds.map(|s| s * 1000.0),
    });
}
