//! keygate: a sidecar authorization proxy. The request flows top to bottom through
//! `server` → `pipeline` (request id → sanitise → path → authn → policy → forward) → `error`.

pub mod admin;
pub mod alert;
pub mod alloc;
pub mod anomaly;
pub mod app;
pub mod auditlog;
pub mod authn;
pub mod background;
pub mod cli;
pub mod client_ip;
pub mod config;
pub mod demo;
pub mod error;
pub mod forward;
pub mod jwt;
pub mod key_source;
pub mod keys;
pub mod keys_cli;
pub mod limit;
pub mod logbuf;
pub mod metrics;
pub mod path;
pub mod pgstore;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod request_id;
pub mod sanitize;
pub mod server;
pub mod signals;
pub mod textfmt;
pub mod tls;
pub mod tokens;
pub mod usage;
pub mod watch;
