//! Release notices: how a waiter learns, without polling, that a lock was given back.
//!
//! A [`NoticeBoard`] keeps one channel per waited key. A waiter subscribes *before* its first
//! attempt and keeps the [`ReleaseNotice`] for as long as it waits; a notice posted at any
//! moment after the subscription (even between an attempt and the wait that follows it) is
//! not lost.
//!
//! A release wakes **one** waiter of the key, the one that has waited longest (or, if none
//! is parked at that moment, the next one to wait): it alone tries the lock, so a hand-off
//! costs the server one attempt per process however many wait, instead of one per waiter.
//! The woken waiter always tries (and a waiter woken but cancelled before its attempt was
//! answered passes the wake-up on); if it gets the lock while others of its process still
//! wait, the backend marks the lock so that its release is announced too. When the notice
//! channel itself fails, the backend says so ([`NoticeBoard::set_healthy`]), every waiter is
//! woken, and waiters poll until it is back.
//!
//! Fair waiters ([`Lock::fair`](crate::Lock::fair)) subscribe with their token
//! ([`NoticeBoard::subscribe_waiter`]) and are woken only by a notice addressed to them
//! ([`NoticeBoard::notify_waiter`]): the backend announces a release to the first in line.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

use crate::token::Token;

/// Called with a key when its last waiter goes away, so a backend can drop its server-side
/// subscription (e.g. Redis `UNSUBSCRIBE`).
pub type IdleHook = Box<dyn Fn(&str) + Send + Sync>;

/// Per-key release channels shared by a backend and its waiters.
///
/// Backends with notifications post to it when a lock is released ([`notify`](Self::notify));
/// [`LockBackend::subscribe`](crate::LockBackend::subscribe) hands out
/// [`subscribe`](Self::subscribe)d notices. Channels exist only while someone waits.
#[derive(Clone)]
pub struct NoticeBoard {
    inner: Arc<Inner>,
}

struct Inner {
    channels: Mutex<HashMap<String, Channel>>,
    on_idle: Option<IdleHook>,
    /// Whether notices can arrive now; shared with every notice of the board.
    healthy: Arc<AtomicBool>,
}

struct Channel {
    /// Wakes the waiters that take whoever comes (not fair).
    wake: Arc<Notify>,
    /// The fair waiters, each woken on its own, by the token (hex) it waits with.
    personal: HashMap<String, Arc<Notify>>,
    waiters: usize,
}

impl Default for NoticeBoard {
    fn default() -> Self {
        Self::build(None)
    }
}

