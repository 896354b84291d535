//! Shared fixtures of pylock's integration tests: real servers (see [`server`]) and small
//! helpers to watch a test's traces.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod docker;
pub mod etcd_cluster;
pub mod faults;
pub mod proxy;
pub mod server;
pub mod skip;
pub mod tls;
pub mod traces;

pub use cluster::{ClusterTls, TestCluster};
pub use proxy::{Fault, FaultProxy};
pub use server::{Kind, Needs, Provider, TestServer};

/// A plain connection to the Redis server at `url`, to look at (or stage) what pylock finds
/// there, bypassing pylock.
pub async fn raw_redis(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// A plain client of the etcd server at `url` (`etcd://host:port`), to look at what pylock
/// keeps there, bypassing pylock.
pub async fn raw_etcd(url: &str) -> etcd_client::Client {
    let endpoint = url.replace("etcd://", "http://");
    etcd_client::Client::connect([endpoint], None)
        .await
        .expect("connect")
}
