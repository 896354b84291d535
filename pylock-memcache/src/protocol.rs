//! The parts of memcached's protocol the backend uses: requests written as bytes, responses
//! parsed incrementally from a read buffer.
//!
//! Meta commands (`mg`, `md`), except where memcached's classic text commands are safer:
//! when memcached cannot allocate memory for a store, `ms` unlinks the key's current item
//! (memcached 1.6's "avoid stale data" rule, whatever the mode), so a contender's failed `ms`
//! in add mode would delete the holder's lock, and a holder's failed extend its own. The
//! classic `add` and `cas` leave the item in place when they fail that way.

use std::fmt;

/// One response line (with its data block for `VA`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// `HD`: stored / deleted / touched.
    Stored,
    /// `NS`: not stored (an `add` found the key).
    NotStored,
    /// `EX`: the CAS value did not match.
    Exists,
    /// `NF`: not found.
    NotFound,
    /// `EN`: a `mg` miss.
    Miss,
    /// `MN`: the answer to `mn`.
    Noop,
    /// `VA`: a `mg` hit.
    Value {
        data: Vec<u8>,
        cas: Option<u64>,
        /// Remaining TTL in seconds; -1 for none.
        ttl: Option<i64>,
    },
    /// `ERROR`, `CLIENT_ERROR ...`, `SERVER_ERROR ...`.
    Error(String),
}

/// The server sent something this client cannot read: the connection is out of step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unexpected memcached response: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

/// Parses one response from the front of `buf`: `Ok(None)` if it is not complete yet,
/// otherwise the response and how many bytes it took.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Response, usize)>, ProtocolError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > 8192 {
            return Err(ProtocolError("a response line over 8 KiB".into()));
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProtocolError("a response line that is not UTF-8".into()))?;
    let consumed = end + 2;
    let mut words = line.split(' ');
    let response = match words.next().unwrap_or_default() {
        "HD" | "STORED" => Response::Stored,
        "NS" | "NOT_STORED" => Response::NotStored,
        "EX" | "EXISTS" => Response::Exists,
        "NF" | "NOT_FOUND" => Response::NotFound,
        "EN" => Response::Miss,
        "MN" => Response::Noop,
        "ERROR" | "CLIENT_ERROR" | "SERVER_ERROR" => Response::Error(line.to_owned()),
        "VA" => {
            let size: usize = words
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ProtocolError(line.to_owned()))?;
            let (mut cas, mut ttl) = (None, None);
            for flag in words {
                match flag.split_at_checked(1) {
                    Some(("c", v)) => cas = v.parse().ok(),
                    Some(("t", v)) => ttl = v.parse().ok(),
                    _ => {}
                }
            }
            if buf.len() < consumed + size + 2 {
                return Ok(None);
            }
            if &buf[consumed + size..consumed + size + 2] != b"\r\n" {
                return Err(ProtocolError(format!("{line} without its data block")));
            }
            let data = buf[consumed..consumed + size].to_vec();
            return Ok(Some((
                Response::Value { data, cas, ttl },
                consumed + size + 2,
            )));
        }
        _ => return Err(ProtocolError(line.to_owned())),
    };
    Ok(Some((response, consumed)))
}

/// Classic `add` (store only if absent), then `mg` of the same key for its value and TTL:
/// two responses in one round trip.
pub(crate) fn add_then_get(key: &str, value: &str, ttl_secs: u64) -> Vec<u8> {
    format!(
        "add {key} 0 {ttl_secs} {}\r\n{value}\r\nmg {key} v t\r\n",
        value.len()
    )
    .into_bytes()
}

/// `mg` for value and CAS.
pub(crate) fn get_with_cas(key: &str) -> Vec<u8> {
    format!("mg {key} v c\r\n").into_bytes()
}

/// `md` only if the CAS still matches.
pub(crate) fn delete_if_cas(key: &str, cas: u64) -> Vec<u8> {
    format!("md {key} C{cas}\r\n").into_bytes()
}

/// Classic `cas`: store with a new TTL, only if the CAS still matches.
pub(crate) fn set_if_cas(key: &str, value: &str, ttl_secs: u64, cas: u64) -> Vec<u8> {
    format!(
        "cas {key} 0 {ttl_secs} {} {cas}\r\n{value}\r\n",
        value.len()
    )
    .into_bytes()
}

/// `mg` for value and remaining TTL.
pub(crate) fn get_with_ttl(key: &str) -> Vec<u8> {
    format!("mg {key} v t\r\n").into_bytes()
}

/// `mg` for value, CAS and remaining TTL.
pub(crate) fn get_with_cas_and_ttl(key: &str) -> Vec<u8> {
    format!("mg {key} v c t\r\n").into_bytes()
}

/// `mn`: a no-op round trip.
pub(crate) fn noop() -> Vec<u8> {
    b"mn\r\n".to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind() {
        assert_eq!(parse(b"HD\r\n"), Ok(Some((Response::Stored, 4))));
        assert_eq!(parse(b"NS\r\nxx"), Ok(Some((Response::NotStored, 4))));
        assert_eq!(parse(b"EN\r\n"), Ok(Some((Response::Miss, 4))));
        assert_eq!(parse(b"STORED\r\n"), Ok(Some((Response::Stored, 8))));
        assert_eq!(
            parse(b"NOT_STORED\r\n"),
            Ok(Some((Response::NotStored, 12)))
        );
        assert_eq!(parse(b"EXISTS\r\n"), Ok(Some((Response::Exists, 8))));
        assert_eq!(parse(b"NOT_FOUND\r\n"), Ok(Some((Response::NotFound, 11))));
        assert_eq!(
            parse(b"VA 5 t10 c7\r\nhello\r\nHD\r\n"),
            Ok(Some((
                Response::Value {
                    data: b"hello".to_vec(),
                    cas: Some(7),
                    ttl: Some(10)
                },
                20
            )))
        );
        assert_eq!(
            parse(b"SERVER_ERROR out of memory\r\n"),
            Ok(Some((
                Response::Error("SERVER_ERROR out of memory".into()),
                28
            )))
        );
    }

    #[test]
    fn incomplete_responses_wait_for_more() {
        assert_eq!(parse(b"HD"), Ok(None));
        assert_eq!(parse(b"VA 5 c1\r\nhel"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"WHAT\r\n").is_err());
        assert!(parse(b"VA x\r\n").is_err());
        assert!(parse(b"VA 2 c1\r\nabcd\r\n").is_err());
    }

    #[test]
    fn requests() {
        assert_eq!(
            add_then_get("k", "tok", 3),
            b"add k 0 3 3\r\ntok\r\nmg k v t\r\n".to_vec()
        );
        assert_eq!(delete_if_cas("k", 9), b"md k C9\r\n".to_vec());
        assert_eq!(
            set_if_cas("k", "tok", 5, 9),
            b"cas k 0 5 3 9\r\ntok\r\n".to_vec()
        );
    }
}