impl NoticeBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty board that calls `on_idle(key)` when the last waiter of `key` goes away.
    pub fn with_idle_hook(on_idle: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self::build(Some(Box::new(on_idle)))
    }

    fn build(on_idle: Option<IdleHook>) -> Self {
        NoticeBoard {
            inner: Arc::new(Inner {
                channels: Mutex::default(),
                on_idle,
                healthy: Arc::new(AtomicBool::new(true)),
            }),
        }
    }

    /// Registers a waiter for `key`. The notice sees the [`notify`](Self::notify)s of `key`
    /// that happen after this call returns. The flag is `true` when this is the key's only
    /// waiter, i.e. the backend may need to start a server-side subscription.
    pub fn subscribe(&self, key: &str) -> (ReleaseNotice, bool) {
        self.join(key, None)
    }

    /// Registers a fair waiter for `key`, woken by [`notify_waiter`](Self::notify_waiter)
    /// with its token (and by [`notify_all`](Self::notify_all)), not by
    /// [`notify`](Self::notify). The flag is as for [`subscribe`](Self::subscribe).
    pub fn subscribe_waiter(&self, key: &str, token: &Token) -> (ReleaseNotice, bool) {
        self.join(key, Some(token.to_hex()))
    }

    fn join(&self, key: &str, token: Option<String>) -> (ReleaseNotice, bool) {
        let mut channels = self.channels();
        let channel = channels.entry(key.to_owned()).or_insert_with(|| Channel {
            wake: Arc::new(Notify::new()),
            personal: HashMap::new(),
            waiters: 0,
        });
        channel.waiters += 1;
        let first = channel.waiters == 1;
        let wake = match &token {
            Some(token) => Arc::clone(
                channel
                    .personal
                    .entry(token.clone())
                    .or_insert_with(|| Arc::new(Notify::new())),
            ),
            None => Arc::clone(&channel.wake),
        };
        let notice = ReleaseNotice {
            unreliable: false,
            sources: vec![Source {
                wake,
                healthy: Arc::clone(&self.inner.healthy),
                _membership: Membership {
                    board: self.clone(),
                    key: key.to_owned(),
                    token,
                },
            }],
        };
        (notice, first)
    }

    /// A release of `key`: wakes the waiter of `key` that has waited longest, or, if none is
    /// waiting right now, the next one to wait. Returns whether `key` has waiters.
    pub fn notify(&self, key: &str) -> bool {
        match self.channels().get(key) {
            Some(channel) => {
                channel.wake.notify_one();
                true
            }
            None => false,
        }
    }

    /// A release (or a free lock) announced to the fair waiter with `token` (hex): wakes it
    /// if it waits here. Otherwise wakes a waiter that is not fair, if any (one of them may
    /// take the lock: a lock is fair only if all its waiters are). Returns whether someone
    /// was woken.
    pub fn notify_waiter(&self, key: &str, token: &str) -> bool {
        match self.channels().get(key) {
            Some(channel) => match channel.personal.get(token) {
                Some(wake) => {
                    wake.notify_one();
                    true
                }
                None if channel.waiters > channel.personal.len() => {
                    channel.wake.notify_one();
                    true
                }
                None => false,
            },
            None => false,
        }
    }

    /// Wakes every waiter of `key`, e.g. after notices may have been missed (a reconnect).
    /// Returns whether `key` has waiters.
    pub fn notify_all(&self, key: &str) -> bool {
        match self.channels().get(key) {
            Some(channel) => {
                channel.wake.notify_waiters();
                // And a waiter between an attempt and its wait, which `notify_waiters` misses.
                channel.wake.notify_one();
                for wake in channel.personal.values() {
                    wake.notify_one();
                }
                true
            }
            None => false,
        }
    }

    /// The number of waiters of `key` now, in this process. A backend that marks locks for
    /// announcement uses it: a lock taken while others here still wait must be announced
    /// when it is released.
    pub fn waiters(&self, key: &str) -> usize {
        self.channels()
            .get(key)
            .map_or(0, |channel| channel.waiters)
    }

    /// Whether `key` has waiters now.
    pub fn is_waited(&self, key: &str) -> bool {
        self.channels().contains_key(key)
    }

    /// The keys that have waiters now, e.g. to subscribe again after a reconnect.
    pub fn waited_keys(&self) -> Vec<String> {
        self.channels().keys().cloned().collect()
    }

    /// Says whether notices can arrive now. Going unhealthy (the backend's notice connection
    /// dropped) wakes every waiter, which then polls with backoff until the board is healthy
    /// again; a backend going healthy again should [`notify_all`](Self::notify_all) the keys
    /// it could not hear about meanwhile.
    pub fn set_healthy(&self, healthy: bool) {
        let was = self.inner.healthy.swap(healthy, Ordering::SeqCst);
        if was && !healthy {
            for key in self.waited_keys() {
                self.notify_all(&key);
            }
        }
    }

    /// Whether notices can arrive now.
    pub fn is_healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::SeqCst)
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        // A panic while holding this lock cannot leave the map inconsistent (each update is
        // one insert, increment or remove), so a poisoned lock is still usable.
        self.inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn leave(&self, key: &str, token: Option<&str>) {
        let idle = {
            let mut channels = self.channels();
            match channels.get_mut(key) {
                Some(channel) if channel.waiters > 1 => {
                    channel.waiters -= 1;
                    if let Some(token) = token {
                        channel.personal.remove(token);
                    }
                    false
                }
                Some(_) => {
                    channels.remove(key);
                    true
                }
                None => false,
            }
        };
        if idle && let Some(on_idle) = &self.inner.on_idle {
            on_idle(key);
        }
    }
}

impl fmt::Debug for NoticeBoard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoticeBoard")
            .field("waited_keys", &self.channels().len())
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// A waiter's subscription to the release notices of one key.
///
/// Dropping it ends the subscription.
pub struct ReleaseNotice {
    /// One per server that announces the lock's releases (several for Redlock).
    sources: Vec<Source>,
    /// Set by [`ReleaseNotice::unreliable`]: the waiter polls even while the board is healthy.
    unreliable: bool,
}

struct Source {
    wake: Arc<Notify>,
    healthy: Arc<AtomicBool>,
    _membership: Membership,
}

impl ReleaseNotice {
    /// A notice that fires when any of `notices` does, for a lock kept on several servers.
    pub fn any(notices: Vec<ReleaseNotice>) -> Self {
        let unreliable = notices.iter().all(|n| n.unreliable) && !notices.is_empty();
        ReleaseNotice {
            sources: notices.into_iter().flat_map(|n| n.sources).collect(),
            unreliable,
        }
    }

    /// This notice may not be delivered in time (e.g. it is read by a task on another
    /// runtime, which may not be running): the waiter still wakes when it arrives, but also
    /// polls as if the notices were down.
    pub fn unreliable(mut self) -> Self {
        self.unreliable = true;
        self
    }

