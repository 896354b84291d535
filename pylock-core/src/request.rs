//! The validated request behind a lock call: a [`Lock`](crate::Lock)'s own options resolved
//! against its client's [`Settings`], and every rule on them checked here, once: the key,
//! each TTL against pylock's and the backend's limits, the timeout's reach, the fair option.
//! What comes out is all the wait loop and the guard need.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::settings::{Backoff, Settings};

/// The longest expiry any lock may have, whatever the backend: a lock meant to outlive this
/// is a bug, and the cap keeps deadline arithmetic far from overflow.
pub const MAX_EXPIRES: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// A timeout this long or longer (`Duration::MAX`) means waiting as long as it takes.
pub const NO_LIMIT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a [`Lock`](crate::Lock) sets for itself; `None` takes its client's setting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    pub(crate) timeout: Option<Duration>,
    pub(crate) expires: Option<Duration>,
    pub(crate) key_prefix: Option<String>,
    pub(crate) auto_renew: bool,
    pub(crate) max_hold: Option<Duration>,
    /// `Some(patience)`: first come, first served.
    pub(crate) fair: Option<Duration>,
}

/// How a guard renews itself, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Renewal {
    pub(crate) ttl: Duration,
    pub(crate) max_hold: Option<Duration>,
}

/// Everything an acquire needs, validated.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) backend: Arc<dyn LockBackend>,
    pub(crate) retry: Backoff,
    pub(crate) key: String,
    pub(crate) server_key: String,
    /// The TTL of each hold: `expires`, or `max_hold` when that is shorter.
    pub(crate) expires: Duration,
    /// At most [`NO_LIMIT`].
    pub(crate) timeout: Duration,
    pub(crate) renewal: Option<Renewal>,
    /// `Some(patience)` for a fair acquire.
    pub(crate) fair: Option<Duration>,
}

impl Request {
    /// Resolves `options` against `settings` and checks them against pylock's limits and
    /// `backend`'s capabilities.
    pub(crate) fn new(
        backend: &Arc<dyn LockBackend>,
        settings: &Settings,
        key: &str,
        options: &Options,
    ) -> Result<Request> {
        let capabilities = backend.capabilities();
        let expires = options.expires.unwrap_or(settings.expires);
        let timeout = options.timeout.unwrap_or(settings.timeout).min(NO_LIMIT);
        let prefix = options
            .key_prefix
            .as_deref()
            .unwrap_or(&settings.key_prefix);

        if key.is_empty() {
            return Err(Error::invalid_key(key, "a lock key must not be empty"));
        }
        let server_key = format!("{prefix}{key}");
        if let Some(max) = capabilities.max_key_len
            && server_key.len() > max
        {
            return Err(Error::invalid_key(
                key,
                format!(
                    "{} bytes with its prefix; the {} backend takes at most {max}",
                    server_key.len(),
                    backend.name()
                ),
            ));
        }
        check_ttl("expires", expires, backend.as_ref())?;
        // A hold never outlasts its bound, renewals or not.
        let expires = match options.max_hold {
            Some(max_hold) => {
                check_ttl("max_hold", max_hold, backend.as_ref())?;
                expires.min(max_hold)
            }
            None => expires,
        };
        let renewal = options.auto_renew.then_some(Renewal {
            ttl: expires,
            max_hold: options.max_hold,
        });
        if let Some(patience) = options.fair {
            if !capabilities.fair {
                return Err(Error::Unsupported {
                    backend: backend.name(),
                    operation: "keep fair locks (Lock::fair)",
                });
            }
            check_ttl("fair_patience", patience, backend.as_ref())?;
        }
        // The deadline must be representable from now on; it is computed again at the start.
        deadline_after(Instant::now(), timeout)?;
        Ok(Request {
            backend: Arc::clone(backend),
            retry: settings.retry,
            key: key.to_owned(),
            server_key,
            expires,
            timeout,
            renewal,
            fair: options.fair,
        })
    }

    /// When a wait that starts at `started` must end.
    pub(crate) fn deadline(&self, started: Instant) -> Result<Instant> {
        deadline_after(started, self.timeout)
    }
}

fn deadline_after(started: Instant, timeout: Duration) -> Result<Instant> {
    started
        .checked_add(timeout)
        .ok_or_else(|| Error::invalid_option("timeout", "this machine's clock cannot count so far"))
}

/// Checks a TTL against pylock's limit and what the backend can represent.
pub(crate) fn check_ttl(name: &str, ttl: Duration, backend: &dyn LockBackend) -> Result<()> {
    if ttl.is_zero() {
        return Err(Error::invalid_option(
            name,
            "must be longer than zero: a lock that expires at once protects nothing",
        ));
    }
    if ttl > MAX_EXPIRES {
        return Err(Error::invalid_option(
            name,
            format!("{ttl:?} is longer than the 100 years pylock allows"),
        ));
    }
    if let Some(max) = backend.capabilities().max_ttl
        && ttl > max
    {
        return Err(Error::invalid_option(
            name,
            format!(
                "{ttl:?} is longer than the {} backend can hold a lock ({max:?})",
                backend.name()
            ),
        ));
    }
    Ok(())
}
