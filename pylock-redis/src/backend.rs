//! [`RedisBackend`]: the lock primitives as Lua scripts over one multiplexed connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pylock_core::Result;
use pylock_core::raw::{
    Attempt, Capabilities, Holder, LockBackend, ReleaseNotice, Token, async_trait,
};
use redis::{ScriptInvocation, Value};

use crate::calls::{CallError, Calls};
use crate::coalesce::{Coalescer, Item};
use crate::config::RedisConfig;
use crate::errors::timed_out;
use crate::keys::{INTERNAL_SUFFIXES, fence_key, is_internal, line_key, notice_channel};
use crate::notices::Notices;
use crate::scripts::{
    ACQUIRE, EXTEND, FAIR_ACQUIRE, FORCE_RELEASE, INSPECT, LEAVE_QUEUE, REDLOCK_ACQUIRE, RELEASE,
    next_tag,
};

/// Acquires (and releases) of one backend that may be in flight before further ones are
/// coalesced into batch script calls (see [`crate::coalesce`]). A few independent calls keep
/// client and server working at the same time; many would each pay the script's full cost.
/// Chosen by measurement, see `docs/BENCHMARKS.md`.
const IN_FLIGHT_BEFORE_BATCHING: usize = 8;

/// Locks on one Redis server (or one primary), through one multiplexed, auto-reconnecting
/// connection shared by every lock of the backend.
///
/// - Acquire is one atomic `SET key token NX PX ms` inside a script that, when the lock is
///   held, also returns the holder's remaining TTL in the same round trip.
/// - Release and extend compare the owner token inside a script; release announces itself on
///   a pub/sub channel so waiters wake in about one round trip.
/// - Fencing tokens come from the server's clock and a per-lock counter key in the lock's
///   cluster slot that lives as long as the lock (opt out with `?fencing=false`, which also
///   saves that key); see the crate docs for what they survive.
/// - Under load, concurrent acquires (and releases) of different locks are sent as one
///   script call: the server's time per script, not the commands in it, is what limits a
///   busy client. An uncontended call is never held back.
/// - While the server is unreachable, calls fail with `Error::Unavailable` within the connect
///   plus response timeout; the connection comes back by itself once the server does.
///
/// The connection is made on first use, on the tokio runtime of that use; keep using the
/// backend from that runtime.
#[derive(Debug)]
pub struct RedisBackend {
    config: RedisConfig,
    calls: Arc<Calls>,
    acquires: Arc<Coalescer<AcquireItem>>,
    releases: Arc<Coalescer<ReleaseItem>>,
    notices: Arc<Notices>,
    /// Redlock nodes: whether the node's restart guard was already reported (once per guard,
    /// not once per attempt).
    guard_reported: AtomicBool,
}

/// One lock's part of an [`ACQUIRE`] call.
struct AcquireItem {
    lock: String,
    fence: String,
    token: String,
    ttl_ms: u64,
    /// Set the lock marked as waited for: others of this process wait for it.
    mark: bool,
}

impl Item for AcquireItem {
    const REPLY_LEN: usize = 2;

    fn add_to(&self, call: &mut ScriptInvocation<'static>) {
        call.key(&self.lock)
            .key(&self.fence)
            .arg(&self.token)
            .arg(self.ttl_ms)
            .arg(if self.mark { "1" } else { "0" });
    }
}

/// One lock's part of a [`RELEASE`] call.
struct ReleaseItem {
    lock: String,
    token: String,
}

impl Item for ReleaseItem {
    const REPLY_LEN: usize = 1;

    fn add_to(&self, call: &mut ScriptInvocation<'static>) {
        call.key(&self.lock)
            .key(line_key(&self.lock))
            .arg(&self.token)
            .arg(notice_channel(&self.lock));
    }
}

impl RedisBackend {
    /// A backend for the server a `redis://`, `rediss://` or `redis+unix://` URL names. It
    /// connects on first use.
    ///
    /// # Errors
    ///
    /// As for [`RedisConfig::from_url`].
    pub fn from_url(url: &str) -> Result<Self> {
        Self::new(RedisConfig::from_url(url)?)
    }

