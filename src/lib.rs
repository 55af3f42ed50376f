//! keygate: a sidecar authorization proxy. A request flows from `server` through the named
//! steps of `proxy` (admit → authenticate → limit → authorize → upstream → finish); the
//! decisions are the pure modules (`path`, `sanitize`, `framing`, `authn`, `policy`,
//! `ratelimit`, `anomaly`, `jwt`), and `error` is the one place a refusal becomes a body.

pub mod admin;
pub mod alert;
pub mod alloc;
pub mod anomaly;
pub mod app;
pub mod auditlog;
pub mod authn;
pub mod authz;
pub mod background;
pub mod check_config;
pub mod cli;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod demo;
pub mod demo_front;
pub mod error;
pub mod forward;
pub mod framing;
pub mod head_check;
pub mod jwt;
pub mod k8s;
pub mod keys;
pub mod keys_cli;
pub mod logbuf;
pub mod metrics;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod ratelimit;
pub mod readiness;
pub mod request_id;
pub mod sanitize;
pub mod server;
pub mod signals;
pub mod store;
pub mod textfmt;
pub mod tls;
pub mod usage;
