//! Lock keys as memcached can carry them.
//!
//! memcached keys are at most 250 bytes of printable ASCII without spaces; the text protocol
//! separates words by spaces and commands by `\r\n`, so a raw key like `"k\r\nflush_all"`
//! would inject a command. Keys are therefore encoded, injectively (distinct lock names stay
//! distinct):
//!
//! - bytes outside `!`..=`~`, and `%` and `#` themselves, become `%XX`;
//! - if that is longer than 250 bytes, the key becomes `#` followed by the SHA-256 of the
//!   original in hex. Encoded keys never contain `#`, so the two forms cannot meet.

use sha2::{Digest, Sha256};

/// memcached's longest key.
pub const MAX_KEY_LEN: usize = 250;

/// The memcached key for the lock key `key`.
pub fn encode(key: &str) -> String {
    let mut encoded = String::with_capacity(key.len());
    for &byte in key.as_bytes() {
        if byte.is_ascii_graphic() && byte != b'%' && byte != b'#' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    if encoded.len() <= MAX_KEY_LEN {
        return encoded;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut hashed = String::with_capacity(65);
    hashed.push('#');
    for byte in digest {
        hashed.push_str(&format!("{byte:02x}"));
    }
    hashed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carriable(key: &str) -> bool {
        key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
    }

    #[test]
    fn plain_keys_are_kept() {
        assert_eq!(encode("pylock:job-1"), "pylock:job-1");
    }

    #[test]
    fn unsafe_bytes_are_escaped() {
        assert_eq!(encode("k\r\nflush_all"), "k%0D%0Aflush_all");
        assert_eq!(encode("a b"), "a%20b");
        assert_eq!(encode("50%"), "50%25");
        assert_eq!(encode("#1"), "%231");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn long_keys_are_hashed() {
        let long = "x".repeat(251);
        let encoded = encode(&long);
        assert!(encoded.starts_with('#') && encoded.len() == 65);
        assert_ne!(encode(&"x".repeat(252)), encoded);
        // Escaping can push a short key over the limit too.
        assert!(encode(&" ".repeat(100)).starts_with('#'));
    }

    #[test]
    fn every_encoding_is_carriable_and_distinct() {
        let keys = [
            "k",
            "k ",
            "k%20",
            "k\r\nflush_all",
            "k%0D%0Aflush_all",
            "#abc",
            "%23abc",
            "",
            "\u{0}",
            &"y".repeat(250),
            &"y".repeat(251),
            &"é".repeat(100),
        ];
        let encoded: Vec<String> = keys.iter().map(|k| encode(k)).collect();
        for (key, enc) in keys.iter().zip(&encoded) {
            assert!(carriable(enc) || enc.is_empty(), "{key:?} -> {enc:?}");
        }
        let mut unique = encoded.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), encoded.len(), "{encoded:?}");
    }
}
