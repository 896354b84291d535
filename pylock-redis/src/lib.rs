//! `redis://` backend for [pylock](https://docs.rs/pylock): locks on a Redis (or Valkey)
//! server, done the safe way.
//!
//! | URL | meaning |
//! |---|---|
//! | `redis://` | `localhost:6379`, database 0, as in pylock 0.4 |
//! | `redis://[user[:password]@]host[:port][/db]` | with ACL user or `requirepass` password |
//! | `rediss://...` | the same over TLS (feature `tls`) |
//! | `redis+unix:///path/to/redis.sock?db=N` | a Unix socket |
//!
//! Options (`?name=value&...`): `db`, `connect_timeout` and `response_timeout` (default `1s`
//! each: while the server is down a call fails within their sum), `fencing` (default
//! `true`). Unknown options are errors. See [`RedisConfig`].
//!
//! How each operation works (all atomic on the server, see [`RedisBackend`]):
//!
//! - acquire: `SET key token NX PX ms` in a script that also returns the holder's `PTTL`
//!   when the key is taken, and increments the lock's fencing counter when it is not;
//! - release: `if GET key == token then DEL key; PUBLISH <channel>`, in a script;
//! - extend: `if GET key == token then PEXPIRE key ms`, in a script;
//! - waiting: one shared pub/sub connection per backend; waiters subscribe to the lock's
//!   channel (confirmed by the server) before the attempt that precedes their wait, and a
//!   release wakes them in about one round trip. Polling stays as the bounded fallback.
//!
//! Scripts go by `EVALSHA` and are loaded again when the server answers `NOSCRIPT`.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pylock_core::Result<()> {
//! use pylock_core::Locks;
//!
//! pylock_redis::register(); // the `pylock` facade does this for you
//! let locks = Locks::connect("redis://127.0.0.1:6379/0")?;
//! let guard = locks.lock("nightly-report").acquire().await?;
//! println!("fencing token {:?}", guard.fence());
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Fencing tokens: each lock name has a counter key (`{<key>}:pylock-fence`, no TTL) that
//! the acquire script increments. It is never deleted by pylock, so tokens keep increasing
//! across releases, expiries and eviction of the lock key; under an `allkeys-*` eviction
//! policy the counter itself could be evicted, so use a `volatile-*` policy (or none) when
//! you rely on fencing.
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
mod config;
mod connection;
mod errors;
pub mod keys;
mod notices;
pub mod redlock;
pub mod scripts;

use std::sync::Arc;

use pylock_core::{LockBackend, Registry};

pub use backend::RedisBackend;
pub use config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_HOST, DEFAULT_NODE_TIMEOUT, DEFAULT_PORT,
    DEFAULT_RESPONSE_TIMEOUT, DEFAULT_WAIT_TIMEOUT, OPTIONS, REDLOCK_OPTIONS, RedisConfig,
    RedlockConfig,
};
pub use redlock::RedlockBackend;

/// The URL schemes of this crate's backends.
pub const SCHEMES: &[&str] = &["redis", "rediss", "redis+unix", "redis+cluster", "redlock"];

/// Adds this crate's schemes to `registry`.
pub fn register_in(registry: &Registry) {
    for scheme in SCHEMES {
        if *scheme == "redlock" {
            registry.register(scheme, |url: &str| {
                Ok(Arc::new(RedlockBackend::from_url(url)?) as Arc<dyn LockBackend>)
            });
        } else {
            registry.register(scheme, |url: &str| {
                Ok(Arc::new(RedisBackend::from_url(url)?) as Arc<dyn LockBackend>)
            });
        }
    }
}

/// Adds this backend's schemes to the process-wide [`Registry::global`].
pub fn register() {
    register_in(Registry::global());
}
