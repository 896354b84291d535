//! The one error type of pylock, shared by the core and every backend.

use std::time::Duration;

/// A boxed error from a driver or the OS, kept as the [`source`](std::error::Error::source)
/// of an [`Error`] rather than flattened into a string.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with pylock's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when taking, holding or giving back a lock.
///
/// Messages never contain passwords: URLs are redacted before they are stored here
/// (see [`redact_url`](crate::redact_url)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock was held by someone else for the whole timeout.
    #[error("timed out after {waited:?} waiting for lock {key:?}")]
    Timeout {
        /// The lock's name as the caller gave it (without the key prefix).
        key: String,
        /// How long the caller waited.
        waited: Duration,
    },

    /// The lock is no longer held by this owner: it expired, or another owner holds it now.
    /// Returned by release and extend; nothing was changed on the server.
    #[error("lock {key:?} is no longer held by this owner (it expired or was taken over)")]
    Lost {
        /// The lock's name as the caller gave it.
        key: String,
    },

    /// The lock name cannot be used.
    #[error("invalid lock key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key (possibly shortened).
        key: String,
        /// Why it was refused.
        reason: String,
    },

    /// A setting or URL option has a value the library or the server cannot honour.
    #[error("invalid value for {name}: {reason}")]
    InvalidOption {
        /// The setting or option, e.g. `expires` or `connect_timeout`.
        name: String,
        /// Why it was refused.
        reason: String,
    },

    /// A URL option that the backend does not know.
    #[error(
        "unknown option {name:?} in {scheme}:// URL; known options: {}",
        list_or_none(known)
    )]
    UnknownOption {
        /// The URL scheme of the backend.
        scheme: String,
        /// The option that was not recognised.
        name: String,
        /// The options the backend understands.
        known: Vec<String>,
    },

    /// The connection URL could not be parsed.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL with any password replaced by `***`.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No backend is registered for the URL's scheme.
    #[error(
        "no lock backend for scheme {scheme:?}; registered schemes: {} \
         (enable the matching `pylock` feature, or register the backend)",
        list_or_none(available)
    )]
    UnknownScheme {
        /// The scheme that was asked for.
        scheme: String,
        /// The schemes that are registered.
        available: Vec<String>,
    },

    /// The backend cannot be reached right now: connection refused or reset, an I/O or
    /// connect timeout, the server restarting. The wait loop retries these until its deadline.
    #[error("{backend} backend unavailable: {context}")]
    Unavailable {
        /// The backend's name, e.g. `redis`.
        backend: &'static str,
        /// What the backend was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// The backend answered with an error that retrying will not fix: authentication,
    /// permissions, a protocol or script error.
    #[error("{backend} backend error: {context}")]
    Backend {
        /// The backend's name, e.g. `redis`.
        backend: &'static str,
        /// What the backend was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },

    /// An operator's tool (`inspect`, `force_release`) found something at the lock's key that
    /// is not a lock of pylock's (another type, another value, no TTL), and left it alone.
    #[error("key {key:?} holds {found}, not a pylock lock; it was left alone")]
    NotALock {
        /// The key on the server.
        key: String,
        /// What the key holds instead.
        found: String,
    },

    /// The backend cannot do this (for example inspecting a lock on a backend without
    /// [`Capabilities::inspection`](crate::Capabilities::inspection)).
    #[error("the {backend} backend cannot {operation}")]
    Unsupported {
        /// The backend's name.
        backend: &'static str,
        /// What was asked of it.
        operation: &'static str,
    },

    /// A `pylock::blocking` call was made on a thread that runs an async runtime, where it
    /// would block the runtime; use the async API there.
    #[error("pylock::blocking was called inside an async runtime; use the async API there")]
    BlockingInRuntime,

    /// The runtime under `pylock::blocking` could not be started: the operating system refused
    /// its thread or its event queue. Every blocking call then returns this; the failure is
    /// the system's, not the call's or a backend's.
    #[error("the runtime of pylock::blocking could not be started: {reason}")]
    BlockingRuntime {
        /// What the operating system said.
        reason: String,
    },

    /// The operating system's secure random source failed while making an owner token.
    #[error("the OS random source failed to produce an owner token")]
    Random(#[source] BoxError),
}

impl Error {
    /// Whether retrying the same operation later may succeed (the backend was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    pub(crate) fn invalid_option(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOption {
            name: name.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_key(key: &str, reason: impl Into<String>) -> Self {
        // Keep the message readable when someone passes a megabyte as a key.
        const SHOWN: usize = 64;
        let shown: String = key.chars().take(SHOWN).collect();
        let key = if shown.len() < key.len() {
            format!("{shown}…")
        } else {
            shown
        };
        Error::InvalidKey {
            key,
            reason: reason.into(),
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_scheme_names_the_registered_ones() {
        let err = Error::UnknownScheme {
            scheme: "zk".into(),
            available: vec!["memory".into(), "redis".into()],
        };
        let msg = err.to_string();
        assert!(msg.contains("\"zk\""), "{msg}");
        assert!(msg.contains("memory, redis"), "{msg}");
    }

    #[test]
    fn long_keys_are_shortened_in_messages() {
        let key = "k".repeat(10_000);
        let msg = Error::invalid_key(&key, "too long").to_string();
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn only_unavailable_is_transient() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let unavailable = Error::Unavailable {
            backend: "x",
            context: "connect".into(),
            source: Box::new(io),
        };
        assert!(unavailable.is_transient());
        assert!(!Error::Lost { key: "k".into() }.is_transient());
    }
}
