//! [`LockGuard`]: proof of holding a lock, and the only way to release or extend it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::backend::LockBackend;
use crate::error::Result;
use crate::hold::{End, Hold, LostReason};
use crate::renewal::renew;
use crate::request::{Renewal, check_ttl};
use crate::token::Token;

/// A held lock. Release it with [`release`](Self::release).
///
/// Dropped without release (an early return, a panic, a cancelled task), it is released in the
/// background on the current tokio runtime; without a runtime it expires by its TTL.
///
/// A guard knows when its lock is lost ([`is_lost`](Self::is_lost), [`lost`](Self::lost)):
/// when its validity estimate runs out, or when the server says another owner has it. With
/// [`Lock::auto_renew`](crate::Lock::auto_renew) it extends itself in the background.
#[must_use = "dropping the guard releases the lock at once (in the background)"]
pub struct LockGuard {
    hold: Arc<Hold>,
    /// The auto-renewal task, if any; stopped on release and drop.
    renewal: Option<AbortHandle>,
    /// Set once the server has answered a release, so that `Drop` has nothing left to do.
    settled: bool,
}

impl LockGuard {
    pub(crate) fn new(hold: Hold, renewal: Option<Renewal>) -> Self {
        let hold = Arc::new(hold);
        let renewal = renewal.map(|renewal| {
            let task = renew(Arc::clone(&hold), renewal.ttl, renewal.max_hold);
            tokio::spawn(task.instrument(hold.span.clone())).abort_handle()
        });
        LockGuard {
            hold,
            renewal,
            settled: false,
        }
    }

    /// The lock's name as given (without prefix).
    pub fn key(&self) -> &str {
        &self.hold.key
    }

    /// The key on the server (prefix included).
    pub fn server_key(&self) -> &str {
        &self.hold.server_key
    }

    /// The fencing token of this hold, if the backend gives them: strictly greater than the
    /// token of any earlier hold of the same key. Pass it to the resource you protect, and have
    /// it refuse writes with a smaller token than it has seen.
    pub fn fence(&self) -> Option<u64> {
        self.hold.fence
    }

    /// How long the lock is surely still ours: the TTL minus the time since the request that
    /// set it was sent, on the monotonic clock. Zero means it may have expired, or was lost.
    pub fn remaining(&self) -> Duration {
        self.hold.remaining()
    }

    /// How long the lock has been held, measured from when the acquire request was sent.
    pub fn held_for(&self) -> Duration {
        self.hold.acquired_at.elapsed()
    }

    /// Whether the lock is (or may be) lost: its validity ran out, or the server said another
    /// owner has it. Work that needs the lock should stop.
    pub fn is_lost(&self) -> bool {
        self.hold.lost_reason().is_some()
    }

    /// Resolves when the lock is lost, with the reason; never, while it is held (and, with
    /// auto-renewal, renewed). Use it to stop work that must not go on unprotected:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pylock_core::Result<()> {
    /// use std::time::Duration;
    /// use pylock_core::{LostReason, Locks};
    ///
    /// let locks = Locks::connect("memory://")?;
    /// let guard = locks.lock("job").expires(Duration::from_millis(50)).acquire().await?;
    /// tokio::select! {
    ///     reason = guard.lost() => assert_eq!(reason, LostReason::Expired),
    ///     () = tokio::time::sleep(Duration::from_secs(5)) => unreachable!("work outlived its lock"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn lost(&self) -> LostReason {
        self.hold.lost().await
    }

    /// Sets the lock's TTL to `ttl` from now, if it is still ours.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`](crate::Error::Lost) if the lock expired or another owner holds it
    /// (nothing was changed); [`Error::InvalidOption`](crate::Error::InvalidOption) for a zero
    /// or too long `ttl`; backend errors.
    pub async fn extend(&mut self, ttl: Duration) -> Result<()> {
        check_ttl("ttl", ttl, self.hold.backend.as_ref())?;
        self.hold.extend(ttl).await
    }

    /// Releases the lock, if it is still ours.
    ///
    /// # Errors
    ///
    /// [`Error::Lost`](crate::Error::Lost) if the lock had already expired or been taken over
    /// by another owner, i.e. the critical section did not run entirely under the lock
    /// (nothing was changed on the server); backend errors (then the guard retries once in
    /// the background, and the TTL ends the lock in any case).
    pub async fn release(mut self) -> Result<()> {
        self.stop_renewal();
        let result = self.hold.release().await;
        if !matches!(result, Err(ref e) if e.is_transient()) {
            self.settled = true;
        }
        result
    }

    /// Gives up the guard without releasing: the lock stays held on the server until its TTL
    /// runs out, as if this process had crashed. Auto-renewal stops.
    pub fn abandon(mut self) {
        self.stop_renewal();
        self.hold.end(End::Abandoned);
        self.settled = true;
    }

    fn stop_renewal(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop_renewal();
        if !self.settled {
            let hold = &self.hold;
            hold.end(End::Dropped);
            release_in_background(
                Arc::clone(&hold.backend),
                hold.server_key.clone(),
                hold.token,
                hold.key.clone(),
            );
        }
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
            crate::background::spawn(&runtime, async move {
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
        Err(_) => tracing::debug!(
            %key,
            "pylock: no runtime to release on; the lock expires by its TTL"
        ),
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.hold.key)
            .field("backend", &self.hold.backend.name())
            .field("fence", &self.hold.fence)
            .field("remaining", &self.remaining())
            .field("auto_renew", &self.renewal.is_some())
            .finish_non_exhaustive()
    }
}
