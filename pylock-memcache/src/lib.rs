//! `memcache://` backend for [pylock](https://docs.rs/pylock): the backend pylock 0.4 promised
//! ("coming soon") and never shipped, done safely.
//!
//! | URL | meaning |
//! |---|---|
//! | `memcache://` | `localhost:11211` |
//! | `memcache://host[:port]` | one server |
//! | `memcache://h1:11211,h2:11211` | a pool: each key always goes to the same server |
//!
//! Options: `connect_timeout`, `response_timeout` (default `1s` each). Unknown options are
//! errors. See [`MemcacheConfig`].
//!
//! How each operation works, in memcached's meta protocol (memcached 1.6 or later; see
//! [`MemcacheBackend`]):
//!
//! - acquire: `add` with a TTL (`ms ... ME`), one round trip, which also reads the holder's
//!   remaining TTL when the lock is taken;
//! - release: read the value and CAS id, then delete only if the CAS id still matches
//!   (`md <key> C<cas>`), so a lock that expired and was taken over is never deleted;
//! - extend: the same check, then a CAS `set` with the new TTL;
//! - waiting: jittered, capped exponential backoff (memcached has no notifications), never
//!   past the holder's remaining TTL.
//!
//! TTLs: memcached counts whole seconds, so a lock's TTL is rounded **up** to whole seconds
//! and one second is added for memcached's clock tick (an item stored for `n` seconds may go
//! up to a second early); a lock lives at least its `expires`. Expiries over 30 days, which memcached would read as a Unix time, are refused
//! with `Error::InvalidOption` ([`MAX_TTL`]).
//!
//! Keys: any lock name works. Names memcached cannot carry (over 250 bytes, spaces, control
//! characters, non-ASCII) are encoded injectively ([`keys::encode`]), so `"k\r\nflush_all"`
//! is a lock name, never a command.
//!
//! No fencing tokens: memcached cannot increment a counter atomically with the `add`.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pylock_core::Result<()> {
//! use pylock_core::{Locks, Registry};
//!
//! Registry::global().install(pylock_memcache::BACKENDS); // the `pylock` facade does this for you
//! let locks = Locks::connect("memcache://127.0.0.1:11211")?;
//! let guard = locks.lock("nightly-report").acquire().await?;
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
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
mod protocol;

use std::sync::Arc;

use pylock_core::raw::BackendDescriptor;

pub use backend::{MAX_TTL, MemcacheBackend};
pub use config::{DEFAULT_HOST, DEFAULT_PORT, MemcacheConfig, OPTIONS};

/// `memcache://`, for [`Registry::install`](pylock_core::Registry::install).
pub const BACKENDS: &[BackendDescriptor] = &[BackendDescriptor {
    name: "memcache",
    schemes: &["memcache"],
    open: |url| Ok(Arc::new(MemcacheBackend::from_url(url)?)),
}];
