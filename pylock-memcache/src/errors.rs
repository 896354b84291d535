//! The one place where memcached failures become pylock errors.

use std::time::Duration;

use pylock_core::Error;

use crate::protocol::ProtocolError;

/// The server cannot be reached right now (the wait loop retries these).
pub(crate) fn unavailable(addr: &str, context: &str, source: Option<std::io::Error>) -> Error {
    let source = source.unwrap_or_else(|| std::io::Error::other(context.to_owned()));
    Error::Unavailable {
        backend: "memcache",
        context: format!("{addr}: {context}"),
        source: Box::new(source),
    }
}

/// No answer within `limit`.
pub(crate) fn timed_out(addr: &str, limit: Duration) -> Error {
    Error::Unavailable {
        backend: "memcache",
        context: format!("{addr}: no answer within {limit:?}"),
        source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
}

/// The server said something this client cannot read: most likely not a memcached server
/// (a Redis server answers `-ERR unknown command`). Not retried.
pub(crate) fn protocol(addr: &str, error: ProtocolError) -> Error {
    Error::Backend {
        backend: "memcache",
        context: format!(
            "{addr}: the answer is not memcached's protocol (is this a memcached 1.6+ server?)"
        ),
        source: Box::new(error),
    }
}

/// The server refused a request (`CLIENT_ERROR`, `SERVER_ERROR`, `ERROR`). Out of memory
/// (memcached run with `-M`, full) may pass as items expire: retried like an outage.
pub(crate) fn refused(addr: &str, line: &str) -> Error {
    if line.contains("out of memory") {
        return Error::Unavailable {
            backend: "memcache",
            context: format!("{addr}: memcached is out of memory and refuses new items"),
            source: Box::new(ProtocolError(line.to_owned())),
        };
    }
    Error::Backend {
        backend: "memcache",
        context: format!("{addr}: the server refused the request"),
        source: Box::new(ProtocolError(line.to_owned())),
    }
}
