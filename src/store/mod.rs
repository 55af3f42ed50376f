//! The I/O side of keys and limits: where state outside the process is read, written and
//! watched. The file store's reloader and its locked writer, how fresh a store's view is, the
//! one `KeySource` the request path reads keys from, and the Redis-backed shared limiter (and the
//! PostgreSQL store, `pgstore`). The decisions over what these hold stay pure in `keys` and
//! `ratelimit`.

pub mod file;
pub mod freshness;
pub mod pgstore;
pub mod redis_limits;
pub mod reload;
pub mod source;
pub mod table_file;
pub mod writer;
