//! What a guard and its renewal task share about one hold: who holds what, until when it is
//! surely valid, and whether it has been lost.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::LockBackend;
use crate::error::{Error, Result};
use crate::token::Token;

/// Why a hold ended without its owner releasing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The guard's validity estimate ran out: the TTL passed without a (successful) renewal,
    /// for example because renewals were off, failed, reached the hold bound, or the process
    /// was paused. Another owner may hold the lock now.
    Expired,
    /// The server said this owner no longer holds the lock (an extend, renewal or release
    /// found it expired or held by someone else).
    TakenOver,
}

#[derive(Debug, Clone, Copy)]
struct State {
    /// The lock is surely ours until then (measured from when the request that set the TTL
    /// was sent, so time spent waiting for the reply counts against it).
    valid_until: Instant,
    lost: Option<LostReason>,
}

/// One hold of one lock.
#[derive(Debug)]
pub(crate) struct Hold {
    pub(crate) backend: Arc<dyn LockBackend>,
    pub(crate) key: String,
    pub(crate) server_key: String,
    pub(crate) token: Token,
    pub(crate) fence: Option<u64>,
    /// When the acquire request was sent.
    pub(crate) acquired_at: Instant,
    state: watch::Sender<State>,
}

impl Hold {
    pub(crate) fn new(
        backend: Arc<dyn LockBackend>,
        key: String,
        server_key: String,
        token: Token,
        fence: Option<u64>,
        sent_at: Instant,
        ttl: Duration,
    ) -> Self {
        let valid_until = sent_at + backend.capabilities().validity(ttl);
        Hold {
            backend,
            key,
            server_key,
            token,
            fence,
            acquired_at: sent_at,
            state: watch::Sender::new(State {
                valid_until,
                lost: None,
            }),
        }
    }

    pub(crate) fn remaining(&self) -> Duration {
        let state = *self.state.borrow();
        if state.lost.is_some() {
            return Duration::ZERO;
        }
        state.valid_until.saturating_duration_since(Instant::now())
    }

    /// Why the hold was lost, if it was: marked lost, or its validity has run out.
    pub(crate) fn lost_reason(&self) -> Option<LostReason> {
        let state = *self.state.borrow();
        state
            .lost
            .or_else(|| (Instant::now() >= state.valid_until).then_some(LostReason::Expired))
    }

    pub(crate) fn mark_lost(&self, reason: LostReason) {
        self.state.send_if_modified(|state| {
            let first = state.lost.is_none();
            if first {
                state.lost = Some(reason);
                tracing::warn!(key = %self.key, ?reason, "pylock: lock lost");
            }
            first
        });
    }

    /// Resolves once the hold is lost; see [`LostReason`].
    pub(crate) async fn lost(&self) -> LostReason {
        let mut changes = self.state.subscribe();
        loop {
            let state = *changes.borrow_and_update();
            if let Some(reason) = state.lost {
                return reason;
            }
            tokio::select! {
                // Extended (a later deadline) or marked lost: look again.
                changed = changes.changed() => {
                    if changed.is_err() {
                        return LostReason::Expired;
                    }
                }
                () = tokio::time::sleep_until(state.valid_until) => {
                    if self.state.borrow().valid_until <= Instant::now() {
                        self.mark_lost(LostReason::Expired);
                    }
                }
            }
        }
    }

    /// Sets the lock's TTL to `ttl` from now if this owner still holds it; a refusal marks
    /// the hold lost.
    pub(crate) async fn extend(&self, ttl: Duration) -> Result<()> {
        let sent_at = Instant::now();
        if self
            .backend
            .extend(&self.server_key, &self.token, ttl)
            .await?
        {
            let valid_until = sent_at + self.backend.capabilities().validity(ttl);
            self.state.send_if_modified(|state| {
                let still_held = state.lost.is_none();
                if still_held {
                    state.valid_until = valid_until;
                }
                still_held
            });
            tracing::debug!(key = %self.key, ttl_ms = ttl.as_millis(), "pylock: extended");
            Ok(())
        } else {
            self.mark_lost(LostReason::TakenOver);
            Err(Error::Lost {
                key: self.key.clone(),
            })
        }
    }

    /// Releases the lock if this owner still holds it; a refusal marks the hold lost.
    pub(crate) async fn release(&self) -> Result<()> {
        let held = self.acquired_at.elapsed();
        if self.backend.release(&self.server_key, &self.token).await? {
            tracing::debug!(key = %self.key, held_us = held.as_micros(), "pylock: released");
            Ok(())
        } else {
            self.mark_lost(LostReason::TakenOver);
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
}
