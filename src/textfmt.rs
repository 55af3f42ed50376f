//! Text for the request path without `core::fmt`: addresses, integers, the audit timestamp and
//! durations. `format!`/`Display` go through padding and dynamic dispatch, a measurable share of
//! a request under callgrind (README, Performance). These write straight into a buffer and give
//! the same text.

use std::net::IpAddr;

use time::OffsetDateTime;

/// An address formatted once (per connection), as text the request path can copy.
#[derive(Clone, Copy)]
pub struct IpText {
    buf: [u8; 45],
    len: u8,
}

impl IpText {
    pub fn new(ip: IpAddr) -> IpText {
        let mut s = String::with_capacity(45);
        push_ip(&mut s, ip);
        let mut buf = [0u8; 45];
        let len = s.len().min(45);
        buf[..len].copy_from_slice(&s.as_bytes()[..len]);
        IpText { buf, len: len as u8 }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits, dots, colons and hex letters were written.
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).unwrap_or("")
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IPv4 as dotted decimal (the common case, by hand); IPv6 through `Display` (RFC 5952 form).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            let mut b = itoa::Buffer::new();
            out.push_str(b.format(o[0]));
            for octet in &o[1..] {
                out.push('.');
                out.push_str(b.format(*octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

pub fn push_u64(out: &mut String, v: u64) {
    out.push_str(itoa::Buffer::new().format(v));
}

pub fn push_i64(out: &mut String, v: i64) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// `v` zero-padded to `width` digits (`v` must fit in it).
fn push_padded(out: &mut String, v: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut n = v;
    for i in (0..width).rev() {
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    // ASCII digits only.
    out.push_str(std::str::from_utf8(&digits[..width]).unwrap_or(""));
}

thread_local! {
    /// The date-and-seconds part of the last timestamp written on this thread, by Unix second:
    /// the calendar arithmetic runs once a second instead of once a line.
    static SECOND: std::cell::RefCell<(i64, String)> = const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// RFC 3339 UTC with microseconds: `2026-12-02T13:08:23.123456Z`.
pub fn push_rfc3339_micros(out: &mut String, t: OffsetDateTime) {
    let unix = t.unix_timestamp();
    SECOND.with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else { return push_seconds(out, t) };
        if c.0 != unix {
            c.1.clear();
            push_seconds(&mut c.1, t);
            c.0 = unix;
        }
        out.push_str(&c.1);
    });
    out.push('.');
    push_padded(out, t.microsecond(), 6);
    out.push('Z');
}

fn push_seconds(out: &mut String, t: OffsetDateTime) {
    let t = t.to_offset(time::UtcOffset::UTC);
    push_padded(out, t.year().clamp(0, 9999) as u32, 4);
    out.push('-');
    push_padded(out, u32::from(u8::from(t.month())), 2);
    out.push('-');
    push_padded(out, u32::from(t.day()), 2);
    out.push('T');
    push_padded(out, u32::from(t.hour()), 2);
    out.push(':');
    push_padded(out, u32::from(t.minute()), 2);
    out.push(':');
    push_padded(out, u32::from(t.second()), 2);
}

/// A JSON number with at most three decimals (durations in milliseconds, to the microsecond);
/// values outside the plain range fall back to the shortest exact form.
pub fn push_f64_3(out: &mut String, v: f64) {
    if !(0.0..1e12).contains(&v) {
        out.push_str(ryu::Buffer::new().format(v));
        return;
    }
    let thousandths = (v * 1000.0).round() as u64;
    push_u64(out, thousandths / 1000);
    let frac = (thousandths % 1000) as u32;
    if frac != 0 {
        out.push('.');
        let mut width = 3;
        let mut f = frac;
        while f.is_multiple_of(10) {
            f /= 10;
            width -= 1;
        }
        push_padded(out, f, width);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn addresses_read_as_display_does() {
        for ip in ["0.0.0.0", "127.0.0.1", "10.20.255.9", "::1", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }

    #[test]
    fn timestamp_is_rfc3339_with_microseconds() {
        let mut s = String::new();
        push_rfc3339_micros(&mut s, datetime!(2026-01-02 03:04:05.000_067 UTC));
        assert_eq!(s, "2026-01-02T03:04:05.000067Z");
        let mut s = String::new();
        push_rfc3339_micros(&mut s, datetime!(2026-12-31 23:59:59.999_999 +02:00));
        assert_eq!(s, "2026-12-31T21:59:59.999999Z", "converted to UTC");
        let mut s = String::new();
        push_rfc3339_micros(&mut s, datetime!(2026-12-31 21:59:59.5 UTC));
        push_rfc3339_micros(&mut s, datetime!(2026-12-31 22:00:00 UTC));
        assert_eq!(s, "2026-12-31T21:59:59.500000Z2026-12-31T22:00:00.000000Z", "the cached second moves on");
    }

    #[test]
    fn durations_have_at_most_three_decimals() {
        let cases = [(1.25, "1.25"), (0.0, "0"), (0.0004, "0"), (0.0006, "0.001"), (12.3456, "12.346"), (7.0, "7")];
        for (v, want) in cases {
            let mut s = String::new();
            push_f64_3(&mut s, v);
            assert_eq!(s, want, "{v}");
        }
        let mut s = String::new();
        push_f64_3(&mut s, -1.5);
        assert_eq!(s, "-1.5");
    }

    #[test]
    fn integers() {
        let mut s = String::new();
        push_u64(&mut s, 18_446_744_073_709_551_615);
        s.push(' ');
        push_i64(&mut s, -42);
        assert_eq!(s, "18446744073709551615 -42");
    }
}
