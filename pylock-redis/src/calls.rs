//! [`Calls`]: the one connection of a backend, made on first use, and the one way scripts are
//! sent over it (time limit, one retry after a dropped connection, error mapping).
//!
//! A connection that read something it could not parse (a reply corrupted on the way, a
//! server that answered garbage) is out of step for good: every later reply would be read
//! against the wrong request. It is discarded, and the next call makes a new one. So is a
//! connection that got a reply to another request: every call carries a tag of its own,
//! which the script's reply echoes ([`crate::scripts::answering`]), and a reply with a
//! different tag means a request was lost on the way while the connection stayed up. Its
//! caller gets an error, never the other request's answer (which could be a lock).
//!
//! It lives behind an `Arc` so that batches of coalesced calls (see [`crate::coalesce`]) can
//! be sent from their own tasks.

use std::time::Duration;

use pylock_core::raw::PerRuntime;
use pylock_core::raw::Timeouts;
use pylock_core::{Error, Result};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::{RedisError, ScriptInvocation, Value};

use crate::config::{RedisConfig, Servers};
use crate::connection::Connection;
use crate::errors::{from_redis, timed_out};
use crate::scripts::{next_tag, untag};

pub(crate) struct Calls {
    connector: Connector,
    /// The current connection of each runtime that calls, and its generation (so that only
    /// the call that saw a connection break discards it, not a newer one). Per runtime: a
    /// connection's tasks run on the runtime that made it (see [`PerRuntime`]).
    current: PerRuntime<(u64, Connection)>,
    /// Held while a connection is made, so that concurrent first calls make one.
    connecting: tokio::sync::Mutex<u64>,
    /// The server's URL, redacted, for messages.
    server: String,
    timeouts: Timeouts,
}

/// What makes the connection: a client for one server, or for a cluster.
#[allow(
    clippy::large_enum_variant,
    reason = "one per backend, never moved around"
)]
enum Connector {
    Single(redis::Client),
    Cluster(ClusterClient),
}

/// Why a call failed, kept cloneable so that one failed batch can tell each of its callers.
#[derive(Clone, Debug)]
pub(crate) enum CallError {
    Redis(RedisError),
    TimedOut(Duration),
    /// The script answered something it never answers: a different server or script.
    BadReply(String),
    /// The reply answers another request: the connection was out of step (and is replaced).
    OutOfStep(String),
    /// The batch that carried the call was dropped unsent (its runtime was shutting down).
    Dropped,
}

