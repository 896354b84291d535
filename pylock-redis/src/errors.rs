//! The one place where `redis` errors become pylock errors.

use pylock_core::Error;
use pylock_core::raw::{certificate_refused, is_certificate_error};
use redis::{ErrorKind, RedisError, ServerErrorKind};

/// Maps a driver error of a call to `server` (a redacted URL): anything that says "the server
/// cannot be reached right now" is [`Error::Unavailable`] (the wait loop retries it);
/// everything else, such as a wrong password or a script error, is [`Error::Backend`].
pub(crate) fn from_redis(error: RedisError, context: &str, server: &str) -> Error {
    if is_certificate_error(&error) {
        return certificate_refused("redis", server, context, Box::new(error));
    }
    let transient = matches!(
        error.kind(),
        ErrorKind::Io
            | ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
    ) || demoted(&error)
        // MOVED, ASK, TRYAGAIN, CLUSTERDOWN: the cluster is moving a slot or failing over;
        // the next attempt goes where the slot is then.
        || error.is_cluster_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal();
    let denied = error.code() == Some("NOPERM");
    let auth = !denied
        && (error.kind() == ErrorKind::AuthenticationFailed
            || matches!(error.code(), Some("WRONGPASS" | "NOAUTH")));
    let context = if denied {
        format!(
            "permission denied at {server} ({context}): the ACL user may not run a command or \
             touch a key pylock needs (EVALSHA, SCRIPT LOAD, SUBSCRIBE, PUBLISH and the lock's \
             keys and channels)"
        )
    } else if auth {
        format!(
            "authentication failed at {server} ({context}); check the user and password in the URL"
        )
    } else {
        format!("{context} at {server}")
    };
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

/// Whether `error` is a master that was just demoted refusing what only a master does, or
/// unblocking a `WAIT` it can no longer answer (`-UNBLOCKED ... instance state changed`): in a
/// failover, the next attempt reaches the new master.
fn demoted(error: &RedisError) -> bool {
    error.code() == Some("UNBLOCKED")
        || error.detail().is_some_and(|detail| {
            detail.contains("cannot be used with replica instances")
                || detail.contains("instance state changed")
        })
}

/// A call to `server` that got no answer within its time limit.
pub(crate) fn timed_out(context: &str, server: &str, limit: std::time::Duration) -> Error {
    Error::Unavailable {
        backend: "redis",
        context: format!("{context} at {server}: no answer within {limit:?}"),
        source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient_and_the_rest_is_not() {
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(from_redis(refused, "x", "redis://h").is_transient());
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "WRONGPASS"));
        let auth = from_redis(auth, "x", "redis://h");
        assert!(matches!(auth, Error::Backend { .. }));
        assert!(
            auth.to_string()
                .contains("authentication failed at redis://h"),
            "{auth}"
        );
        assert!(timed_out("x", "redis://h", std::time::Duration::from_secs(1)).is_transient());
        let demoted = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "An error was signalled by the server",
            "WAIT cannot be used with replica instances. Please also note that since Redis 4.0 if a replica is configured to be writable (which is not the default) writes to replicas are just local and are not propagated.".to_owned(),
        ));
        assert!(from_redis(demoted, "x", "redis://h").is_transient());
        let unblocked = RedisError::from((
            ErrorKind::Extension,
            "An error was signalled by the server",
            "UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)".to_owned(),
        ));
        assert!(from_redis(unblocked, "x", "redis://h").is_transient());
        let denied = RedisError::from((
            ErrorKind::Server(ServerErrorKind::NoPerm),
            "this user has no permissions to run the 'evalsha' command",
        ));
        let denied = from_redis(denied, "x", "redis://h").to_string();
        assert!(
            denied.contains("permission denied") && !denied.contains("password"),
            "{denied}"
        );
    }
}
