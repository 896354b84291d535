//! `memory://`: locks shared by the tasks and threads of one process.
//!
//! The embedded default (no server needed) and the backend of every doctest. It is a real lock
//! within the process: mutual exclusion, TTL expiry, wake-up on release and fencing tokens
//! behave as on a server. It does nothing across processes.
//!
//! - `memory://` is the process-wide default store: every client that connects to it shares
//!   its locks.
//! - `memory://<name>` is a separate named store, also process-wide (handy to isolate tests).
//! - [`MemoryBackend::new`] makes a private store.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::backend::{Attempt, Capabilities, Holder, LockBackend};
use crate::error::Result;
use crate::notice::{NoticeBoard, ReleaseNotice};
use crate::registry::BackendDescriptor;
use crate::token::Token;
use crate::url::ConnectionUrl;

/// `memory://`, for [`Registry::install`](crate::Registry::install); the core's registries
/// start with it.
pub const BACKENDS: &[BackendDescriptor] = &[BackendDescriptor {
    name: "memory",
    schemes: &["memory"],
    open,
}];

/// Expired entries are swept after this many acquisitions, so a process that locks many
/// distinct keys does not keep them all.
const SWEEP_EVERY: usize = 1024;

/// In-process locks. See the [module docs](self).
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
    notices: NoticeBoard,
}

#[derive(Debug, Default)]
struct State {
    holders: HashMap<String, Entry>,
    /// The last fencing token handed out; one counter for all keys keeps every key's tokens
    /// strictly increasing without remembering keys after release.
    last_fence: u64,
    acquisitions_since_sweep: usize,
    /// The fair waiters of each key, first in line first, with when each was last heard from
    /// and its patience.
    queues: HashMap<String, VecDeque<Queued>>,
}

#[derive(Debug)]
struct Queued {
    token: Token,
    lapses_at: Instant,
}

#[derive(Debug)]
struct Entry {
    token: Token,
    fence: u64,
    expires_at: Instant,
}

impl MemoryBackend {
    /// A private store, shared only by clients given this instance.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide store named `name` (`""` is the default store of `memory://`).
    pub fn shared(name: &str) -> Arc<Self> {
        static STORES: OnceLock<Mutex<HashMap<String, Arc<MemoryBackend>>>> = OnceLock::new();
        let stores = STORES.get_or_init(Mutex::default);
        let mut stores = stores.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(stores.entry(name.to_owned()).or_default())
    }

