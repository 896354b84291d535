#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
// Library code returns errors and logs through `tracing`; tests may unwrap and print.
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod install;

#[cfg(feature = "blocking")]
#[cfg_attr(docsrs, doc(cfg(feature = "blocking")))]
pub mod blocking;

pub use install::{install_default_backends, install_in};

// The user's API; what backend authors need is in `raw`, apart.
pub use pylock_core::{
    Backoff, BoxError, Capabilities, DEFAULT_EXPIRES, DEFAULT_FAIR_PATIENCE, DEFAULT_KEY_PREFIX,
    DEFAULT_TIMEOUT, DEFAULT_URL, Error, FINAL_ATTEMPT_GRACE, Holder, Lock, LockBackend, LockGuard,
    Locks, LostReason, MAX_EXPIRES, MemoryBackend, NO_LIMIT, Registry, Result, Settings, URL_ENV,
    memory, raw, redact_url, settle,
};

/// `open://`: always acquires, never blocks. For tests only; it is not a lock.
#[cfg(feature = "open")]
#[cfg_attr(docsrs, doc(cfg(feature = "open")))]
pub use pylock_open as open;

/// `redis://`, `rediss://`, `redis+unix://`: locks on a Redis or Valkey server.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use pylock_redis as redis;

/// `memcache://`: locks on memcached, one server or a pool.
#[cfg(feature = "memcache")]
#[cfg_attr(docsrs, doc(cfg(feature = "memcache")))]
pub use pylock_memcache as memcache;

/// `etcd://`: locks on an etcd cluster, with fencing tokens from its replicated revisions.
#[cfg(feature = "etcd")]
#[cfg_attr(docsrs, doc(cfg(feature = "etcd")))]
pub use pylock_etcd as etcd;

/// A client for `url`, with every backend this crate's features enable installed.
///
/// The same as [`Locks::connect`]; it exists so that the facade works even where the
/// load-time installer cannot run.
///
/// # Errors
///
/// As for [`Locks::connect`].
pub fn connect(url: &str) -> Result<Locks> {
    install_default_backends();
    Locks::connect(url)
}

/// A client for the URL in `PYLOCK_URL` (trimmed), or for in-process `memory://` when it is
/// unset or empty, with every backend this crate's features enable installed. The same as
/// [`Locks::from_env`].
///
/// # Errors
///
/// As for [`Locks::from_env`].
pub fn from_env() -> Result<Locks> {
    install_default_backends();
    Locks::from_env()
}
