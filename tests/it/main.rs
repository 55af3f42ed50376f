//! keygate's integration tests: one binary, real sockets, a real recording upstream.

mod support;

mod alerts;
mod anomaly;
mod architecture;
mod authz;
mod authz_caddy;
mod authz_deploy;
mod authz_front;
mod authz_grpc;
mod authz_nginx;
mod check;
mod check_config;
mod config_reload;
mod demo;
mod fleet_limit;
mod fuzz;
mod hostile;
mod hygiene;
mod inject;
mod keys_cli;
mod lifecycle;
mod pg_cache;
mod pg_store;
mod ratelimit;
mod redis_limit;
mod relay;
mod secret_files;
mod table_scopes;
mod tls;
mod tokens;
mod upstream_pool;
mod webhook;
