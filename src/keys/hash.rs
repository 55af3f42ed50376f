//! SHA-256 of the whole key: the only form in which a key is stored or compared.

use std::fmt;

use sha2::{Digest, Sha256};

/// Hex digit values (either case); 0x80 marks a byte that is no hex digit.
const HEX: [u8; 256] = {
    let mut t = [0x80u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of(key: &str) -> KeyHash {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    pub fn from_hex(s: &str) -> Result<KeyHash, String> {
        if s.len() != 64 {
            return Err(format!("hash must be 64 hex characters (SHA-256), got {}", s.len()));
        }
        // A table lookup per digit, checked once at the end: a million-key load decodes 64 MB
        // of hex, and the per-character branches of `hex::decode_to_slice` were half of
        // building the records.
        let b = s.as_bytes();
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (i, o) in out.iter_mut().enumerate() {
            let (hi, lo) = (HEX[usize::from(b[2 * i])], HEX[usize::from(b[2 * i + 1])]);
            bad |= (hi | lo) & 0x80;
            *o = (hi << 4) | (lo & 0x0f);
        }
        if bad != 0 {
            // The slow path names the offending character.
            hex::decode_to_slice(s, &mut out).map_err(|e| format!("hash is not hex: {e}"))?;
        }
        Ok(KeyHash(out))
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Constant-time comparison, for the final check after an index lookup: the four words'
    /// differences are folded without a branch, and `black_box` keeps the compiler from
    /// turning the fold into an early exit. (`subtle` over the bytes did the same thirty-two
    /// times.)
    pub fn ct_eq(&self, other: &KeyHash) -> bool {
        let word = |h: &[u8; 32], i: usize| u64::from_ne_bytes(h[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let diff = (0..4).fold(0u64, |acc, i| acc | (word(&self.0, i) ^ word(&other.0, i)));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHash(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding_agrees_with_the_hex_crate_and_refuses_non_hex() {
        let h = KeyHash::of("some key");
        for text in [h.to_hex(), h.to_hex().to_uppercase()] {
            assert_eq!(KeyHash::from_hex(&text).unwrap(), h);
        }
        let good = h.to_hex();
        for (at, c) in [(0, 'g'), (63, 'G'), (31, ' '), (10, 'é')] {
            let mut bad: Vec<char> = good.chars().collect();
            bad[at] = c;
            let bad: String = bad.into_iter().collect();
            if bad.len() == 64 {
                let e = KeyHash::from_hex(&bad).unwrap_err();
                assert!(e.contains("not hex"), "{e}");
            } else {
                assert!(KeyHash::from_hex(&bad).is_err());
            }
        }
    }

    #[test]
    fn hex_round_trip_and_known_vector() {
        // sha256("abc")
        let h = KeyHash::of("abc");
        assert_eq!(h.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(KeyHash::from_hex(&h.to_hex()).unwrap(), h);
        assert!(h.ct_eq(&KeyHash::of("abc")));
        assert!(!h.ct_eq(&KeyHash::of("abd")));
        // A difference in any one byte, whichever word it falls in, is seen.
        for i in 0..32 {
            let mut other = h;
            other.0[i] ^= 0x80;
            assert!(!h.ct_eq(&other), "byte {i}");
        }
    }

    #[test]
    fn bad_hex_is_refused_with_reason() {
        assert!(KeyHash::from_hex("abc").unwrap_err().contains("64 hex"));
        assert!(KeyHash::from_hex(&"zz".repeat(32)).unwrap_err().contains("not hex"));
    }
}
