//! The contract between the core and a lock server: a handful of atomic primitives.
//!
//! Everything else (waiting, timeouts, tokens, key prefixes, guards) lives once in the core,
//! so a backend implements only what must happen on the server in one atomic step.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

use crate::notice::ReleaseNotice;
use crate::token::Token;

/// The result of one acquire attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Attempt {
    /// The lock is ours until the TTL runs out.
    Acquired {
        /// A fencing token, strictly increasing per key, if the backend gives them.
        fence: Option<u64>,
    },
    /// Someone else holds the lock.
    Held {
        /// How long the holder's lock has left, if the backend can tell in the same round
        /// trip. A waiter never sleeps past this: the lock is free by then at the latest.
        remaining: Option<Duration>,
    },
}

/// What [`LockBackend::inspect`] saw: somebody holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    /// How long the holder's lock has left, if the server can tell.
    pub remaining: Option<Duration>,
    /// The fencing token of the current hold, if the backend gives them.
    pub fence: Option<u64>,
}

impl Holder {
    /// A holder with `remaining` time and `fence`.
    pub const fn new(remaining: Option<Duration>, fence: Option<u64>) -> Self {
        Holder { remaining, fence }
    }
}

/// What a backend can and cannot do; the core and the conformance suite read it.
///
/// Build one with [`Capabilities::default`] and the `with_*` methods:
///
/// ```
/// use std::time::Duration;
/// use pylock_core::Capabilities;
///
/// let caps = Capabilities::default()
///     .with_notifications(true)
///     .with_ttl_granularity(Duration::from_secs(1));
/// assert!(caps.exclusive);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Whether the backend really excludes other holders. Only `open://` says no.
    pub exclusive: bool,
    /// Whether successful attempts carry fencing tokens that strictly increase per key.
    pub fencing: bool,
    /// Whether [`LockBackend::subscribe`] delivers release notices, so waiters wake on release
    /// instead of polling.
    pub notifications: bool,
    /// The server's TTL resolution. TTLs are rounded *up* to it, never down.
    pub ttl_granularity: Duration,
    /// The longest TTL the server represents correctly; longer expiries are refused.
    pub max_ttl: Option<Duration>,
    /// The longest server key (prefix included) the backend accepts, if it cannot encode
    /// longer ones itself.
    pub max_key_len: Option<usize>,
    /// Whether [`LockBackend::inspect`] and [`LockBackend::force_release`] work (for
    /// operators: `pylock status`, `pylock release --force`).
    pub inspection: bool,
    /// Clock drift allowance between the servers and the client, in millionths of the TTL
    /// (Redlock: 10,000, i.e. 1 %). The core takes it, plus 2 ms, off every validity
    /// estimate: see [`validity`](Self::validity). Zero for a single server, whose own clock
    /// alone decides.
    pub drift_ppm: u32,
    /// Whether [`LockBackend::try_acquire_fair`] keeps a first-come, first-served queue, so
    /// that [`Lock::fair`](crate::Lock::fair) works.
    pub fair: bool,
}

impl Default for Capabilities {
    /// An exclusive backend with millisecond TTLs, no fencing, no notifications, no limits.
    fn default() -> Self {
        Capabilities {
            exclusive: true,
            fencing: false,
            notifications: false,
            ttl_granularity: Duration::from_millis(1),
            max_ttl: None,
            max_key_len: None,
            inspection: false,
            drift_ppm: 0,
            fair: false,
        }
    }
}

impl Capabilities {
    /// Sets [`exclusive`](Self::exclusive).
    pub const fn with_exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Sets [`fencing`](Self::fencing).
    pub const fn with_fencing(mut self, fencing: bool) -> Self {
        self.fencing = fencing;
        self
    }

    /// Sets [`notifications`](Self::notifications).
    pub const fn with_notifications(mut self, notifications: bool) -> Self {
        self.notifications = notifications;
        self
    }

    /// Sets [`ttl_granularity`](Self::ttl_granularity).
    pub const fn with_ttl_granularity(mut self, granularity: Duration) -> Self {
        self.ttl_granularity = granularity;
        self
    }

    /// Sets [`max_ttl`](Self::max_ttl).
    pub const fn with_max_ttl(mut self, max_ttl: Option<Duration>) -> Self {
        self.max_ttl = max_ttl;
        self
    }

    /// Sets [`max_key_len`](Self::max_key_len).
    pub const fn with_max_key_len(mut self, max_key_len: Option<usize>) -> Self {
        self.max_key_len = max_key_len;
        self
    }

    /// Sets [`inspection`](Self::inspection).
    pub const fn with_inspection(mut self, inspection: bool) -> Self {
        self.inspection = inspection;
        self
    }

    /// Sets [`fair`](Self::fair).
    pub const fn with_fair(mut self, fair: bool) -> Self {
        self.fair = fair;
        self
    }

    /// Sets [`drift_ppm`](Self::drift_ppm).
    pub const fn with_drift_ppm(mut self, drift_ppm: u32) -> Self {
        self.drift_ppm = drift_ppm;
        self
    }