    /// A backend for `config`. It connects on first use.
    ///
    /// # Errors
    ///
    /// [`pylock_core::Error::InvalidUrl`] if the `redis` crate refuses the settings.
    pub fn new(config: RedisConfig) -> Result<Self> {
        // A cluster script call must keep to one slot, and a batch would mix them.
        let batching = !config.is_cluster();
        Self::build(config, batching)
    }

    /// A backend for one Redlock node: no batching, so that every call goes out on the
    /// connection in the order it was made (see [`crate::redlock`]).
    pub(crate) fn redlock_node(config: RedisConfig) -> Result<Self> {
        Self::build(config, false)
    }

    fn build(config: RedisConfig, batching: bool) -> Result<Self> {
        crate::tls::install_crypto_provider();
        // One client per server (per seed node of a cluster) for the release notices: a
        // cluster delivers PUBLISH on every node, so any one reachable node will do.
        let notice_clients = config
            .connection_infos()
            .iter()
            .map(|info| redis::Client::open(info.clone()))
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(|e| pylock_core::Error::InvalidUrl {
                url: config.redacted_url().to_owned(),
                reason: e.to_string(),
            })?;
        let calls = Arc::new(Calls::new(&config)?);
        let limit = if batching {
            IN_FLIGHT_BEFORE_BATCHING
        } else {
            usize::MAX
        };
        let fencing = if config.fencing { "1" } else { "0" };
        Ok(RedisBackend {
            acquires: Coalescer::new(Arc::clone(&calls), &ACQUIRE, vec![fencing.into()], limit),
            releases: Coalescer::new(Arc::clone(&calls), &RELEASE, Vec::new(), limit),
            notices: Notices::new(notice_clients, &config),
            guard_reported: AtomicBool::new(false),
            calls,
            config,
        })
    }

    /// The backend's settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// With `wait_replicas`, checks that the master of `key`'s slot has the lock just
    /// written (or extended) for `token`, and waits until enough of its replicas have it.
    ///
    /// # Errors
    ///
    /// [`pylock_core::Error::Unavailable`] if too few replicas acknowledged in time, or the
    /// master does not have the lock (it was lost in a failover before a replica had it).
    async fn wait_for_replicas(&self, key: &str, token: &Token, ttl: Duration) -> Result<()> {
        let Some(wait) = self.config.wait else {
            return Ok(());
        };
        let server = self.calls.server();
        let context = "waiting for replicas";
        let (generation, mut connection) = self
            .calls
            .current_connection()
            .await
            .map_err(|e| e.into_error(context, server))?;
        let timeout_ms = u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX);
        let limit = wait.timeout.saturating_add(self.calls.limit());
        let tag = next_tag();
        let (confirmation, acknowledged) = match tokio::time::timeout(
            limit,
            connection.confirm_and_wait(
                key,
                &token.to_hex(),
                millis(ttl),
                wait.replicas,
                timeout_ms,
                &tag,
            ),
        )
        .await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(CallError::Redis(e).into_error(context, server)),
            Err(_) => return Err(timed_out(context, server, limit)),
        };
        // A confirmation that answers another request is an error, never a confirmation.
        let confirmed = self
            .calls
            .answer(confirmation, &tag, generation)
            .and_then(|answer| {
                redis::from_redis_value::<i64>(answer).map_err(|e| CallError::Redis(e.into()))
            })
            .map_err(|e| e.into_error(context, server))?
            == 1;
        let shortfall = if !confirmed {
            format!("the master at {server} does not have the lock (lost in a failover?)")
        } else if acknowledged < wait.replicas {
            format!(
                "only {acknowledged} of {} replicas acknowledged the lock within {:?} at {server}",
                wait.replicas, wait.timeout
            )
        } else {
            return Ok(());
        };
        Err(pylock_core::Error::Unavailable {
            backend: "redis",
            context: shortfall,
            source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        })
    }
}

/// The integers of one lock's script reply.
fn integers<const N: usize>(
    reply: std::result::Result<Vec<Value>, CallError>,
    context: &str,
    server: &str,
) -> Result<[i64; N]> {
    let values = reply.map_err(|e| e.into_error(context, server))?;
    let mut integers = [0; N];
    for (integer, value) in integers.iter_mut().zip(&values) {
        *integer = redis::from_redis_value_ref(value)
            .map_err(|e| CallError::Redis(e.into()).into_error(context, server))?;
    }
    Ok(integers)
}

