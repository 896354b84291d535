//! The parts of memcached's protocol the backend uses: requests written as bytes, responses
//! parsed incrementally from a read buffer.
//!
//! Meta commands (`mg`, `md`), except where memcached's classic text commands are safer:
//! when memcached cannot allocate memory for a store, `ms` unlinks the key's current item
//! (memcached 1.6's "avoid stale data" rule, whatever the mode), so a contender's failed `ms`
//! in add mode would delete the holder's lock, and a holder's failed extend its own. The
//! classic `add` and `cas` leave the item in place when they fail that way.
//!
//! Every request but the no-op ends with a meta command, which carries the request's tag
//! (the `O` flag; memcached echoes it in that command's response): a connection hands
//! responses out by their order alone, and if a request is lost on the way while the
//! connection stays up, every later response would answer the request before it. The tag
//! makes that an error instead (see the connection module).

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

/// A request: its text, without the line end of its last command, and how many responses it
/// produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    text: String,
    pub(crate) responses: usize,
    /// Whether the last command takes a tag (every one but `mn`).
    tagged: bool,
}

impl Request {
    fn tagged(text: String, responses: usize) -> Self {
        Request {
            text,
            responses,
            tagged: true,
        }
    }

    /// The bytes to send, the last command tagged with `tag` if it takes one; the tag its
    /// last response must carry.
    pub(crate) fn bytes(&self, tag: u64) -> (Vec<u8>, Option<u64>) {
        if self.tagged {
            (format!("{} O{tag}\r\n", self.text).into_bytes(), Some(tag))
        } else {
            (format!("{}\r\n", self.text).into_bytes(), None)
        }
    }
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

/// One response and the tag it carries (meta responses to a tagged command; classic ones
/// carry none).
pub(crate) type Tagged = (Response, Option<u64>);

/// Parses one response from the front of `buf`: `Ok(None)` if it is not complete yet,
/// otherwise the response, its tag, and how many bytes it took.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Tagged, usize)>, ProtocolError> {
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
    let code = words.next().unwrap_or_default();
    let size = if code == "VA" { words.next() } else { None };
    let (mut tag, mut cas, mut ttl) = (None, None, None);
    for flag in words {
        match flag.split_at_checked(1) {
            Some(("O", v)) => tag = v.parse().ok(),
            Some(("c", v)) => cas = v.parse().ok(),
            Some(("t", v)) => ttl = v.parse().ok(),
            _ => {}
        }
    }
    let response = match code {
        "HD" | "STORED" => Response::Stored,
        "NS" | "NOT_STORED" => Response::NotStored,
        "EX" | "EXISTS" => Response::Exists,
        "NF" | "NOT_FOUND" => Response::NotFound,
        "EN" => Response::Miss,
        "MN" => Response::Noop,
        "ERROR" | "CLIENT_ERROR" | "SERVER_ERROR" => Response::Error(line.to_owned()),
        "VA" => {
            let size: usize = size
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ProtocolError(line.to_owned()))?;
            if buf.len() < consumed + size + 2 {
                return Ok(None);
            }
            if &buf[consumed + size..consumed + size + 2] != b"\r\n" {
                return Err(ProtocolError(format!("{line} without its data block")));
            }
            let data = buf[consumed..consumed + size].to_vec();
            return Ok(Some((
                (Response::Value { data, cas, ttl }, tag),
                consumed + size + 2,
            )));
        }
        _ => return Err(ProtocolError(line.to_owned())),
    };
    Ok(Some(((response, tag), consumed)))
}

/// Classic `add` (store only if absent), then `mg` of the same key for its value and TTL:
/// two responses in one round trip.
pub(crate) fn add_then_get(key: &str, value: &str, ttl_secs: u64) -> Request {
    Request::tagged(
        format!(
            "add {key} 0 {ttl_secs} {}\r\n{value}\r\nmg {key} v t",
            value.len()
        ),
        2,
    )
}

/// `mg` for value and CAS.
pub(crate) fn get_with_cas(key: &str) -> Request {
    Request::tagged(format!("mg {key} v c"), 1)
}