    /// Tells `key`'s waiters it is free: the first in line of its queue, if it has one,
    /// otherwise one waiter.
    fn announce_release(&self, key: &str, first_in_line: Option<Token>) {
        match first_in_line {
            Some(first) => self.notices.notify_waiter(key, &first.to_hex()),
            None => self.notices.notify(key),
        };
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below is a single map operation, so a panic elsewhere cannot leave the
        // state half-changed; keep serving after one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// The holder of `key`, forgetting it if its TTL has run out.
    fn live_holder(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.holders.get(key).is_some_and(|h| h.expires_at <= now) {
            self.holders.remove(key);
        }
        self.holders.get_mut(key)
    }

    /// The first live waiter of `key`'s queue, dropping those that lapsed.
    fn first_in_line(&mut self, key: &str, now: Instant) -> Option<Token> {
        let queue = self.queues.get_mut(key)?;
        while queue.front().is_some_and(|waiter| waiter.lapses_at <= now) {
            queue.pop_front();
        }
        let first = queue.front().map(|waiter| waiter.token);
        if queue.is_empty() {
            self.queues.remove(key);
        }
        first
    }

    /// Takes `token` out of `key`'s queue.
    fn leave_queue(&mut self, key: &str, token: &Token) {
        if let Some(queue) = self.queues.get_mut(key) {
            queue.retain(|waiter| waiter.token != *token);
            if queue.is_empty() {
                self.queues.remove(key);
            }
        }
    }

    /// Gives `key` to `token` until `now + ttl`; its fence.
    fn grant(&mut self, key: &str, token: &Token, ttl: Duration, now: Instant) -> u64 {
        self.sweep_now_and_then(now);
        self.last_fence += 1;
        let fence = self.last_fence;
        self.holders.insert(
            key.to_owned(),
            Entry {
                token: *token,
                fence,
                expires_at: now + ttl,
            },
        );
        fence
    }

    fn sweep_now_and_then(&mut self, now: Instant) {
        self.acquisitions_since_sweep += 1;
        if self.acquisitions_since_sweep >= SWEEP_EVERY {
            self.acquisitions_since_sweep = 0;
            self.holders.retain(|_, holder| holder.expires_at > now);
        }
    }
}

#[async_trait]
impl LockBackend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_fencing(true)
            .with_notifications(true)
            .with_inspection(true)
            .with_ttl_granularity(Duration::from_nanos(1))
            .with_fair(true)
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(holder) = state.live_holder(key, now) {
            if holder.token != *token {
                return Ok(Attempt::Held {
                    remaining: Some(holder.expires_at - now),
                });
            }
            // Our own earlier attempt already holds it: same hold, new TTL.
            holder.expires_at = now + ttl;
            return Ok(Attempt::Acquired {
                fence: Some(holder.fence),
            });
        }
        let fence = state.grant(key, token, ttl, now);
        Ok(Attempt::Acquired { fence: Some(fence) })
    }

    async fn try_acquire_fair(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
        patience: Duration,
    ) -> Result<Attempt> {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(holder) = state.live_holder(key, now)
            && holder.token == *token
        {
            holder.expires_at = now + ttl;
            let fence = holder.fence;
            state.leave_queue(key, token);
            return Ok(Attempt::Acquired { fence: Some(fence) });
        }
        // Join the queue, or keep our place: this attempt is a sign of life.
        let queue = state.queues.entry(key.to_owned()).or_default();
        match queue.iter_mut().find(|waiter| waiter.token == *token) {
            Some(waiter) => waiter.lapses_at = now + patience,
            None => queue.push_back(Queued {
                token: *token,
                lapses_at: now + patience,
            }),
        }
        let first = state.first_in_line(key, now);
        if let Some(holder) = state.live_holder(key, now) {
            return Ok(Attempt::Held {
                remaining: Some(holder.expires_at - now),
            });
        }
        match first {
            Some(first) if first == *token => {
                state.leave_queue(key, token);
                let fence = state.grant(key, token, ttl, now);
                Ok(Attempt::Acquired { fence: Some(fence) })
            }
            // Free, and someone else's turn: make sure it knows.
            first => {
                drop(state);
                if let Some(first) = first {
                    self.notices.notify_waiter(key, &first.to_hex());
                }
                Ok(Attempt::Held { remaining: None })
            }
        }
    }

    async fn leave_queue(&self, key: &str, token: &Token) -> Result<()> {
        let now = Instant::now();
        let next = {
            let mut state = self.state();
            state.leave_queue(key, token);
            match state.live_holder(key, now) {
                Some(_) => None,
                None => state.first_in_line(key, now),
            }
        };
        if let Some(next) = next {
            self.notices.notify_waiter(key, &next.to_hex());
        }
        Ok(())
    }

    async fn subscribe_waiter(&self, key: &str, token: &Token) -> Result<Option<ReleaseNotice>> {
        Ok(Some(self.notices.subscribe_waiter(key, token).0))
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        let now = Instant::now();
        let (released, next) = {
            let mut state = self.state();
            let released = match state.live_holder(key, now) {
                Some(holder) if holder.token == *token => state.holders.remove(key).is_some(),
                _ => false,
            };
            (released, state.first_in_line(key, now))
        };
        if released {
            self.announce_release(key, next);
        }
        Ok(released)
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        let now = Instant::now();
        let mut state = self.state();
        match state.live_holder(key, now) {
            Some(holder) if holder.token == *token => {
                holder.expires_at = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        Ok(Some(self.notices.subscribe(key).0))
    }

    async fn inspect(&self, key: &str) -> Result<Option<Holder>> {
        let now = Instant::now();
        let mut state = self.state();
        Ok(state
            .live_holder(key, now)
            .map(|holder| Holder::new(Some(holder.expires_at - now), Some(holder.fence))))
    }

    async fn force_release(&self, key: &str) -> Result<bool> {
        let now = Instant::now();
        let (released, next) = {
            let mut state = self.state();
            let released =
                state.live_holder(key, now).is_some() && state.holders.remove(key).is_some();
            (released, state.first_in_line(key, now))
        };
        if released {
            self.announce_release(key, next);
        }
        Ok(released)
    }
}

/// Builds the backend for a `memory://[name]` URL.
///
/// # Errors
///
/// [`Error::InvalidUrl`](crate::Error::InvalidUrl) for a user, port, several hosts or a path;
/// [`Error::UnknownOption`](crate::Error::UnknownOption) for any query option.
pub fn open(url: &str) -> Result<Arc<dyn LockBackend>> {
    let url = ConnectionUrl::parse(url)?;
    url.options(&[])?;
    if url.username().is_some() || url.password().is_some() {
        return Err(url.invalid("memory:// takes no user or password"));
    }
    if !url.path().is_empty() && url.path() != "/" {
        return Err(url.invalid("memory:// takes no path; name a store as memory://<name>"));
    }
    let name = match url.hosts() {
        [] => "",
        [store] if store.port.is_none() => store.host.as_str(),
        _ => {
            return Err(url.invalid(
                "memory:// takes at most one store name and no port, e.g. memory://tests",
            ));
        }
    };
    Ok(MemoryBackend::shared(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn ttl() -> Duration {
        Duration::from_secs(10)
    }

    #[tokio::test]
    async fn holder_blocks_others_until_released() {
        let backend = MemoryBackend::new();
        let (a, b) = (Token::generate().unwrap(), Token::generate().unwrap());
        assert!(matches!(
            backend.try_acquire("k", &a, ttl()).await.unwrap(),
            Attempt::Acquired { fence: Some(1) }
        ));
        match backend.try_acquire("k", &b, ttl()).await.unwrap() {
            Attempt::Held {
                remaining: Some(remaining),
            } => assert!(remaining <= ttl()),
            other => panic!("{other:?}"),
        }
        assert!(!backend.release("k", &b).await.unwrap());
        assert!(backend.release("k", &a).await.unwrap());
        assert!(!backend.release("k", &a).await.unwrap(), "double release");
        assert!(matches!(
            backend.try_acquire("k", &b, ttl()).await.unwrap(),
            Attempt::Acquired { fence: Some(2) }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_frees_and_fences_keep_increasing() {
        let backend = MemoryBackend::new();
        let (a, b) = (Token::generate().unwrap(), Token::generate().unwrap());
        let short = Duration::from_millis(50);
        backend.try_acquire("k", &a, short).await.unwrap();
        tokio::time::advance(Duration::from_millis(60)).await;
        assert!(!backend.extend("k", &a, ttl()).await.unwrap(), "expired");
        assert!(matches!(
            backend.try_acquire("k", &b, ttl()).await.unwrap(),
            Attempt::Acquired { fence: Some(2) }
        ));
        assert!(!backend.release("k", &a).await.unwrap());
    }

    #[tokio::test]
    async fn the_same_token_reacquires_its_own_lock() {
        let backend = MemoryBackend::new();
        let a = Token::generate().unwrap();
        backend.try_acquire("k", &a, ttl()).await.unwrap();
        assert!(matches!(
            backend.try_acquire("k", &a, ttl()).await.unwrap(),
            Attempt::Acquired { fence: Some(1) }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept() {
        let backend = MemoryBackend::new();
        let t = Token::generate().unwrap();
        for i in 1..SWEEP_EVERY {
            backend
                .try_acquire(&i.to_string(), &t, Duration::from_millis(1))
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_millis(5)).await;
        backend.try_acquire("last", &t, ttl()).await.unwrap();
        // The SWEEP_EVERY-th acquisition swept the expired ones.
        assert_eq!(backend.state().holders.len(), 1);
    }

    #[test]
    fn urls() {
        let default = open("memory://").unwrap();
        let again = open("memory:///").unwrap();
        let named = open("memory://tests").unwrap();
        assert_eq!(
            Arc::as_ptr(&default).cast::<()>(),
            Arc::as_ptr(&again).cast::<()>()
        );
        assert_ne!(
            Arc::as_ptr(&default).cast::<()>(),
            Arc::as_ptr(&named).cast::<()>()
        );
        assert!(matches!(
            open("memory://?size=3"),
            Err(Error::UnknownOption { .. })
        ));
        for bad in [
            "memory://a:1",
            "memory://a,b",
            "memory://u:p@x",
            "memory://x/y",
        ] {
            assert!(matches!(open(bad), Err(Error::InvalidUrl { .. })), "{bad}");
        }
    }
}
