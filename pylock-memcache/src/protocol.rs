//! The parts of memcached's meta protocol the backend uses: requests written as bytes,
//! responses parsed incrementally from a read buffer.

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
        "HD" => Response::Stored,
        "NS" => Response::NotStored,
        "EX" => Response::Exists,
        "NF" => Response::NotFound,
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

/// `ms` in add mode (store only if absent), then `mg` of the same key for its value and TTL:
/// two responses in one round trip.
pub(crate) fn add_then_get(key: &str, value: &str, ttl_secs: u64) -> Vec<u8> {
    format!(
        "ms {key} {} T{ttl_secs} ME\r\n{value}\r\nmg {key} v t\r\n",
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

/// `ms` (set) with a new TTL, only if the CAS still matches.
pub(crate) fn set_if_cas(key: &str, value: &str, ttl_secs: u64, cas: u64) -> Vec<u8> {
    format!("ms {key} {} T{ttl_secs} C{cas}\r\n{value}\r\n", value.len()).into_bytes()
}

/// `mg` for value and remaining TTL.
pub(crate) fn get_with_ttl(key: &str) -> Vec<u8> {
    format!("mg {key} v t\r\n").into_bytes()
}

/// `md` whatever the item holds.
pub(crate) fn delete(key: &str) -> Vec<u8> {
    format!("md {key}\r\n").into_bytes()
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
            b"ms k 3 T3 ME\r\ntok\r\nmg k v t\r\n".to_vec()
        );
        assert_eq!(delete_if_cas("k", 9), b"md k C9\r\n".to_vec());
        assert_eq!(
            set_if_cas("k", "tok", 5, 9),
            b"ms k 3 T5 C9\r\ntok\r\n".to_vec()
        );
    }
}
