//! The one connection a backend sends its scripts through: a single server's auto-reconnecting
//! multiplexed connection, or a Redis Cluster connection that follows slots, redirections and
//! failovers by itself. The scripts are the same for both; their keys share one slot.

use std::sync::LazyLock;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

use crate::scripts::{HOLDER, answering};

#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The drivers' own Debug output would show connection settings; say only the kind.
        f.write_str(match self {
            Connection::Single(_) => "Connection::Single",
            Connection::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl Connection {
    /// On the server that holds `key` now, in one pipeline on one connection: confirm that
    /// `key` still holds `token` (setting its TTL again, a write of this connection's), then
    /// `WAIT numreplicas timeout`. Returns the confirmation's reply, tagged with `tag`
    /// ([`answering`]: `{tag, 1}` if the lock is there), and how many replicas acknowledged
    /// the connection's writes, that one included.
    ///
    /// Both go to the same node in order, so a slot map that changed since the lock was
    /// written cannot make `WAIT` vouch for a node that does not have the lock: that node
    /// answers "not confirmed" instead.
    pub(crate) async fn confirm_and_wait(
        &mut self,
        key: &str,
        token: &str,
        ttl_ms: u64,
        replicas: u64,
        timeout_ms: u64,
        tag: &str,
    ) -> RedisResult<(Value, u64)> {
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("EVAL")
            .arg(CONFIRM.as_str())
            .arg(1)
            .arg(key)
            .arg(token)
            .arg(ttl_ms)
            .arg(tag)
            .cmd("WAIT")
            .arg(replicas)
            .arg(timeout_ms);
        let values: Vec<Value> = match self {
            Connection::Single(connection) => pipeline.query_async(connection).await?,
            Connection::Cluster(connection) => {
                // WAIT names no key; both go to the master of the lock's slot.
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                connection
                    .route_pipeline(pipeline, 0, 2, SingleNodeRoutingInfo::SpecificNode(route))
                    .await?
            }
        };
        // A server's error reply (a demoted master refuses WAIT) as an error, not as a value
        // of the wrong type.
        let mut values = values.into_iter().map(Value::extract_error);
        let confirmation = values.next().transpose()?.unwrap_or(Value::Nil);
        let acknowledged = match values.next().transpose()? {
            Some(value) => redis::from_redis_value::<i64>(value)?,
            None => 0,
        };
        Ok((confirmation, u64::try_from(acknowledged).unwrap_or(0)))
    }
}

/// Sets the TTL of KEYS[1] again if it holds ARGV[1] (marked by a waiter or not); 1 if so.
/// Sent by `EVAL` inside a pipeline, where a `NOSCRIPT` reply could not be answered.
static CONFIRM: LazyLock<String> = LazyLock::new(|| {
    answering(&format!(
        r"{HOLDER}
if held_by(redis.call('GET', KEYS[1]), ARGV[1]) then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"
    ))
});

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(connection) => connection.req_packed_command(cmd),
            Connection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            Connection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(connection) => connection.get_db(),
            Connection::Cluster(_) => 0,
        }
    }
}
