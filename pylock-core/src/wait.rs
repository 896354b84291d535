//! The wait loop: the one place that decides when to try, how long to sleep, and when to give
//! up.
//!
//! 1. Try. On success the guard's validity starts from when this attempt was *sent*. An
//!    uncontended acquire is this one round trip.
//! 2. Held, and time left: subscribe to release notices (if the backend has them) and try
//!    again at once. From here on every attempt is made while subscribed, so a release
//!    between an attempt and the following wait still wakes us (no lost wake-ups).
//! 3. Sleep until a release notice, the holder's remaining TTL, or the deadline, whichever is
//!    first; then try again. A release wakes one waiter per process (see
//!    [`crate::notice`]), so a waiter listening to healthy notices does not poll: idle, it
//!    costs the server one attempt per holder TTL. Without notices (or while the backend says
//!    they are down) it polls with jittered backoff, never sleeping past the holder's TTL.
//!    The last attempt happens at the deadline. A fair waiter tries at least every half of
//!    its patience, its sign of life, and leaves the queue if it gives up.
//!
//! The deadline bounds the whole call: a subscription still unanswered at the deadline is
//! abandoned there, and an attempt [`FINAL_ATTEMPT_GRACE`] after it (so that the attempt made
//! at the deadline has a round trip's chance), although a backend's own response timeout may
//! be longer. So an acquire returns within its timeout plus that grace plus scheduling,
//! whatever the server does. A timeout of zero means one attempt, bounded by the backend's own
//! call limit instead.
//!
//! All attempts of one acquire use the same owner token, so an attempt whose reply was lost
//! (the server set the key, the connection dropped) is recognised as ours by the next one.
//! If the acquire ends without a guard while such an attempt is unsettled (an error, a
//! cancellation), the token is released in the background so no lock is left behind.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::backend::{Attempt, LockBackend};
use crate::error::{Error, Result};
use crate::guard::{LockGuard, release_in_background};
use crate::hold::Hold;
use crate::notice::ReleaseNotice;
use crate::request::Request;
use crate::settings::Backoff;
use crate::token::Token;

/// How an acquire ended, short of an error.
#[derive(Debug)]
pub(crate) enum Outcome {
    Acquired(LockGuard),
    TimedOut { waited: Duration },
}

/// How long after the deadline an attempt already sent may still be answered: the last
/// attempt is made at the deadline, and deserves a round trip. The documented margin of every
/// acquire's timeout.
pub const FINAL_ATTEMPT_GRACE: Duration = Duration::from_millis(20);

/// Never sleep less than this between attempts, so a backend reporting a zero remaining TTL
/// over and over cannot make a waiter spin.
const MIN_PAUSE: Duration = Duration::from_millis(1);

