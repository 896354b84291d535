//! [`RedisBackend`]: the lock primitives as Lua scripts over one multiplexed connection.

use std::sync::Arc;
use std::time::Duration;

use pylock_core::{
    Attempt, Capabilities, Holder, LockBackend, ReleaseNotice, Result, Token, async_trait,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{FromRedisValue, ScriptInvocation};
use tokio::sync::OnceCell;

use crate::config::{RedisConfig, Servers};
use crate::connection::Connection;
use crate::errors::{from_redis, timed_out};
use crate::keys::{fence_key, notice_channel};
use crate::notices::Notices;
use crate::scripts::{ACQUIRE, EXTEND, FORCE_RELEASE, INSPECT, RELEASE};

/// Locks on one Redis server (or one primary), through one multiplexed, auto-reconnecting
/// connection shared by every lock of the backend.
///
/// - Acquire is one atomic `SET key token NX PX ms` inside a script that, when the lock is
///   held, also returns the holder's remaining TTL in the same round trip.
/// - Release and extend compare the owner token inside a script; release announces itself on
///   a pub/sub channel so waiters wake in about one round trip.
/// - Fencing tokens come from a per-lock counter key in the lock's cluster slot (opt out with
///   `?fencing=false`, which also saves that key).
/// - While the server is unreachable, calls fail with `Error::Unavailable` within the connect
///   plus response timeout; the connection comes back by itself once the server does.
///
/// The connection is made on first use, on the tokio runtime of that use; keep using the
/// backend from that runtime.
#[derive(Debug)]
pub struct RedisBackend {
    config: RedisConfig,
    connector: Connector,
    connection: OnceCell<Connection>,
    notices: Arc<Notices>,
}

/// What makes the connection: a client for one server, or for a cluster.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one per backend, never moved around"
)]
enum Connector {
    Single(redis::Client),
    Cluster(ClusterClient),
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
        let invalid = |e: redis::RedisError| pylock_core::Error::InvalidUrl {
            url: config.redacted_url().to_owned(),
            reason: e.to_string(),
        };
        // One client per server (per seed node of a cluster) for the release notices: a
        // cluster delivers PUBLISH on every node, so any one reachable node will do.
        let notice_clients = config
            .connection_infos()
            .iter()
            .map(|info| redis::Client::open(info.clone()))
            .collect::<redis::RedisResult<Vec<_>>>()
            .map_err(invalid)?;
        let connector = match &config.servers {
            Servers::Single(_) => Connector::Single(notice_clients[0].clone()),
            Servers::Cluster(seeds) => Connector::Cluster(
                ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout)
                    .build()
                    .map_err(invalid)?,
            ),
        };
        let notices = Notices::new(notice_clients, &config);
        Ok(RedisBackend {
            config,
            connector,
            connection: OnceCell::new(),
            notices,
        })
    }

    /// The backend's settings.
    pub fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// The shared connection, made on first use.
    async fn connection(&self) -> Result<Connection> {
        let server = self.config.redacted_url();
        self.connection
            .get_or_try_init(|| async {
                match &self.connector {
                    Connector::Single(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(self.config.connect_timeout))
                            .set_response_timeout(Some(self.config.response_timeout))
                            // One connect attempt per call: a call must fail within its
                            // timeouts while the server is down, and the next call tries again.
                            .set_number_of_retries(0);
                        ConnectionManager::new_lazy_with_config(client.clone(), config)
                            .map(Connection::Single)
                            .map_err(|e| from_redis(e, "setting up the connection", server))
                    }
                    Connector::Cluster(client) => {
                        // The cluster client finds the slots from the seeds, follows MOVED/ASK
                        // and reconnects to nodes by itself; only its first contact can fail.
                        let limit = self.config.call_timeout();
                        match tokio::time::timeout(limit, client.get_async_connection()).await {
                            Ok(Ok(connection)) => Ok(Connection::Cluster(connection)),
                            Ok(Err(e)) => Err(from_redis(e, "connecting to the cluster", server)),
                            Err(_) => Err(timed_out("connecting to the cluster", server, limit)),
                        }
                    }
                }
            })
            .await
            .cloned()
    }

    /// With `wait_replicas`, waits until enough replicas have the write just made to `key`.
    ///
    /// # Errors
    ///
    /// [`pylock_core::Error::Unavailable`] if too few replicas acknowledged in time.
    async fn wait_for_replicas(&self, key: &str) -> Result<()> {
        let Some(wait) = self.config.wait else {
            return Ok(());
        };
        let server = self.config.redacted_url();
        let mut connection = self.connection().await?;
        let timeout_ms = u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX);
        let limit = wait.timeout + self.config.call_timeout();
        let acknowledged = match tokio::time::timeout(
            limit,
            connection.wait_for_replicas(key, wait.replicas, timeout_ms),
        )
        .await
        {
            Ok(Ok(acknowledged)) => acknowledged,
            Ok(Err(e)) => return Err(from_redis(e, "waiting for replicas", server)),
            Err(_) => return Err(timed_out("waiting for replicas", server, limit)),
        };
        if acknowledged >= wait.replicas {
            Ok(())
        } else {
            Err(pylock_core::Error::Unavailable {
                backend: "redis",
                context: format!(
                    "only {acknowledged} of {} replicas acknowledged the lock within {:?} at {server}",
                    wait.replicas, wait.timeout
                ),
                source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
            })
        }
    }

    /// Runs one script with the backend's time limit, mapping its errors.
    ///
    /// A connection that died under us (the server restarted) is replaced by the connection
    /// manager; the call is then tried once more on the new one, so that, say, a guard's
    /// release right after a restart gets an answer instead of an error. Every script is safe
    /// to run twice: acquire recognises its own token, extend sets the same TTL, and a second
    /// release finds nothing to delete (reported as a lost lock, which is then the truth on the
    /// server too).
    async fn run<T: FromRedisValue>(
        &self,
        context: &'static str,
        script: &ScriptInvocation<'_>,
    ) -> Result<T> {
        // The driver has its own connect and response timeouts; this bound also covers a
        // reconnect already in progress when the call started.
        let limit = self.config.call_timeout() + Duration::from_millis(100);
        let mut retried = false;
        loop {
            let mut connection = self.connection().await?;
            match tokio::time::timeout(limit, script.invoke_async(&mut connection)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) if !retried && error.is_connection_dropped() => {
                    tracing::debug!(%error, "pylock: redis connection dropped, retrying once");
                    retried = true;
                }
                Ok(Err(error)) => {
                    return Err(from_redis(error, context, self.config.redacted_url()));
                }
                Err(_) => return Err(timed_out(context, self.config.redacted_url(), limit)),
            }
        }
    }
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
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        let (acquired, value): (i64, i64) = self
            .run(
                "acquiring a lock",
                ACQUIRE
                    .key(key)
                    .key(fence_key(key))
                    .arg(token.to_hex())
                    .arg(millis(ttl))
                    .arg(if self.config.fencing { "1" } else { "0" }),
            )
            .await?;
        Ok(if acquired == 1 {
            if let Err(error) = self.wait_for_replicas(key).await {
                // Not safe from a failover yet: give the lock back, let the caller retry.
                let _ = self.release(key, token).await;
                return Err(error);
            }
            Attempt::Acquired {
                fence: u64::try_from(value).ok().filter(|_| self.config.fencing),
            }
        } else {
            Attempt::Held {
                // -1: the key has no TTL (not set by pylock); -2 cannot happen inside the
                // script, the key exists.
                remaining: u64::try_from(value).ok().map(Duration::from_millis),
            }
        })
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        let released: i64 = self
            .run(
                "releasing a lock",
                RELEASE
                    .key(key)
                    .arg(token.to_hex())
                    .arg(notice_channel(key)),
            )
            .await?;
        Ok(released == 1)
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        let extended: i64 = self
            .run(
                "extending a lock",
                EXTEND.key(key).arg(token.to_hex()).arg(millis(ttl)),
            )
            .await?;
        if extended == 1 {
            self.wait_for_replicas(key).await?;
        }
        Ok(extended == 1)
    }

    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        self.notices.subscribe(&notice_channel(key)).await.map(Some)
    }

    async fn inspect(&self, key: &str) -> Result<Option<Holder>> {
        let reply: Vec<i64> = self
            .run("inspecting a lock", INSPECT.key(key).key(fence_key(key)))
            .await?;
        Ok(match reply.as_slice() {
            [1, pttl, fence] => Some(Holder::new(
                u64::try_from(*pttl).ok().map(Duration::from_millis),
                u64::try_from(*fence)
                    .ok()
                    .filter(|f| self.config.fencing && *f > 0),
            )),
            _ => None,
        })
    }

    async fn force_release(&self, key: &str) -> Result<bool> {
        let released: i64 = self
            .run(
                "forcing a release",
                FORCE_RELEASE.key(key).arg(notice_channel(key)),
            )
            .await?;
        Ok(released == 1)
    }
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
