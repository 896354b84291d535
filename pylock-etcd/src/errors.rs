//! etcd's errors, as pylock's: what retrying may fix is `Unavailable`, the rest `Backend` (a
//! refused TLS certificate among them, with what to fix).

use std::time::Duration;

use pylock_core::Error;
use pylock_core::raw::{certificate_refused, is_certificate_error};
use tonic::Code;

/// The backend's name in errors and traces.
pub(crate) const NAME: &str = "etcd";

/// `error`, met while doing `context` (on `server`), as pylock's error.
pub(crate) fn from_etcd(context: &str, server: &str, error: etcd_client::Error) -> Error {
    if is_certificate_error(&error) {
        return certificate_refused(NAME, server, context, Box::new(error));
    }
    let transient = match &error {
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Aborted
                | Code::ResourceExhausted
                | Code::Cancelled
                | Code::Unknown
        ),
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_) => true,
        _ => false,
    };
    let context = format!("{context} on {server}");
    if transient {
        Error::Unavailable {
            backend: NAME,
            context,
            source: Box::new(error),
        }
    } else {
        Error::Backend {
            backend: NAME,
            context,
            source: Box::new(error),
        }
    }
}

/// No answer from `server` within `limit`.
pub(crate) fn timed_out(context: &str, server: &str, limit: Duration) -> Error {
    Error::Unavailable {
        backend: NAME,
        context: format!("{context} on {server}"),
        source: Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {limit:?}"),
        )),
    }
}

/// Whether `error` is etcd's answer to a request naming a lease it no longer has (one that ran
/// out or was revoked).
pub(crate) fn is_lease_not_found(error: &Error) -> bool {
    let source = match error {
        Error::Backend { source, .. } | Error::Unavailable { source, .. } => source,
        _ => return false,
    };
    match source.downcast_ref::<etcd_client::Error>() {
        Some(etcd_client::Error::GRpcStatus(status)) => status.code() == Code::NotFound,
        Some(etcd_client::Error::LeaseKeepAliveError(_)) => true,
        _ => false,
    }
}
