//! [`RedlockBackend`]: one lock on N independent Redis masters, held with a majority.
//!
//! The algorithm of the Redis distributed-locks page:
//!
//! 1. Try every node at once, with the same owner token and a per-node timeout well under the
//!    TTL (`node_timeout`), each node by the single-server acquire script. The attempt is
//!    decided as soon as a majority granted it; the slower nodes' answers are not waited for
//!    (their calls still run, before any later call on the same node).
//! 2. The lock is held if a majority (N/2+1) said yes and time is left: the TTL minus the
//!    time the attempt took minus a clock-drift allowance (1 % of the TTL + 2 ms) is positive.
//!    The guard's validity estimate takes the same allowance off.
//! 3. Otherwise the attempt gives back every node it may have got (owner-checked), and the
//!    waiter tries again.
//! 4. Extend needs a majority too (a failed extend gives the nodes back); release goes to
//!    every node.
//!
//! What it relies on (and what it cannot give):
//!
//! - **Timing.** Nodes' clocks may drift from each other by at most the allowance over one
//!   TTL, and a process pause or network delay longer than the remaining validity is not
//!   covered: a holder paused past its TTL believes it still holds the lock. Use
//!   [`LockGuard::lost`](pylock_core::LockGuard::lost) and keep critical sections well under
//!   the TTL.
//! - **No fencing tokens.** Independent masters cannot agree on a counter, so
//!   [`Capabilities::fencing`] is `false`. Where a stale holder's writes must be refused, use
//!   a single server (or a cluster) with fencing, or the resource's own versioning.
//! - **The node-restart rule.** A node that crashes loses its locks unless it persists every
//!   write (`appendonly yes` + `appendfsync always`; an RDB snapshot brings back old locks,
//!   not the last ones). Restarted empty at once, it can let a second client gather a
//!   majority while the first still holds one. The rule: a crashed node must not vote until
//!   the longest TTL in use has passed ("delayed restart").
//!
//! **pylock enforces the restart rule itself** (`?restart_guard=`, default
//! [`DEFAULT_RESTART_GUARD`](crate::DEFAULT_RESTART_GUARD), 60 s): a node grants nothing until
//! the guard has passed since it started, read from its own `uptime_in_seconds` inside the
//! acquire script, so a restart cannot be missed, not even by a client that never saw the
//! node before. Set the guard to at least the longest TTL your clients use. The cost: about
//! 3 us of server time per acquire of a free lock (measured in `docs/BENCHMARKS.md`), and
//! nodes started less than the guard ago (a new deployment) grant nothing until it has
//! passed: acquires wait, and a warning says which node and for how long. `restart_guard=0`
//! turns it off, for nodes that persist every write. What it does not cover: an operator's
//! `FLUSHALL` on a running node, which deletes held locks as `pylock release --force` would.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use pylock_core::raw::{
    Attempt, Capabilities, Holder, LockBackend, ReleaseNotice, Token, async_trait,
};
use pylock_core::{Error, Result};
use tokio::time::Instant;

use crate::backend::RedisBackend;
use crate::config::RedlockConfig;

/// Redlock's clock drift allowance: 1 % of the TTL (plus 2 ms, added by the core).
pub const DRIFT_PPM: u32 = 10_000;

/// Locks held on a majority of independent Redis masters. See the [module docs](self).
#[derive(Debug)]
pub struct RedlockBackend {
    config: RedlockConfig,
    nodes: Vec<Arc<RedisBackend>>,
}

impl RedlockBackend {
    /// A backend for the nodes of a `redlock://` URL. Nodes connect on first use.
    ///
    /// # Errors
    ///
    /// As for [`RedlockConfig::from_url`].
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(RedlockConfig::from_url(url)?)
    }

    /// A backend for `config`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] if the `redis` crate refuses a node's settings.
    pub fn new(config: RedlockConfig) -> Result<Self> {
        let nodes = config
            .nodes
            .iter()
            .map(|node| RedisBackend::redlock_node(node.clone()).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(RedlockBackend { config, nodes })
    }

    /// The backend's settings.
    pub fn config(&self) -> &RedlockConfig {
        &self.config
    }

    /// Runs `call` on every node at once, each within the node timeout; `None` for a node
    /// that failed or did not answer in time. Returns every node's answer, or, as soon as a
    /// majority of nodes gave an answer that `settles`, only the answers so far: the other
    /// calls finish in the background, and the slowest nodes no longer set the pace. That is
    /// safe because each node's calls go out on one connection in the order they were made
    /// (node backends do not batch): a late acquire on a node runs there before the release
    /// that follows it.
    async fn on_nodes<T, F, Fut>(
        &self,
        key: &str,
        call: F,
        settles: fn(&T) -> bool,
    ) -> Vec<Option<T>>
    where
        T: Send + 'static,
        F: Fn(Arc<RedisBackend>, Arc<str>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let timeout = self.config.node_timeout;
        let key: Arc<str> = Arc::from(key);
        let mut pending: FuturesUnordered<_> = self
            .nodes
            .iter()
            .map(|node| {
                let attempt = call(Arc::clone(node), Arc::clone(&key));
                async move {
                    match tokio::time::timeout(timeout, attempt).await {
                        Ok(Ok(value)) => Some(value),
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "pylock: a redlock node failed");
                            None
                        }
                        Err(_) => None,
                    }
                }
            })
            .collect();
        let mut answers = Vec::with_capacity(self.nodes.len());
        let mut settled = 0;
        while let Some(answer) = pending.next().await {
            settled += usize::from(answer.as_ref().is_some_and(settles));
            answers.push(answer);
            if settled >= self.quorum() {
                break;
            }
        }
        if !pending.is_empty() {
            tokio::spawn(async move { while pending.next().await.is_some() {} });
        }
        answers
    }

    /// Runs `call` on every node at once and waits for all of them (see [`Self::on_nodes`]).
    async fn on_every_node<T, F, Fut>(&self, key: &str, call: F) -> Vec<Option<T>>
    where
        T: Send + 'static,
        F: Fn(Arc<RedisBackend>, Arc<str>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.on_nodes(key, call, |_| false).await
    }

    fn quorum(&self) -> usize {
        self.config.quorum()
    }

    /// Gives back whatever this token holds on any node (owner-checked, so harmless where it
    /// holds nothing).
    async fn release_everywhere(&self, key: &str, token: &Token) -> usize {
        let token = *token;
        self.on_every_node(key, move |node, key| async move {
            node.release(&key, &token).await
        })
        .await
        .into_iter()
        .filter(|released| *released == Some(true))
        .count()
    }

    fn unavailable(&self, reached: usize, what: &str) -> Error {
        Error::Unavailable {
            backend: "redlock",
            context: format!(
                "{what}: only {reached} of {} nodes answered, {} needed, at {}",
                self.nodes.len(),
                self.quorum(),
                self.config.redacted_url()
            ),
            source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        }
    }
}