/// Milliseconds for `PX`/`PEXPIRE`, rounded up so a lock never lives shorter than asked.
fn millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl LockBackend for RedisBackend {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_fencing(self.config.fencing)
            .with_notifications(true)
            .with_ttl_granularity(Duration::from_millis(1))
            .with_inspection(true)
            .with_fair(true)
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        check_not_internal(key)?;
        if let Some(guard) = self.config.restart_guard {
            return self.try_acquire_guarded(key, token, ttl, guard).await;
        }
        let reply = self
            .acquires
            .call(AcquireItem {
                lock: key.to_owned(),
                fence: fence_key(key),
                token: token.to_hex(),
                ttl_ms: millis(ttl),
                mark: self.notices.is_waited(&notice_channel(key)),
            })
            .await;
        let [acquired, value] = integers(reply, "acquiring a lock", self.calls.server())?;
        self.attempt(key, token, ttl, acquired, value).await
    }

    async fn try_acquire_fair(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
        patience: Duration,
    ) -> Result<Attempt> {
        check_not_internal(key)?;
        let context = "acquiring a fair lock";
        let reply: Vec<Value> = self
            .calls
            .run(
                context,
                FAIR_ACQUIRE
                    .key(key)
                    .key(fence_key(key))
                    .key(line_key(key))
                    .arg(if self.config.fencing { "1" } else { "0" })
                    .arg(token.to_hex())
                    .arg(millis(ttl))
                    .arg(millis(patience))
                    .arg(notice_channel(key)),
            )
            .await?;
        let [acquired, value] = integers(Ok(reply), context, self.calls.server())?;
        self.attempt(key, token, ttl, acquired, value).await
    }

    async fn leave_queue(&self, key: &str, token: &Token) -> Result<()> {
        let _: i64 = self
            .calls
            .run(
                "leaving the line of a fair lock",
                LEAVE_QUEUE
                    .key(key)
                    .key(line_key(key))
                    .arg(token.to_hex())
                    .arg(notice_channel(key)),
            )
            .await?;
        Ok(())
    }

    async fn subscribe_waiter(&self, key: &str, token: &Token) -> Result<Option<ReleaseNotice>> {
        self.notices
            .subscribe(&notice_channel(key), Some(token))
            .await
            .map(Some)
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        let reply = self
            .releases
            .call(ReleaseItem {
                lock: key.to_owned(),
                token: token.to_hex(),
            })
            .await;
        let [released] = integers(reply, "releasing a lock", self.calls.server())?;
        Ok(released == 1)
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        let extended: i64 = self
            .calls
            .run(
                "extending a lock",
                EXTEND
                    .key(key)
                    .key(fence_key(key))
                    .arg(token.to_hex())
                    .arg(millis(ttl)),
            )
            .await?;
        if extended == 1 {
            self.wait_for_replicas(key, token, ttl).await?;
        }
        Ok(extended == 1)
    }

    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        self.notices
            .subscribe(&notice_channel(key), None)
            .await
            .map(Some)
    }

    async fn inspect(&self, key: &str) -> Result<Option<Holder>> {
        check_not_internal(key)?;
        let context = "inspecting a lock";
        let reply: Vec<Value> = self
            .calls
            .run(context, INSPECT.key(key).key(fence_key(key)))
            .await?;
        let [found, pttl, fence] = operator_reply(reply, key, context, self.calls.server())?;
        Ok((found == 1).then(|| {
            Holder::new(
                u64::try_from(pttl).ok().map(Duration::from_millis),
                u64::try_from(fence)
                    .ok()
                    .filter(|f| self.config.fencing && *f > 0),
            )
        }))
    }

    async fn force_release(&self, key: &str) -> Result<bool> {
        check_not_internal(key)?;
        let context = "forcing a release";
        let reply: Vec<Value> = self
            .calls
            .run(
                context,
                FORCE_RELEASE
                    .key(key)
                    .key(line_key(key))
                    .arg(notice_channel(key)),
            )
            .await?;
        let [released, ..] = operator_reply(reply, key, context, self.calls.server())?;
        Ok(released == 1)
    }
}

