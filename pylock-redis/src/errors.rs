//! The one place where `redis` errors become pylock errors.

use pylock_core::Error;
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Maps a driver error: anything that says "the server cannot be reached right now" is
/// [`Error::Unavailable`] (the wait loop retries it); everything else, such as a wrong
/// password or a script error, is [`Error::Backend`].
pub(crate) fn from_redis(error: RedisError, context: &str) -> Error {
    let transient = matches!(
        error.kind(),
        ErrorKind::Io
            | ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
            )
    ) || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal();
    let context = context.to_owned();
    let source = Box::new(error);
    if transient {
        Error::Unavailable {
            backend: "redis",
            context,
            source,
        }
    } else {
        Error::Backend {
            backend: "redis",
            context,
            source,
        }
    }
}

/// A call that got no answer within its time limit.
pub(crate) fn timed_out(context: &str, limit: std::time::Duration) -> Error {
    Error::Unavailable {
        backend: "redis",
        context: format!("{context}: no answer within {limit:?}"),
        source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient_and_the_rest_is_not() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(from_redis(refused, "x").is_transient());
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "WRONGPASS"));
        assert!(matches!(from_redis(auth, "x"), Error::Backend { .. }));
        assert!(timed_out("x", std::time::Duration::from_secs(1)).is_transient());
    }
}