    /// How long a lock set with `ttl` surely lasts, from when its request was sent: `ttl`
    /// less the drift allowance (`ttl` x [`drift_ppm`](Self::drift_ppm) / 10^6 + 2 ms) when
    /// there is one.
    pub fn validity(&self, ttl: Duration) -> Duration {
        if self.drift_ppm == 0 {
            return ttl;
        }
        let drift = ttl.mul_f64(f64::from(self.drift_ppm) / 1e6) + Duration::from_millis(2);
        ttl.saturating_sub(drift)
    }
}

/// A lock server, reduced to its atomic primitives.
///
/// Implement this to add a backend; install it under its URL schemes with a
/// [`BackendDescriptor`](crate::raw::BackendDescriptor), or hand an `Arc` of it to
/// [`Locks::new`](crate::Locks::new). Run the conformance suite (feature `conformance`)
/// against it. The core has already validated the key and TTL, added the key prefix and made
/// the token when these are called.
///
/// Keys are the full server keys (prefix included). TTLs are at least one millisecond and
/// within [`Capabilities::max_ttl`].
#[async_trait]
pub trait LockBackend: Send + Sync + fmt::Debug + 'static {
    /// A short name for errors and traces, e.g. `"redis"`.
    fn name(&self) -> &'static str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// One acquire attempt, atomic on the server: store `token` under `key` with a TTL of
    /// `ttl` (rounded up to the granularity) only if `key` is free.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`](crate::Error::Unavailable) when the server cannot be reached
    /// (the wait loop retries), [`Error::Backend`](crate::Error::Backend) otherwise.
    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt>;

    /// Deletes `key` only if it still holds `token`, atomically, and tells waiters.
    ///
    /// Returns whether `token` held the lock. `false` means nothing was changed.
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    async fn release(&self, key: &str, token: &Token) -> Result<bool>;

    /// Sets the TTL of `key` to `ttl` only if it still holds `token`, atomically.
    ///
    /// Returns whether `token` held the lock. `false` means nothing was changed.
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool>;

    /// Starts listening for releases of `key`, for a waiter that is about to make its first
    /// attempt. Backends that claim [`Capabilities::notifications`] return `Some`; the
    /// subscription must be active on the server when this returns, so that a release between
    /// the waiter's attempt and its wait still wakes it. The default returns `None` (the
    /// waiter polls with backoff).
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        let _ = key;
        Ok(None)
    }

    /// One attempt of a fair acquire, atomic on the server: `key`'s waiters are served first
    /// come, first served. The attempt puts `token` in `key`'s queue (or keeps its place, and
    /// counts as a sign of life), drops waiters not heard from for longer than their
    /// `patience`, and takes the lock only if it is free and `token` is first in line. A
    /// lock found free while another waiter is first is announced to that waiter (a
    /// [`NoticeBoard::notify_waiter`](crate::raw::NoticeBoard::notify_waiter) of its token);
    /// a release announces itself to the first in line the same way. Taking the lock leaves
    /// the queue. The core calls it again at least every half of `patience` while it
    /// waits. Backends that claim [`Capabilities::fair`] implement it; the default says
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    async fn try_acquire_fair(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
        patience: Duration,
    ) -> Result<Attempt> {
        let _ = (key, token, ttl, patience);
        Err(crate::Error::Unsupported {
            backend: self.name(),
            operation: "keep fair locks",
        })
    }

    /// Takes `token` out of `key`'s queue (a fair waiter that gave up or was cancelled) and,
    /// if the lock is free, tells the next in line. The default does nothing.
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    async fn leave_queue(&self, key: &str, token: &Token) -> Result<()> {
        let _ = (key, token);
        Ok(())
    }

    /// Like [`subscribe`](Self::subscribe), for a fair waiter: the notice fires when a
    /// release or a free lock is announced to `token` in particular (and on the backend's
    /// wake-ups of all waiters). The default is [`subscribe`](Self::subscribe).
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    async fn subscribe_waiter(&self, key: &str, token: &Token) -> Result<Option<ReleaseNotice>> {
        let _ = token;
        self.subscribe(key).await
    }

    /// Who holds `key` now, if anybody: for operators, never for deciding who may enter (the
    /// answer may be stale by the time it arrives). Backends that claim
    /// [`Capabilities::inspection`] implement it; the default says
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    async fn inspect(&self, key: &str) -> Result<Option<Holder>> {
        let _ = key;
        Err(crate::Error::Unsupported {
            backend: self.name(),
            operation: "inspect a lock",
        })
    }

    /// Deletes `key` whoever holds it, and tells waiters: the operator's way out of a lock
    /// held by a process that is stuck but alive. Returns whether there was a lock.
    /// Backends that claim [`Capabilities::inspection`] implement it; the default says
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    ///
    /// # Errors
    ///
    /// As for [`try_acquire`](Self::try_acquire).
    async fn force_release(&self, key: &str) -> Result<bool> {
        let _ = key;
        Err(crate::Error::Unsupported {
            backend: self.name(),
            operation: "force a release",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_takes_off_the_drift_allowance() {
        let single = Capabilities::default();
        assert_eq!(
            single.validity(Duration::from_secs(10)),
            Duration::from_secs(10)
        );
        let redlock = Capabilities::default().with_drift_ppm(10_000);
        assert_eq!(
            redlock.validity(Duration::from_secs(10)),
            Duration::from_millis(9_898)
        );
        assert_eq!(redlock.validity(Duration::from_millis(1)), Duration::ZERO);
    }
}