/// `md` only if the CAS still matches.
pub(crate) fn delete_if_cas(key: &str, cas: u64) -> Request {
    Request::tagged(format!("md {key} C{cas}"), 1)
}

/// Classic `cas`: store with a new TTL, only if the CAS still matches; then a bare `mg` of
/// the key, which only carries the tag (`cas` takes none): two responses.
pub(crate) fn set_if_cas(key: &str, value: &str, ttl_secs: u64, cas: u64) -> Request {
    Request::tagged(
        format!(
            "cas {key} 0 {ttl_secs} {} {cas}\r\n{value}\r\nmg {key}",
            value.len()
        ),
        2,
    )
}

/// `mg` for value and remaining TTL.
pub(crate) fn get_with_ttl(key: &str) -> Request {
    Request::tagged(format!("mg {key} v t"), 1)
}

/// `mg` for value, CAS and remaining TTL.
pub(crate) fn get_with_cas_and_ttl(key: &str) -> Request {
    Request::tagged(format!("mg {key} v c t"), 1)
}

/// `mn`: a no-op round trip (it takes no tag).
pub(crate) fn noop() -> Request {
    Request {
        text: "mn".to_owned(),
        responses: 1,
        tagged: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn untagged(response: Response, used: usize) -> Result<Option<(Tagged, usize)>, ProtocolError> {
        Ok(Some(((response, None), used)))
    }

    #[test]
    fn parses_each_kind() {
        assert_eq!(parse(b"HD\r\n"), untagged(Response::Stored, 4));
        assert_eq!(parse(b"NS\r\nxx"), untagged(Response::NotStored, 4));
        assert_eq!(parse(b"EN\r\n"), untagged(Response::Miss, 4));
        assert_eq!(parse(b"STORED\r\n"), untagged(Response::Stored, 8));
        assert_eq!(parse(b"NOT_STORED\r\n"), untagged(Response::NotStored, 12));
        assert_eq!(parse(b"EXISTS\r\n"), untagged(Response::Exists, 8));
        assert_eq!(parse(b"NOT_FOUND\r\n"), untagged(Response::NotFound, 11));
        assert_eq!(
            parse(b"VA 5 t10 c7\r\nhello\r\nHD\r\n"),
            untagged(
                Response::Value {
                    data: b"hello".to_vec(),
                    cas: Some(7),
                    ttl: Some(10)
                },
                20
            )
        );
        assert_eq!(
            parse(b"SERVER_ERROR out of memory\r\n"),
            untagged(Response::Error("SERVER_ERROR out of memory".into()), 28)
        );
    }

    #[test]
    fn meta_responses_carry_their_tag() {
        assert_eq!(
            parse(b"HD O55\r\n"),
            Ok(Some(((Response::Stored, Some(55)), 8)))
        );
        assert_eq!(
            parse(b"EN O123 knokey\r\n"),
            Ok(Some(((Response::Miss, Some(123)), 16)))
        );
        assert_eq!(
            parse(b"VA 2 O77 c3\r\nhi\r\n"),
            Ok(Some((
                (
                    Response::Value {
                        data: b"hi".to_vec(),
                        cas: Some(3),
                        ttl: None
                    },
                    Some(77)
                ),
                17
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
    fn requests_tag_their_last_command() {
        assert_eq!(
            add_then_get("k", "tok", 3).bytes(9),
            (b"add k 0 3 3\r\ntok\r\nmg k v t O9\r\n".to_vec(), Some(9))
        );
        assert_eq!(
            delete_if_cas("k", 9).bytes(1),
            (b"md k C9 O1\r\n".to_vec(), Some(1))
        );
        assert_eq!(
            set_if_cas("k", "tok", 5, 9).bytes(2),
            (b"cas k 0 5 3 9\r\ntok\r\nmg k O2\r\n".to_vec(), Some(2))
        );
        assert_eq!(noop().bytes(3), (b"mn\r\n".to_vec(), None));
    }
}
