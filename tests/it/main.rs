//! keygate's integration tests: one binary, real sockets, a real recording upstream.

mod support;

mod alerts;
mod anomaly;
mod authz;
mod fleet_limit;
mod hygiene;
mod inject;
mod keys_cli;
mod lifecycle;
mod pg_cache;
mod pg_store;
mod ratelimit;
mod redis_limit;
mod relay;
mod tls;
mod tokens;
mod upstream_pool;
mod webhook;