impl RedisBackend {
    /// An acquire script's answer `acquired, value` as an attempt: a granted lock (after its
    /// replicas confirmed it, with `wait_replicas`) with its fence, or the holder's
    /// remaining TTL (`value` -1: a key without TTL, not set by pylock; -3: free, but another
    /// fair waiter's turn).
    async fn attempt(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
        acquired: i64,
        value: i64,
    ) -> Result<Attempt> {
        Ok(if acquired == 1 {
            if let Err(error) = self.wait_for_replicas(key, token, ttl).await {
                // Not safe from a failover yet: give the lock back, let the caller retry.
                let _ = self.release(key, token).await;
                return Err(error);
            }
            Attempt::Acquired {
                fence: u64::try_from(value).ok().filter(|_| self.config.fencing),
            }
        } else {
            Attempt::Held {
                remaining: u64::try_from(value).ok().map(Duration::from_millis),
            }
        })
    }

    /// A Redlock node's acquire under its restart guard ([`REDLOCK_ACQUIRE`]).
    async fn try_acquire_guarded(
        &self,
        key: &str,
        token: &Token,
        ttl: Duration,
        guard: Duration,
    ) -> Result<Attempt> {
        let context = "acquiring a lock";
        let reply: Vec<i64> = self
            .calls
            .run(
                context,
                REDLOCK_ACQUIRE
                    .key(key)
                    .arg(token.to_hex())
                    .arg(millis(ttl))
                    .arg(millis(guard))
                    .arg(if self.notices.is_waited(&notice_channel(key)) {
                        "1"
                    } else {
                        "0"
                    }),
            )
            .await?;
        Ok(match reply.as_slice() {
            [1, ..] => {
                self.guard_reported.store(false, Ordering::Relaxed);
                Attempt::Acquired { fence: None }
            }
            [0, guarded, 1] => {
                if !self.guard_reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        server = self.calls.server(),
                        guarded_ms = guarded,
                        "pylock: this Redlock node started less than restart_guard ago and \
                         grants no lock for {guarded} ms more (it may have lost locks held \
                         before a restart; restart_guard=0 turns the guard off)"
                    );
                }
                Attempt::Held {
                    remaining: u64::try_from(*guarded).ok().map(Duration::from_millis),
                }
            }
            [0, pttl] => Attempt::Held {
                remaining: u64::try_from(*pttl).ok().map(Duration::from_millis),
            },
            _ => {
                return Err(CallError::BadReply(format!("{reply:?}"))
                    .into_error(context, self.calls.server()));
            }
        })
    }
}

/// Refuses lock names that would address pylock's own keys (the fence counters): with an
/// empty key prefix, a lock named `{pylock:a}:pylock-fence` would be lock `a`'s counter.
fn check_not_internal(key: &str) -> Result<()> {
    if is_internal(key) {
        return Err(pylock_core::Error::InvalidKey {
            key: key.to_owned(),
            reason: format!("names ending in any of {INTERNAL_SUFFIXES:?} are pylock's own keys"),
        });
    }
    Ok(())
}

/// The integers of an operator's script reply (`INSPECT`, `FORCE_RELEASE`), padded with
/// zeros; a first integer of -1 means the key holds something else, described by a string.
fn operator_reply(reply: Vec<Value>, key: &str, context: &str, server: &str) -> Result<[i64; 3]> {
    if let [Value::Int(-1), what, ..] = reply.as_slice() {
        let found = redis::from_redis_value_ref::<String>(what)
            .unwrap_or_else(|_| "something else".to_owned());
        return Err(pylock_core::Error::NotALock {
            key: key.to_owned(),
            found,
        });
    }
    let padded = reply
        .into_iter()
        .chain(std::iter::repeat(Value::Int(0)))
        .take(3)
        .collect();
    integers(Ok(padded), context, server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_micros(1001)), 2);
        assert_eq!(millis(Duration::from_secs(10)), 10_000);
    }
}
