//! Rate limiting: GCRA (the generic cell rate algorithm) per key after authentication, and per
//! client IP for traffic that did not authenticate. GCRA has no window boundary to burst
//! across: a tier of `rate` per second with `burst` lets `burst` requests through at once and
//! then one every `1/rate`, whatever the wall clock says. The decision is a pure function over
//! one number per key (its theoretical arrival time, TAT); the stores only keep that number.

pub mod gcra;
pub mod local;
pub mod redis;

pub use self::redis::{RedisLimitError, RedisLimiter, RedisSettings};
pub use gcra::{decide, Quota, Verdict};
pub use local::LocalLimiter;