impl CallError {
    /// The pylock error for a call to `server` made while `context`.
    pub(crate) fn into_error(self, context: &str, server: &str) -> Error {
        match self {
            CallError::Redis(error) => from_redis(error, context, server),
            CallError::TimedOut(limit) => timed_out(context, server, limit),
            CallError::BadReply(reply) => Error::Backend {
                backend: "redis",
                context: format!("{context} at {server}: unexpected reply"),
                source: Box::new(std::io::Error::new(std::io::ErrorKind::InvalidData, reply)),
            },
            CallError::OutOfStep(reply) => Error::Unavailable {
                backend: "redis",
                context: format!(
                    "{context} at {server}: the reply answered another request (one was lost \
                     on the way), so the connection is replaced"
                ),
                source: Box::new(std::io::Error::new(std::io::ErrorKind::InvalidData, reply)),
            },
            CallError::Dropped => Error::Unavailable {
                backend: "redis",
                context: format!("{context} at {server}: the call was dropped unsent"),
                source: Box::new(std::io::Error::from(std::io::ErrorKind::Interrupted)),
            },
        }
    }
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Calls {
    /// Calls to the server (or cluster) of `config`; connects on first use.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] if the `redis` crate refuses the settings.
    pub(crate) fn new(config: &RedisConfig) -> Result<Self> {
        let invalid = |e: RedisError| Error::InvalidUrl {
            url: config.redacted_url().to_owned(),
            reason: e.to_string(),
        };
        let connector = match &config.servers {
            Servers::Single(info) => {
                Connector::Single(redis::Client::open((**info).clone()).map_err(invalid)?)
            }
            Servers::Cluster(seeds) => {
                #[allow(unused_mut, reason = "changed only with the tls feature")]
                let mut builder = ClusterClientBuilder::new(seeds.clone())
                    .connection_timeout(config.timeouts.connect)
                    .response_timeout(config.timeouts.response);
                #[cfg(feature = "tls")]
                if let Some(tls) = &config.tls {
                    builder = builder.certs(crate::config::certificates(tls));
                }
                Connector::Cluster(builder.build().map_err(invalid)?)
            }
        };
        Ok(Calls {
            connector,
            current: PerRuntime::new(),
            connecting: tokio::sync::Mutex::new(0),
            server: config.redacted_url().to_owned(),
            timeouts: config.timeouts,
        })
    }

    /// The server's URL, redacted.
    pub(crate) fn server(&self) -> &str {
        &self.server
    }

    /// The longest one call may take ([`Timeouts::call`]): the driver's connect and response
    /// timeouts, plus a margin that also covers a reconnect already in progress when the call
    /// started.
    pub(crate) fn limit(&self) -> Duration {
        self.timeouts.call()
    }

    /// The shared connection and its generation, made on first use (or after a discard).
    pub(crate) async fn current_connection(
        &self,
    ) -> std::result::Result<(u64, Connection), CallError> {
        if let Some(current) = self.read_current() {
            return Ok(current);
        }
        let mut generation = self.connecting.lock().await;
        if let Some(current) = self.read_current() {
            return Ok(current);
        }
        let connection = self.connect().await?;
        *generation += 1;
        let current = (*generation, connection);
        self.current.set(current.clone());
        Ok(current)
    }

    fn read_current(&self) -> Option<(u64, Connection)> {
        self.current.get()
    }

    /// The answer in `reply`, a reply tagged `tag` that came over connection `generation`;
    /// if it answers another request instead, that connection is out of step: discarded,
    /// and the call fails.
    pub(crate) fn answer(
        &self,
        reply: Value,
        tag: &str,
        generation: u64,
    ) -> std::result::Result<Value, CallError> {
        untag(reply, tag).map_err(|reply| {
            tracing::warn!(server = %self.server, "pylock: a reply to another request, reconnecting");
            self.discard(generation);
            CallError::OutOfStep(reply)
        })
    }

    /// Forgets connection `generation` if it is still a current one.
    fn discard(&self, generation: u64) {
        self.current.forget_all_if(|(g, _)| *g == generation);
    }

    async fn connect(&self) -> std::result::Result<Connection, CallError> {
        match &self.connector {
            Connector::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeouts.connect))
                    .set_response_timeout(Some(self.timeouts.response))
                    // One connect attempt per call: a call must fail within its timeouts
                    // while the server is down, and the next call tries again.
                    .set_number_of_retries(0);
                ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map(Connection::Single)
                    .map_err(CallError::Redis)
            }
            Connector::Cluster(client) => {
                // The cluster client finds the slots from the seeds, follows MOVED/ASK and
                // reconnects to nodes by itself; only its first contact can fail.
                let limit = self.limit();
                match tokio::time::timeout(limit, client.get_async_connection()).await {
                    Ok(Ok(connection)) => Ok(Connection::Cluster(connection)),
                    Ok(Err(e)) => Err(CallError::Redis(e)),
                    Err(_) => Err(CallError::TimedOut(limit)),
                }
            }
        }
    }

    /// Runs one script within [`Calls::limit`], tagged (see the module's documentation):
    /// the tag is added as the script's last argument here, and taken off its reply.
    ///
    /// A connection that died under us (the server restarted) is replaced by the connection
    /// manager; the call is then tried once more on the new one, so that, say, a guard's
    /// release right after a restart gets an answer instead of an error. Every script is safe
    /// to run twice: acquire recognises its own token, extend sets the same TTL, and a second
    /// release finds nothing to delete (reported as a lost lock, which is then the truth on the
    /// server too).
    ///
    pub(crate) async fn invoke(
        &self,
        script: &mut ScriptInvocation<'_>,
    ) -> std::result::Result<Value, CallError> {
        let tag = next_tag();
        script.arg(&tag);
        let limit = self.limit();
        let mut retried = false;
        loop {
            let (generation, mut connection) = self.current_connection().await?;
            match tokio::time::timeout(limit, script.invoke_async(&mut connection)).await {
                Ok(Ok(value)) => return self.answer(value, &tag, generation),
                Ok(Err(error)) if error.kind() == redis::ErrorKind::Parse => {
                    tracing::warn!(%error, server = %self.server, "pylock: unreadable reply, reconnecting");
                    self.discard(generation);
                    if retried {
                        return Err(CallError::Redis(error));
                    }
                    retried = true;
                }
                Ok(Err(error)) if !retried && error.is_connection_dropped() => {
                    tracing::debug!(%error, "pylock: redis connection dropped, retrying once");
                    retried = true;
                }
                Ok(Err(error)) => return Err(CallError::Redis(error)),
                Err(_) => return Err(CallError::TimedOut(limit)),
            }
        }
    }

    /// Runs one script and converts its reply, mapping errors to pylock's.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        context: &'static str,
        script: &mut ScriptInvocation<'_>,
    ) -> Result<T> {
        let value = self
            .invoke(script)
            .await
            .map_err(|e| e.into_error(context, &self.server))?;
        redis::from_redis_value(value)
            .map_err(|e| CallError::Redis(e.into()).into_error(context, &self.server))
    }
}
