//! What a guard and its renewal task share about one hold: who holds what, until when it is
//! surely valid, and whether it has been lost.
//!
//! Each hold is a `pylock.hold` tracing span (INFO), open from the acquire until the guard
//! and its renewal task are gone, with `key`, `backend`, `fence`, and at its end `held_us`
//! and `end`: `released`, `lost`, `abandoned` or `dropped` (released in the background).
//! Renewals, losses and the release are events inside it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Span;

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
    /// The `pylock.hold` span.
    pub(crate) span: Span,
    /// Whether the span's `end` was recorded: the first way a hold ends is the one reported.
    ended: AtomicBool,
}

/// How a hold ended, as the `end` field of its span says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Released,
    Lost,
    Abandoned,
    Dropped,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Released => "released",
            End::Lost => "lost",
            End::Abandoned => "abandoned",
            End::Dropped => "dropped",
        }
    }
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
        // Not a child of the acquire's span, which ends now: the hold lasts longer.
        let span = tracing::info_span!(
            parent: None,
            "pylock.hold",
            key = %key,
            backend = backend.name(),
            fence,
            held_us = tracing::field::Empty,
            end = tracing::field::Empty,
        );
        span.follows_from(Span::current());
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
            span,
            ended: AtomicBool::new(false),
        }
    }

    /// Records how the hold ended, once; the span closes when the guard and its renewal task
    /// are gone.
    pub(crate) fn end(&self, end: End) {
        if !self.ended.swap(true, Ordering::Relaxed) {
            self.span
                .record("held_us", self.acquired_at.elapsed().as_micros())
                .record("end", end.as_str());
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
                self.span.in_scope(|| {
                    tracing::warn!(key = %self.key, ?reason, "pylock: lock lost");
                });
                self.end(End::Lost);
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
            self.span.in_scope(|| {
                tracing::debug!(key = %self.key, ttl_ms = ttl.as_millis(), "pylock: extended");
            });
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
            self.span.in_scope(|| {
                tracing::debug!(key = %self.key, held_us = held.as_micros(), "pylock: released");
            });
            self.end(End::Released);
            Ok(())
        } else {
            self.mark_lost(LostReason::TakenOver);
            self.span.in_scope(|| {
                tracing::warn!(
                    key = %self.key,
                    held_us = held.as_micros(),
                    "pylock: the lock was lost before release"
                );
            });
            Err(Error::Lost {
                key: self.key.clone(),
            })
        }
    }
}
