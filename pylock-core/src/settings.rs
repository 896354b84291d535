//! Defaults carried over from pylock 0.4, and the knobs of the wait loop.

use std::time::Duration;

/// How long [`Lock::acquire`](crate::Lock::acquire) waits for a held lock before
/// [`Error::Timeout`](crate::Error::Timeout): pylock 0.4's `DEFAULT_TIMEOUT`, 60 s.
/// Zero means exactly one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a lock lives unless released or extended: pylock 0.4's `DEFAULT_EXPIRES`, 10 s.
/// It must be longer than the critical section; the server enforces it with a TTL.
pub const DEFAULT_EXPIRES: Duration = Duration::from_secs(10);

/// Prepended to every lock name: lock `somekey` is server key `pylock:somekey`.
pub const DEFAULT_KEY_PREFIX: &str = "pylock:";

/// The defaults a [`Locks`](crate::Locks) client gives its locks. Each [`Lock`](crate::Lock)
/// can override them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// See [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// See [`DEFAULT_EXPIRES`].
    pub expires: Duration,
    /// See [`DEFAULT_KEY_PREFIX`].
    pub key_prefix: String,
    /// How often a waiter polls when no release notice wakes it.
    pub retry: Backoff,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            timeout: DEFAULT_TIMEOUT,
            expires: DEFAULT_EXPIRES,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            retry: Backoff::default(),
        }
    }
}

/// Jittered, capped exponential backoff between attempts of a waiter.
///
/// With a backend that sends release notices this is only the fallback for lost notices and
/// crashed holders; without one it decides how soon a waiter sees a released lock. A waiter
/// never sleeps past its deadline or past the holder's remaining TTL, whatever these say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Backoff {
    /// The first pause.
    pub initial: Duration,
    /// The longest pause; pauses double up to it.
    pub max: Duration,
}

impl Backoff {
    /// Pauses from `initial` doubling up to `max`.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }
}

impl Default for Backoff {
    /// 2 ms doubling to 100 ms: a polling waiter sees a release within about 100 ms, at
    /// about 10 attempts per second per waiter once the wait is long.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(2), Duration::from_millis(100))
    }
}
