//! `redis://` backend for [pylock](https://docs.rs/pylock): locks on a Redis (or Valkey)
//! server, done the safe way.
//!
//! | URL | meaning |
//! |---|---|
//! | `redis://` | `localhost:6379`, database 0, as in pylock 0.4 |
//! | `redis://[user[:password]@]host[:port][/db]` | with ACL user or `requirepass` password |
//! | `rediss://...?ca_file=/path/ca.pem` | the same over TLS (feature `tls`), trusting the system's roots or `ca_file` |
//! | `redis+unix:///path/to/redis.sock?db=N` | a Unix socket |
//! | `redis+cluster://seed1:7000,seed2:7001` | a Redis Cluster (see below); `rediss+cluster://` over TLS |
//! | `redlock://h1:6379,h2:6380,h3:6381` | Redlock on independent masters ([`redlock`]) |
//!
//! Options (`?name=value&...`): `db`, `connect_timeout` and `response_timeout` (default `1s`
//! each: while the server is down a call fails within their sum), `fencing` (default
//! `true`), `wait_replicas` and `wait_timeout`, and for TLS `ca_file`, `cert_file` and
//! `key_file`. Unknown options are errors. See
//! [`RedisConfig`] and [`RedlockConfig`].
//!
//! How each operation works (all atomic on the server, see [`RedisBackend`]):
//!
//! - acquire: `SET key token NX PX ms` in a script that also returns the holder's `PTTL`
//!   when the key is taken, and gives the next fencing token when it is not;
//! - release: `if GET key == token then DEL key`, in a script, which also publishes on the
//!   lock's channel if a waiter marked the lock;
//! - extend: `if GET key == token then PEXPIRE key ms`, in a script;
//! - waiting: one shared pub/sub connection per backend; waiters subscribe to the lock's
//!   channel (confirmed by the server) before the attempt that precedes their wait, that
//!   attempt marks the lock as waited for (a `+` after the holder's token), and the release
//!   wakes them in about one round trip. Polling stays as the bounded fallback.
//!
//! Scripts go by `EVALSHA` and are loaded again when the server answers `NOSCRIPT`. Under
//! load, concurrent acquires (and releases) of different locks on one server go out several
//! to a script call, which cuts the server's time per lock ([`RedisBackend`]); an uncontended
//! call is never held back.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pylock_core::Result<()> {
//! use pylock_core::{Locks, Registry};
//!
//! Registry::global().install(pylock_redis::BACKENDS); // the `pylock` facade does this for you
//! let locks = Locks::connect("redis://127.0.0.1:6379/0")?;
//! let guard = locks.lock("nightly-report").acquire().await?;
//! println!("fencing token {:?}", guard.fence());
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Redis Cluster
//!
//! `redis+cluster://` goes through the `redis` crate's cluster connection, which learns the
//! slots from the seed nodes, follows `MOVED`/`ASK` redirections and reconnects after a
//! failover by itself. A lock's key and its fencing counter share one hash slot (see
//! [`keys`]), so each script runs on one master. Release notices are published on the
//! cluster bus and heard on whichever seed node the subscriber reached.
//!
//! What a failover can lose: Redis replicates asynchronously. A lock written on a master
//! that dies before a replica has it is gone after the replica is promoted, and a second
//! client can then get the same lock while the first still believes it holds it. With
//! `?wait_replicas=1` every acquire and extend waits (`WAIT`, up to `wait_timeout`) until a
//! replica acknowledged it, and an acquire that no replica acknowledged is given back and
//! reported as `Error::Unavailable`; an acknowledged lock survives the failover of its master
//! (tested). `WAIT` still does not make Redis strongly consistent: a failover that promotes
//! a replica which had not yet received the write (a second failure, or a manual failover
//! choosing a lagging replica) can lose it. For
//! locks that must survive any single failure, use Redlock over independent masters, or give
//! the protected resource fencing.
//!
//! Fencing tokens: the fence of an acquire is the lock's counter plus one
//! (`{<key>}:pylock-fence`, in the lock's slot, kept with the lock's TTL), or, when there is
//! no counter, the server's clock in microseconds (`TIME`), which then starts a new counter
//! (the acquire script's comments say why that never goes back). So fences strictly increase per lock
//! across releases, expiries, eviction of the lock or its counter, `FLUSHALL`, a restart
//! without persistence and a failover (all tested), and no counter outlives its lock by more
//! than one TTL. The one assumption left: the server's clock does not go back, and a promoted
//! replica's clock is not behind its old master's by more than the failover took (seconds, so
//! NTP-synchronised clocks are plenty). Lock names ending in `:pylock-fence` are refused, so
//! that no name can address a counter.
//!
//! Operators' tools (`inspect`, `force_release`) act only on keys that hold a lock of ours (a
//! string of an owner token, with a TTL); anything else is `Error::NotALock` and left alone.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Library code returns errors and logs through `tracing`; tests may unwrap and print.
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]

mod backend;
mod calls;
mod coalesce;
mod config;
mod connection;
mod errors;
pub mod keys;
mod notices;
pub mod redlock;
// The Lua scripts, for pylock's own benchmark (the server's cost of each call): not part of
// the API, they change with any release.
#[doc(hidden)]
pub mod scripts;
mod tls;

use std::sync::Arc;

use pylock_core::raw::BackendDescriptor;

pub use backend::RedisBackend;
pub use config::{
    DEFAULT_HOST, DEFAULT_NODE_TIMEOUT, DEFAULT_PORT, DEFAULT_RESTART_GUARD, DEFAULT_WAIT_TIMEOUT,
    OPTIONS, REDLOCK_OPTIONS, RedisConfig, RedlockConfig,
};
pub use redlock::RedlockBackend;

/// `redis://` and its variants ([`RedisBackend`]) and `redlock://` ([`RedlockBackend`]), for
/// [`Registry::install`](pylock_core::Registry::install).
pub const BACKENDS: &[BackendDescriptor] = &[
    BackendDescriptor {
        name: "redis",
        schemes: &[
            "redis",
            "rediss",
            "redis+unix",
            "redis+cluster",
            "rediss+cluster",
        ],
        open: |url| Ok(Arc::new(RedisBackend::from_url(url)?)),
    },
    BackendDescriptor {
        name: "redlock",
        schemes: &["redlock"],
        open: |url| Ok(Arc::new(RedlockBackend::from_url(url)?)),
    },
];
