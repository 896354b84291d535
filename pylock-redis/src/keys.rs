//! Names derived from a lock key: its fencing counter, its fair line and its release channel.
//!
//! All must hash to the lock key's Redis Cluster slot, so that one script can touch the lock,
//! its counter and its line, and a sharded notice lands on the lock's node. Redis hashes only
//! the first `{...}` of a name when there is one (a "hash tag"); so a name derived from a key
//! with a hash tag keeps it, and one derived from a key without gets the whole key as its tag.

/// What the name of every fencing counter ends with. Lock names may not.
pub const FENCE_SUFFIX: &str = ":pylock-fence";

/// The key of the fencing counter of `key`.
pub fn fence_key(key: &str) -> String {
    sibling(key, FENCE_SUFFIX)
}

/// What the name of a fair lock's line ends with (see [`line_key`]). Lock names may not.
pub const LINE_SUFFIX: &str = ":pylock-line";

/// The endings of pylock's own key names, which no lock name may have.
pub const INTERNAL_SUFFIXES: &[&str] = &[FENCE_SUFFIX, LINE_SUFFIX];

/// The key of the line of `key`'s fair waiters: one sorted set that holds each waiter's
/// place (by arrival) and its deadline (by when it lapses). Its layout:
/// [`crate::scripts::FAIR_ACQUIRE`].
pub fn line_key(key: &str) -> String {
    sibling(key, LINE_SUFFIX)
}

/// Whether `key` could be one of pylock's own keys rather than a lock.
pub fn is_internal(key: &str) -> bool {
    INTERNAL_SUFFIXES.iter().any(|suffix| key.ends_with(suffix))
}

/// The pub/sub channel on which releases of `key` are announced.
pub fn notice_channel(key: &str) -> String {
    sibling(key, ":pylock-released")
}

fn sibling(key: &str, suffix: &str) -> String {
    if hash_tag(key).is_some() {
        format!("{key}{suffix}")
    } else if !key.contains('}') {
        format!("{{{key}}}{suffix}")
    } else {
        // `{key}` would end the tag at the key's own `}`. Find a short tag that hashes to the
        // key's slot instead (about 16k tries at most, for such rare names only); the key
        // follows it to keep names distinct.
        let slot = slot(key.as_bytes());
        let tag = (0u32..)
            .map(|n| n.to_string())
            .find(|tag| self::slot(tag.as_bytes()) == slot)
            .unwrap_or_default();
        format!("{{{tag}}}{key}{suffix}")
    }
}

/// The Redis Cluster slot of a name with no hash tag: CRC16 (XMODEM) modulo 16384.
fn slot(name: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in name {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// The part of `key` Redis Cluster hashes, if it is a hash tag: the text between the first `{`
/// and the first `}` after it, when not empty.
fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Redis Cluster slot of a name, hash tags included.
    fn slot_of(name: &str) -> u16 {
        slot(hash_tag(name).unwrap_or(name).as_bytes())
    }

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
    }

    #[test]
    fn derived_names_share_the_slot_of_their_key() {
        for key in [
            "pylock:job",
            "pylock:{user:1}:job",
            "pylock:{}:job",
            "pylock:}{x",
            "pylock:{a}{b}",
            "{",
        ] {
            assert_eq!(slot_of(&fence_key(key)), slot_of(key), "{key}");
            assert_eq!(slot_of(&notice_channel(key)), slot_of(key), "{key}");
        }
    }

    #[test]
    fn hash_tags_follow_redis_rules() {
        assert_eq!(hash_tag("a{b}c"), Some("b"));
        assert_eq!(hash_tag("a{}c{d}"), None);
        assert_eq!(hash_tag("a{b"), None);
        assert_eq!(hash_tag("a{b}{c}"), Some("b"));
    }

    #[test]
    fn derived_names_are_distinct_per_key() {
        assert_ne!(fence_key("a"), fence_key("b"));
        assert_ne!(fence_key("a}"), fence_key("b}"));
        assert_ne!(fence_key("a"), notice_channel("a"));
    }
}
