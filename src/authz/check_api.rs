//! The engine's entry point as the authz shapes see it: `proxy::check` answers a front proxy's
//! question with every decision, metric and audit line of an inline request.

pub use crate::proxy::check::{CheckOutcome, CheckRequest, Shape};