    /// Resolves once this waiter's turn to try has come: a release it was chosen to act on
    /// since the subscription or the previous call, or a wake-up of all waiters.
    ///
    /// If the backend dropped its board (it was shut down), this never resolves; the wait
    /// loop's bounded poll still ends the wait.
    pub async fn released(&mut self) {
        if self.sources.is_empty() {
            return std::future::pending().await;
        }
        let mut waits: Vec<Pin<Box<Notified<'_>>>> = self
            .sources
            .iter()
            .map(|source| Box::pin(source.wake.notified()))
            .collect();
        // The waits not chosen are dropped; one that was woken meanwhile passes its wake-up
        // on to the next waiter (tokio's `Notified` does so on drop).
        std::future::poll_fn(|cx| {
            for wait in &mut waits {
                if wait.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await;
    }

    /// Whether a release can reach this waiter now: some of its servers' notice channels
    /// are up. While not, the waiter polls.
    pub fn is_healthy(&self) -> bool {
        !self.unreliable
            && self
                .sources
                .iter()
                .any(|source| source.healthy.load(Ordering::SeqCst))
    }

    /// Gives a wake-up this waiter received but could not act on (it was cancelled before
    /// its attempt was answered) to the next waiter.
    pub fn pass_on(&self) {
        for source in &self.sources {
            source.wake.notify_one();
        }
    }
}

impl fmt::Debug for ReleaseNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self
            .sources
            .iter()
            .map(|s| s._membership.key.as_str())
            .collect();
        f.debug_struct("ReleaseNotice")
            .field("keys", &keys)
            .field("healthy", &self.is_healthy())
            .finish()
    }
}

/// Keeps a waiter counted on its board until the notice is dropped.
struct Membership {
    board: NoticeBoard,
    key: String,
    /// A fair waiter's token (hex).
    token: Option<String>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.board.leave(&self.key, self.token.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_notice_posted_before_the_wait_is_not_lost() {
        let board = NoticeBoard::new();
        let (mut notice, first) = board.subscribe("k");
        assert!(first);
        // The release lands between the waiter's attempt and its wait.
        assert!(board.notify("k"));
        tokio::time::timeout(Duration::from_secs(5), notice.released())
            .await
            .expect("the earlier notice wakes the waiter");
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_wakes_the_longest_waiting_one_and_an_outage_wakes_all() {
        let board = NoticeBoard::new();
        let (mut first, _) = board.subscribe("k");
        let (mut second, _) = board.subscribe("k");
        let limit = Duration::from_secs(1);
        let (a, b) = tokio::join!(tokio::time::timeout(limit, first.released()), async {
            tokio::task::yield_now().await;
            board.notify("k");
            tokio::time::timeout(limit, second.released()).await
        });
        assert!(a.is_ok(), "the longest-waiting waiter was woken");
        assert!(b.is_err(), "one release woke two waiters");
        // The notice channel goes down: everyone is woken, and polls while it is down.
        let (a, b, ()) = tokio::join!(
            tokio::time::timeout(limit, first.released()),
            tokio::time::timeout(limit, second.released()),
            async {
                tokio::task::yield_now().await;
                board.set_healthy(false);
            }
        );
        assert!(a.is_ok() && b.is_ok(), "an outage wakes every waiter");
        assert!(!first.is_healthy() && !board.is_healthy());
        board.set_healthy(true);
        assert!(first.is_healthy());
        assert_eq!(board.waiters("k"), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn notices_before_subscribing_do_not_count() {
        let board = NoticeBoard::new();
        assert!(!board.notify("k"));
        let (mut notice, _) = board.subscribe("k");
        let waited = tokio::time::timeout(Duration::from_secs(1), notice.released()).await;
        assert!(waited.is_err(), "no release happened after subscribing");
    }

    #[tokio::test(start_paused = true)]
    async fn any_of_several_notices_wakes() {
        let (first, second) = (NoticeBoard::new(), NoticeBoard::new());
        let mut notice = ReleaseNotice::any(vec![first.subscribe("k").0, second.subscribe("k").0]);
        let quiet = tokio::time::timeout(Duration::from_secs(1), notice.released()).await;
        assert!(quiet.is_err(), "nothing was released");
        second.notify("k");
        tokio::time::timeout(Duration::from_secs(1), notice.released())
            .await
            .expect("the second server's notice wakes the waiter");
        assert!(first.is_waited("k") && second.is_waited("k"));
        drop(notice);
        assert!(!first.is_waited("k") && !second.is_waited("k"));
    }

    #[test]
    fn channels_live_while_someone_waits_and_the_hook_fires_once() {
        let idle = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&idle);
        let board = NoticeBoard::with_idle_hook(move |key| {
            assert_eq!(key, "k");
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let (a, first_a) = board.subscribe("k");
        let (b, first_b) = board.subscribe("k");
        assert!(first_a && !first_b);
        assert_eq!(board.waited_keys(), vec!["k".to_owned()]);
        assert!(board.is_waited("k"));
        drop(a);
        assert_eq!(idle.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(idle.load(Ordering::SeqCst), 1);
        assert!(board.waited_keys().is_empty());
        assert!(!board.is_waited("k"));
        assert!(!board.notify("k"));
    }
}
