//! New key secrets: prefix + base62 body from the OS CSPRNG (190 bits for 32 characters).

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub fn generate(prefix: &str, body_len: usize) -> String {
    let mut out = String::with_capacity(prefix.len() + body_len);
    out.push_str(prefix);
    let mut buf = [0u8; 64];
    while out.len() < prefix.len() + body_len {
        getrandom::getrandom(&mut buf).expect("the OS random source is available");
        // Rejection sampling: 248 = 4 * 62, so every accepted byte maps uniformly.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == prefix.len() + body_len {
                break;
            }
            out.push(BASE62[(*b % 62) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_prefix_length_and_charset_and_differ() {
        let a = generate("dpl_live_", 32);
        let b = generate("dpl_live_", 32);
        assert_eq!(a.len(), 41);
        assert!(a.starts_with("dpl_live_"));
        assert!(a[9..].bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