#[async_trait]
impl LockBackend for RedlockBackend {
    fn name(&self) -> &'static str {
        "redlock"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_notifications(true)
            .with_ttl_granularity(Duration::from_millis(1))
            .with_inspection(true)
            .with_drift_ppm(DRIFT_PPM)
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        let started = Instant::now();
        let token = *token;
        let answers = self
            .on_nodes(
                key,
                move |node, key| async move { node.try_acquire(&key, &token, ttl).await },
                |answer| matches!(answer, Attempt::Acquired { .. }),
            )
            .await;
        let reached = answers.iter().filter(|a| a.is_some()).count();
        let acquired = answers
            .iter()
            .filter(|a| matches!(a, Some(Attempt::Acquired { .. })))
            .count();
        // What is left of the TTL once the attempt and the drift allowance are paid for.
        let validity = self
            .capabilities()
            .validity(ttl)
            .saturating_sub(started.elapsed());
        if acquired >= self.quorum() && !validity.is_zero() {
            return Ok(Attempt::Acquired { fence: None });
        }
        // Not held: leave no partial lock behind.
        if acquired > 0 {
            self.release_everywhere(key, &token).await;
        }
        if reached < self.quorum() {
            return Err(self.unavailable(reached, "acquiring a lock"));
        }
        let held: Vec<Option<Duration>> = answers
            .iter()
            .filter_map(|a| match a {
                Some(Attempt::Held { remaining }) => Some(*remaining),
                _ => None,
            })
            .collect();
        let remaining = if held.is_empty() {
            // Everyone said yes but the attempt took too long: try again at once.
            Some(Duration::ZERO)
        } else if held.iter().all(Option::is_some) {
            // Free everywhere by the time the longest of the holders' keys expires.
            held.into_iter().flatten().max()
        } else {
            None
        };
        Ok(Attempt::Held { remaining })
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        let token = *token;
        let answers = self
            .on_nodes(
                key,
                move |node, key| async move { node.release(&key, &token).await },
                |released| *released,
            )
            .await;
        let reached = answers.iter().filter(|a| a.is_some()).count();
        let released = answers.iter().filter(|a| **a == Some(true)).count();
        if released >= self.quorum() {
            return Ok(true);
        }
        if reached < self.quorum() {
            return Err(self.unavailable(reached, "releasing a lock"));
        }
        Ok(false)
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        let started = Instant::now();
        let token = *token;
        let answers = self
            .on_nodes(
                key,
                move |node, key| async move { node.extend(&key, &token, ttl).await },
                |extended| *extended,
            )
            .await;
        let extended = answers.iter().filter(|a| **a == Some(true)).count();
        let validity = self
            .capabilities()
            .validity(ttl)
            .saturating_sub(started.elapsed());
        if extended >= self.quorum() && !validity.is_zero() {
            return Ok(true);
        }
        let reached = answers.iter().filter(|a| a.is_some()).count();
        if reached < self.quorum() {
            return Err(self.unavailable(reached, "extending a lock"));
        }
        // A minority extension would only keep others out: give it back.
        self.release_everywhere(key, &token).await;
        Ok(false)
    }

    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        let notices: Vec<ReleaseNotice> = self
            .on_every_node(key, |node, key| async move { node.subscribe(&key).await })
            .await
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        if notices.is_empty() {
            return Err(self.unavailable(0, "subscribing to release notices"));
        }
        Ok(Some(ReleaseNotice::any(notices)))
    }

    async fn inspect(&self, key: &str) -> Result<Option<Holder>> {
        let answers = self
            .on_every_node(key, |node, key| async move { node.inspect(&key).await })
            .await;
        let reached = answers.iter().filter(|a| a.is_some()).count();
        if reached < self.quorum() {
            return Err(self.unavailable(reached, "inspecting a lock"));
        }
        let holders: Vec<Holder> = answers.into_iter().flatten().flatten().collect();
        if holders.len() < self.quorum() {
            return Ok(None);
        }
        // Held until a majority of its keys expire: the quorum-th longest remaining time.
        let mut remaining: Vec<Option<Duration>> = holders.iter().map(|h| h.remaining).collect();
        remaining.sort_by(|a, b| b.cmp(a));
        Ok(Some(Holder::new(remaining[self.quorum() - 1], None)))
    }

    async fn force_release(&self, key: &str) -> Result<bool> {
        let answers = self
            .on_every_node(
                key,
                |node, key| async move { node.force_release(&key).await },
            )
            .await;
        Ok(answers.contains(&Some(true)))
    }
}
