//! The bounded label sets of the request series, and what one finished request is counted by.
//! A value outside a set is folded into its catch-all, so a client can never add a series.

use http::Method;

/// `method` on the latency histograms; anything else is `other`.
pub const METHODS: [&str; 8] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"];

/// `status_class`: the class of the status the client (or keygate, from the upstream) got.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The classes shown at 0 from the start (1xx is never a final answer keygate passes on).
pub(super) const ZEROED_CLASSES: [usize; 4] = [1, 2, 3, 4];

/// What one finished request is counted by (`keygate_requests_total`, the request latency).
#[derive(Debug, Clone, Copy)]
pub struct RequestDone<'a> {
    /// The decision: OK, PUBLIC, EMPTY_RESULT or the error code.
    pub code: &'static str,
    /// The route pattern, or `none`.
    pub route: &'a str,
    /// Which deployment shape answered: `inline` or a check protocol (a fixed few).
    pub shape: &'static str,
    /// The HTTP status the client got.
    pub status: u16,
    pub method: &'a Method,
    pub seconds: f64,
}

/// The index of `m` in `METHODS`.
pub(super) fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::PATCH => 3,
        Method::DELETE => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The index of `status`'s class in `STATUS_CLASSES` (out-of-range codes count as 5xx).
pub(super) fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_set_are_other() {
        assert_eq!(METHODS[method_index(&Method::PATCH)], "PATCH");
        assert_eq!(METHODS[method_index(&Method::from_bytes(b"PROPFIND").unwrap())], "other");
        assert_eq!(METHODS[method_index(&Method::CONNECT)], "other");
    }

    #[test]
    fn statuses_fall_in_their_class() {
        let class = |s| STATUS_CLASSES[class_index(s)];
        assert_eq!([class(101), class(204), class(304), class(429), class(503)], ["1xx", "2xx", "3xx", "4xx", "5xx"]);
    }
}
