//! Release notices: how a waiter learns, without polling, that a lock was given back.
//!
//! A [`NoticeBoard`] keeps one channel per waited key. A waiter subscribes *before* its first
//! attempt and keeps the [`ReleaseNotice`] for as long as it waits; a notice posted at any
//! moment after the subscription (even between an attempt and the wait that follows it) is
//! seen, so no wake-up is lost. Notices are coalesced: a waiter that was busy while two
//! releases happened wakes once, tries, and finds out for itself.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

use tokio::sync::watch;

/// Called with a key when its last waiter goes away, so a backend can drop its server-side
/// subscription (e.g. Redis `UNSUBSCRIBE`).
pub type IdleHook = Box<dyn Fn(&str) + Send + Sync>;

/// Per-key release channels shared by a backend and its waiters.
///
/// Backends with notifications post to it when a lock is released ([`notify`](Self::notify));
/// [`LockBackend::subscribe`](crate::LockBackend::subscribe) hands out
/// [`subscribe`](Self::subscribe)d notices. Channels exist only while someone waits.
#[derive(Clone, Default)]
pub struct NoticeBoard {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    channels: Mutex<HashMap<String, Channel>>,
    on_idle: Option<IdleHook>,
}

struct Channel {
    sender: watch::Sender<u64>,
    waiters: usize,
}

impl NoticeBoard {
    /// An empty board.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty board that calls `on_idle(key)` when the last waiter of `key` goes away.
    pub fn with_idle_hook(on_idle: impl Fn(&str) + Send + Sync + 'static) -> Self {
        NoticeBoard {
            inner: Arc::new(Inner {
                channels: Mutex::default(),
                on_idle: Some(Box::new(on_idle)),
            }),
        }
    }

    /// Registers a waiter for `key`. The notice sees every [`notify`](Self::notify) of `key`
    /// that happens after this call returns. The flag is `true` when this is the key's only
    /// waiter, i.e. the backend may need to start a server-side subscription.
    pub fn subscribe(&self, key: &str) -> (ReleaseNotice, bool) {
        let mut channels = self.channels();
        let channel = channels.entry(key.to_owned()).or_insert_with(|| Channel {
            sender: watch::Sender::new(0),
            waiters: 0,
        });
        channel.waiters += 1;
        let first = channel.waiters == 1;
        let notice = ReleaseNotice {
            source: Source {
                receivers: vec![channel.sender.subscribe()],
                _memberships: vec![Membership {
                    board: self.clone(),
                    key: key.to_owned(),
                }],
            },
        };
        (notice, first)
    }

    /// Wakes every current waiter of `key`. Returns whether anyone was waiting.
    pub fn notify(&self, key: &str) -> bool {
        match self.channels().get(key) {
            Some(channel) => {
                channel.sender.send_modify(|generation| *generation += 1);
                true
            }
            None => false,
        }
    }

    /// Whether `key` has waiters now.
    pub fn is_waited(&self, key: &str) -> bool {
        self.channels().contains_key(key)
    }

    /// The keys that have waiters now, e.g. to subscribe again after a reconnect.
    pub fn waited_keys(&self) -> Vec<String> {
        self.channels().keys().cloned().collect()
    }

    fn channels(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        // A panic while holding this lock cannot leave the map inconsistent (each update is
        // one insert, increment or remove), so a poisoned lock is still usable.
        self.inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn leave(&self, key: &str) {
        let idle = {
            let mut channels = self.channels();
            match channels.get_mut(key) {
                Some(channel) if channel.waiters > 1 => {
                    channel.waiters -= 1;
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
            .finish()
    }
}

/// A waiter's subscription to the release notices of one key.
///
/// Dropping it ends the subscription.
pub struct ReleaseNotice {
    source: Source,
}

struct Source {
    /// One channel per server that announces the lock's releases (several for Redlock).
    receivers: Vec<watch::Receiver<u64>>,
    _memberships: Vec<Membership>,
}

impl ReleaseNotice {
    /// A notice fed by a backend's own `watch` channel: every change of the value after this
    /// call counts as a release. For backends that do not use [`NoticeBoard`].
    pub fn from_receiver(mut receiver: watch::Receiver<u64>) -> Self {
        receiver.mark_unchanged();
        ReleaseNotice {
            source: Source {
                receivers: vec![receiver],
                _memberships: Vec::new(),
            },
        }
    }

    /// A notice that fires when any of `notices` does, for a lock kept on several servers.
    pub fn any(notices: Vec<ReleaseNotice>) -> Self {
        let mut receivers = Vec::new();
        let mut memberships = Vec::new();
        for notice in notices {
            receivers.extend(notice.source.receivers);
            memberships.extend(notice.source._memberships);
        }
        ReleaseNotice {
            source: Source {
                receivers,
                _memberships: memberships,
            },
        }
    }

    /// Resolves once a release was posted since the subscription or the previous call.
    ///
    /// If the backend dropped the channel (it was shut down), this never resolves; the wait
    /// loop's bounded poll still ends the wait.
    pub async fn released(&mut self) {
        let mut waits: Vec<_> = self
            .source
            .receivers
            .iter_mut()
            .map(|receiver| Some(Box::pin(receiver.changed())))
            .collect();
        std::future::poll_fn(|cx| {
            for slot in &mut waits {
                if let Some(wait) = slot {
                    match wait.as_mut().poll(cx) {
                        Poll::Ready(Ok(())) => return Poll::Ready(()),
                        // A closed channel (its server's subscriber gone) never counts as a
                        // release; it is not polled again.
                        Poll::Ready(Err(_)) => *slot = None,
                        Poll::Pending => {}
                    }
                }
            }
            Poll::Pending
        })
        .await;
    }
}

impl fmt::Debug for ReleaseNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self
            .source
            ._memberships
            .iter()
            .map(|m| m.key.as_str())
            .collect();
        f.debug_struct("ReleaseNotice")
            .field("keys", &keys)
            .field("channels", &self.source.receivers.len())
            .finish()
    }
}

/// Keeps a waiter counted on its board until the notice is dropped.
struct Membership {
    board: NoticeBoard,
    key: String,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.board.leave(&self.key);
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
