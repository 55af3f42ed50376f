//! keygate's integration tests: one binary, real sockets, a real recording upstream.

mod support;

mod authz;
mod hygiene;
mod lifecycle;
mod tls;
