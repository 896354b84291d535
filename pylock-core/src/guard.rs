//! [`LockGuard`]: proof of holding a lock, and the only way to release or extend it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::lock::check_ttl;
use crate::token::Token;

/// A held lock. Release it with [`release`](Self::release).
///
/// Dropped without release (an early return, a panic, a cancelled task), it is released in the
/// background on the current tokio runtime; without a runtime it expires by its TTL.
#[must_use = "dropping the guard releases the lock at once (in the background)"]
pub struct LockGuard {
    backend: Arc<dyn LockBackend>,
    key: String,
    server_key: String,
    token: Token,
    fence: Option<u64>,
    /// When the acquire request was sent.
    acquired_at: Instant,
    /// The lock is surely ours until then (measured from when the request that set the TTL
    /// was sent, so time spent waiting for the reply counts against it).
    valid_until: Instant,
    /// Set once the server has answered a release, so that `Drop` has nothing left to do.
    settled: bool,
}

impl LockGuard {
    pub(crate) fn new(
        backend: Arc<dyn LockBackend>,
        key: String,
        server_key: String,
        token: Token,
        fence: Option<u64>,
        sent_at: Instant,
        ttl: Duration,
    ) -> Self {
        LockGuard {
            backend,
            key,
            server_key,
            token,
            fence,
            acquired_at: sent_at,
            valid_until: sent_at + ttl,
            settled: false,
        }
    }

    /// The lock's name as given (without prefix).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key on the server (prefix included).
    pub fn server_key(&self) -> &str {
        &self.server_key
    }

    /// The fencing token of this hold, if the backend gives them: strictly greater than the
    /// token of any earlier hold of the same key. Pass it to the resource you protect, and have
    /// it refuse writes with a smaller token than it has seen.
    pub fn fence(&self) -> Option<u64> {
        self.fence
    }

    /// How long the lock is surely still ours: the TTL minus the time since the request that
    /// set it was sent, on the monotonic clock. Zero means it may have expired.
    pub fn remaining(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }

    /// How long the lock has been held, measured from when the acquire request was sent.
    pub fn held_for(&self) -> Duration {
        self.acquired_at.elapsed()
    }

    /// Sets the lock's TTL to `ttl` from now, if it is still ours.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] if the lock expired or another owner holds it (nothing was changed);
    /// [`Error::InvalidOption`] for a zero or too long `ttl`; backend errors.
    pub async fn extend(&mut self, ttl: Duration) -> Result<()> {
        check_ttl("ttl", ttl, self.backend.as_ref())?;
        let sent_at = Instant::now();
        if self
            .backend
            .extend(&self.server_key, &self.token, ttl)
            .await?
        {
            self.valid_until = sent_at + ttl;
            tracing::debug!(key = %self.key, ttl_ms = ttl.as_millis(), "pylock: extended");
            Ok(())
        } else {
            self.valid_until = sent_at;
            tracing::warn!(key = %self.key, "pylock: extend found the lock lost");
            Err(Error::Lost {
                key: self.key.clone(),
            })
        }
    }

    /// Releases the lock, if it is still ours.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`] if the lock had already expired or been taken over by another owner,
    /// i.e. the critical section did not run entirely under the lock (nothing was changed on
    /// the server); backend errors (then the guard retries once in the background, and the
    /// TTL ends the lock in any case).
    pub async fn release(mut self) -> Result<()> {
        let held = self.acquired_at.elapsed();
        let owned = self.backend.release(&self.server_key, &self.token).await?;
        self.settled = true;
        if owned {
            tracing::debug!(
                key = %self.key,
                held_us = held.as_micros(),
                "pylock: released"
            );
            Ok(())
        } else {
            tracing::warn!(
                key = %self.key,
                held_us = held.as_micros(),
                "pylock: the lock was lost before release"
            );
            Err(Error::Lost {
                key: self.key.clone(),
            })
        }
    }

    /// Gives up the guard without releasing: the lock stays held on the server until its TTL
    /// runs out, as if this process had crashed.
    pub fn abandon(mut self) {
        self.settled = true;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let backend = Arc::clone(&self.backend);
        let server_key = std::mem::take(&mut self.server_key);
        let token = self.token;
        let key = std::mem::take(&mut self.key);
        release_in_background(backend, server_key, token, key);
    }
}

/// Releases a lock whose owner went away without releasing it. Without a runtime the TTL
/// ends the lock instead. The release is owner-checked, so it can never free someone else's.
pub(crate) fn release_in_background(
    backend: Arc<dyn LockBackend>,
    server_key: String,
    token: Token,
    key: String,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                match backend.release(&server_key, &token).await {
                    Ok(_) => tracing::debug!(%key, "pylock: released in the background"),
                    Err(error) => tracing::warn!(
                        %key,
                        %error,
                        "pylock: background release failed; the lock expires by its TTL"
                    ),
                }
            });
        }
        Err(_) => {
            tracing::debug!(%key, "pylock: no runtime to release on; the lock expires by its TTL")
        }
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.key)
            .field("backend", &self.backend.name())
            .field("fence", &self.fence)
            .field("remaining", &self.remaining())
            .finish_non_exhaustive()
    }
}
