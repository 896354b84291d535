//! The one connection a backend sends its scripts through: a single server's auto-reconnecting
//! multiplexed connection, or a Redis Cluster connection that follows slots, redirections and
//! failovers by itself. The scripts are the same for both; their keys share one slot.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

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
    /// `WAIT numreplicas timeout` on the server that holds `key`: how many replicas have
    /// acknowledged this connection's writes so far.
    pub(crate) async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u64,
        timeout_ms: u64,
    ) -> RedisResult<u64> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas).arg(timeout_ms);
        match self {
            Connection::Single(connection) => wait.query_async(connection).await,
            Connection::Cluster(connection) => {
                // WAIT names no key; route it to the master of the lock's slot, where the
                // lock was just written.
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                let value = connection
                    .route_command(
                        wait,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await?
                    // The server's error reply (a demoted master refuses WAIT) as an error,
                    // not as a value of the wrong type.
                    .extract_error()?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

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
