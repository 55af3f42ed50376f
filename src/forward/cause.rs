//! Why the upstream could not be reached, in words an operator acts on: a fixed vocabulary for
//! the one log line a 502 gets (refused, reset, timed out, TLS, protocol), read off the error's
//! source chain. Never the request's contents.

use std::error::Error;
use std::io::ErrorKind;

/// A connect that failed (TCP, DNS or TLS), from the connector's boxed error.
pub(super) fn of_connect(e: &(dyn Error + 'static)) -> &'static str {
    if let Some(cause) = in_chain(e) {
        return cause;
    }
    if e.to_string().starts_with("dns error") {
        "dns lookup failed"
    } else {
        "connect failed"
    }
}

/// An exchange on a connection that was up: the request could not be sent or no response came.
pub(super) fn of_exchange(e: &hyper::Error) -> &'static str {
    if e.is_incomplete_message() {
        "connection closed before the response"
    } else if e.is_parse() || e.is_parse_status() || e.is_parse_too_large() {
        "malformed response"
    } else if e.is_timeout() {
        "timeout"
    } else {
        in_chain(e).unwrap_or("protocol error")
    }
}

/// The first error in the chain that names a cause: a rustls error (inside an `io::Error` too)
/// or an I/O error kind.
fn in_chain(e: &(dyn Error + 'static)) -> Option<&'static str> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(of_tls(tls));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // An `io::Error`'s `source` skips its payload, which is where the TLS error (or
            // another `io::Error`, as the connector wraps them) sits: look there first.
            if let Some(inner) = io.get_ref() {
                if let Some(cause) = in_chain(inner) {
                    return Some(cause);
                }
            }
            match io.kind() {
                ErrorKind::ConnectionRefused => return Some("connection refused"),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                    return Some("connection reset")
                }
                ErrorKind::UnexpectedEof => return Some("connection closed"),
                ErrorKind::TimedOut => return Some("connect timeout"),
                _ => {}
            }
        }
        cur = err.source();
    }
    None
}

fn of_tls(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(_) => "tls certificate rejected",
        _ => "tls handshake failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_kinds_and_tls_errors_name_their_cause() {
        let refused = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(of_connect(&refused), "connection refused");
        let reset = std::io::Error::from(ErrorKind::ConnectionReset);
        assert_eq!(of_connect(&reset), "connection reset");
        let slow = std::io::Error::from(ErrorKind::TimedOut);
        assert_eq!(of_connect(&slow), "connect timeout");
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(ErrorKind::InvalidData, cert);
        assert_eq!(of_connect(&wrapped), "tls certificate rejected");
        let garbled = std::io::Error::new(ErrorKind::InvalidData, rustls::Error::DecryptError);
        assert_eq!(of_connect(&garbled), "tls handshake failed");
        let nested = std::io::Error::other(std::io::Error::new(ErrorKind::InvalidData, rustls::Error::DecryptError));
        assert_eq!(of_connect(&nested), "tls handshake failed", "as hyper-rustls hands it over");
        let other = std::io::Error::other("something else");
        assert_eq!(of_connect(&other), "connect failed");
    }
}