/// One acquire, as a `pylock.acquire` tracing span (INFO) with `key` and `backend`, and at
/// its end `attempts`, `waited_us` and `outcome` (`acquired`, `timeout` or `error`). Each
/// attempt is a DEBUG event inside it.
pub(crate) async fn acquire(request: Request) -> Result<Outcome> {
    let span = tracing::info_span!(
        "pylock.acquire",
        key = %request.key,
        backend = request.backend.name(),
        attempts = tracing::field::Empty,
        waited_us = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut attempts = 0;
    let result = wait_for(request, &mut attempts)
        .instrument(span.clone())
        .await;
    span.record("attempts", attempts)
        .record("waited_us", started.elapsed().as_micros())
        .record(
            "outcome",
            match &result {
                Ok(Outcome::Acquired(_)) => "acquired",
                Ok(Outcome::TimedOut { .. }) => "timeout",
                Err(_) => "error",
            },
        );
    result
}

async fn wait_for(request: Request, attempts: &mut u32) -> Result<Outcome> {
    let started = Instant::now();
    let deadline = request.deadline(started)?;
    let Request {
        backend,
        retry,
        key,
        server_key,
        expires,
        timeout,
        renewal,
        fair,
    } = request;
    let cutoff = deadline
        .checked_add(FINAL_ATTEMPT_GRACE)
        .unwrap_or(deadline);
    let token = Token::generate()?;

    let mut notice: Option<Listening> = None;
    let mut subscribed = false;
    let mut unsettled = Unsettled::new(Arc::clone(&backend), &server_key, token, &key);
    let mut pauses = Pauses::new(retry, token);
    // Whether the server ever said the lock was held: at the deadline, that makes the outcome
    // a timeout rather than an outage.
    let mut seen_held = false;
    loop {
        *attempts += 1;
        let attempts = *attempts;
        let sent_at = Instant::now();
        unsettled.arm();
        let attempt = match fair {
            Some(patience) => {
                unsettled.queued = true;
                backend.try_acquire_fair(&server_key, &token, expires, patience)
            }
            None => backend.try_acquire(&server_key, &token, expires),
        };
        let attempt = if timeout.is_zero() {
            attempt.await
        } else {
            match tokio::time::timeout_at(cutoff, attempt).await {
                Ok(attempt) => attempt,
                // Unanswered in time: `unsettled` gives back whatever it got.
                Err(_) => return gave_up(started, attempts, seen_held, backend.name(), timeout),
            }
        };
        if let Some(listening) = notice.as_mut() {
            // Answered: a wake-up that led here has been acted on.
            listening.owes_attempt = false;
        }
        let (error, holder_remaining) = match attempt {
            Ok(Attempt::Acquired { fence }) => {
                unsettled.disarm();
                // Taking the lock left the queue.
                unsettled.queued = false;
                tracing::debug!(
                    attempts,
                    waited_us = started.elapsed().as_micros(),
                    fence,
                    "pylock: acquired"
                );
                let hold = Hold::new(backend, key, server_key, token, fence, sent_at, expires);
                return Ok(Outcome::Acquired(LockGuard::new(hold, renewal)));
            }
            Ok(Attempt::Held { remaining }) => {
                unsettled.disarm();
                seen_held = true;
                tracing::debug!(
                    attempts,
                    holder_remaining_ms = remaining.map(|r| r.as_millis()),
                    "pylock: held by another"
                );
                (None, remaining)
            }
            Err(error) if error.is_transient() => (Some(error), None),
            Err(error) => return Err(error),
        };

        let now = Instant::now();
        if now >= deadline {
            let waited = now - started;
            tracing::debug!(attempts, waited_us = waited.as_micros(), "pylock: gave up");
            return match error {
                Some(error) => Err(error),
                None => Ok(Outcome::TimedOut { waited }),
            };
        }
        if let Some(error) = &error {
            tracing::debug!(%error, "pylock: backend unavailable, retrying");
        }
        if !subscribed && backend.capabilities().notifications {
            subscribed = true;
            // A subscription unanswered at the deadline means polling; the attempt that
            // follows ends the call.
            let subscription = subscribe(backend.as_ref(), &server_key, fair.map(|_| &token));
            notice = tokio::time::timeout_at(deadline, subscription)
                .await
                .unwrap_or(Ok(None))?
                .map(|notice| Listening {
                    notice,
                    owes_attempt: false,
                });
            if notice.is_some() {
                // Try again at once: a release between the last attempt and the subscription
                // sent its notice to nobody.
                continue;
            }
        }
        // Listening to healthy notices, a waiter is woken when its turn comes, so it sleeps
        // until the holder's TTL would end the lock (a holder that died releases nothing):
        // idle waiters cost the server one attempt per TTL each. Otherwise it polls.
        let listening = error.is_none() && notice.as_ref().is_some_and(|l| l.notice.is_healthy());
        let mut pause = match holder_remaining {
            Some(remaining) if listening => remaining.max(MIN_PAUSE),
            // Free, but another fair waiter's turn: its hand-off will be announced.
            None if listening && fair.is_some() => deadline - now,
            Some(remaining) => pauses.next().min(remaining.max(MIN_PAUSE)),
            None => pauses.next(),
        }
        .min(deadline - now);
        if let Some(patience) = fair {
            // A fair waiter keeps its place by trying at least every half of its patience (the
            // other half is slack for a slow answer).
            pause = pause.min(patience / 2).max(MIN_PAUSE);
        }
        match notice.as_mut() {
            Some(listening) => {
                tokio::select! {
                    () = listening.notice.released() => listening.owes_attempt = true,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => tokio::time::sleep(pause).await,
        }
    }
}

/// The end of an acquire whose last attempt was still unanswered at the deadline: a timeout
/// if the lock was seen held, otherwise the server did not answer in time.
fn gave_up(
    started: Instant,
    attempts: u32,
    seen_held: bool,
    backend: &'static str,
    timeout: Duration,
) -> Result<Outcome> {
    let waited = started.elapsed();
    tracing::debug!(
        attempts,
        waited_us = waited.as_micros(),
        "pylock: deadline passed mid-attempt"
    );
    if seen_held {
        Ok(Outcome::TimedOut { waited })
    } else {
        Err(Error::Unavailable {
            backend,
            context: format!(
                "acquiring a lock: no answer from the server within the timeout of {timeout:?}"
            ),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        })
    }
}

/// Remembers that an attempt's outcome is unknown (in flight, or failed without a clear
/// answer), and releases the token in the background if the acquire ends that way.
///
/// For a fair acquire it also remembers that the token may be in the lock's queue, and takes
/// it out in the background if the acquire ends without the lock, so that the waiters behind
/// are not held up.
struct Unsettled {
    backend: Arc<dyn LockBackend>,
    server_key: String,
    token: Token,
    key: String,
    armed: bool,
    queued: bool,
}

impl Unsettled {
    fn new(backend: Arc<dyn LockBackend>, server_key: &str, token: Token, key: &str) -> Self {
        Unsettled {
            backend,
            server_key: server_key.to_owned(),
            token,
            key: key.to_owned(),
            armed: false,
            queued: false,
        }
    }

    fn arm(&mut self) {
        self.armed = true;
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if self.queued
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let (backend, server_key, token) = (
                Arc::clone(&self.backend),
                self.server_key.clone(),
                self.token,
            );
            crate::background::spawn(&runtime, async move {
                if let Err(error) = backend.leave_queue(&server_key, &token).await {
                    tracing::debug!(%error, "pylock: leaving the queue failed; the waiter lapses");
                }
            });
        }
        if self.armed {
            release_in_background(
                Arc::clone(&self.backend),
                std::mem::take(&mut self.server_key),
                self.token,
                std::mem::take(&mut self.key),
            );
        }
    }
}

/// A waiter's subscription, and whether it was woken to try and has not had an answer yet:
/// if the acquire ends then (cancelled, or at the deadline), the wake-up goes to the next
/// waiter rather than being lost with this one.
struct Listening {
    notice: ReleaseNotice,
    owes_attempt: bool,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if self.owes_attempt {
            self.notice.pass_on();
        }
    }
}

/// Subscribes to release notices of `server_key`. An unreachable backend means polling
/// instead, not failing: the attempts will report the outage if it lasts.
async fn subscribe(
    backend: &dyn LockBackend,
    server_key: &str,
    fair: Option<&Token>,
) -> Result<Option<ReleaseNotice>> {
    let subscription = match fair {
        Some(token) => backend.subscribe_waiter(server_key, token).await,
        None => backend.subscribe(server_key).await,
    };
    match subscription {
        Ok(notice) => Ok(notice),
        Err(error) if error.is_transient() => {
            tracing::debug!(%error, "pylock: no release notices, polling");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// Jittered, capped exponential pauses: each is drawn from the upper half of the current
/// step, so waiters spread out without ever pausing much less than the step.
struct Pauses {
    step: Duration,
    max: Duration,
    rng: u64,
}

impl Pauses {
    fn new(backoff: Backoff, token: Token) -> Self {
        // The token is fresh randomness; seeding from it keeps waiters apart at no cost.
        let bytes = token.as_bytes();
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&bytes[..8]);
        Pauses {
            step: backoff.initial.max(MIN_PAUSE),
            max: backoff.max.max(backoff.initial).max(MIN_PAUSE),
            rng: u64::from_le_bytes(seed) | 1,
        }
    }

    fn next(&mut self) -> Duration {
        // xorshift64: statistical quality is all jitter needs.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = self.step / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(self.rng % nanos.saturating_add(1));
        let pause = half + jitter;
        self.step = (self.step * 2).min(self.max);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capabilities, Locks, MemoryBackend};

    /// The memory backend, with attempts that take a while to be answered.
    #[derive(Debug)]
    struct SlowAttempts(MemoryBackend);

    #[async_trait::async_trait]
    impl LockBackend for SlowAttempts {
        fn name(&self) -> &'static str {
            "slow"
        }
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.0.try_acquire(key, token, ttl).await
        }
        async fn release(&self, key: &str, token: &Token) -> Result<bool> {
            self.0.release(key, token).await
        }
        async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
            self.0.extend(key, token, ttl).await
        }
        async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
            self.0.subscribe(key).await
        }
    }

    /// A release wakes one waiter; cancelled before its attempt is answered, it must pass
    /// the wake-up on, or the next waiter sleeps until the holder's TTL.
    #[tokio::test(flavor = "current_thread")]
    async fn a_woken_waiter_cancelled_mid_attempt_passes_its_wake_up_on() {
        let locks = Locks::new(Arc::new(SlowAttempts(MemoryBackend::new())))
            .expires(Duration::from_secs(60));
        let holder = locks.lock("baton").acquire().await.unwrap();
        let first = tokio::spawn({
            let lock = locks.lock("baton").timeout(Duration::from_secs(30));
            async move { lock.acquire().await.map(LockGuard::abandon) }
        });
        // The first waiter tries, subscribes, tries again and parks: it is first in line.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = tokio::spawn({
            let lock = locks.lock("baton").timeout(Duration::from_secs(3));
            async move { lock.acquire().await.map(LockGuard::abandon) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.release().await.unwrap();
        // The first waiter is woken and is now in its (slow) attempt: cancel it there.
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        second
            .await
            .unwrap()
            .expect("the second waiter got the wake-up the first could not use");
    }

    #[test]
    fn pauses_grow_with_jitter_and_stay_capped() {
        let backoff = Backoff::new(Duration::from_millis(4), Duration::from_millis(50));
        let mut pauses = Pauses::new(backoff, Token::generate().unwrap());
        let mut step = Duration::from_millis(4);
        for _ in 0..20 {
            let pause = pauses.next();
            assert!(pause >= step / 2 && pause <= step, "{pause:?} vs {step:?}");
            step = (step * 2).min(Duration::from_millis(50));
        }
    }
}
