//! The core of [pylock](https://docs.rs/pylock), a distributed lock library: the
//! [`LockBackend`] trait that backends implement, the [`Registry`] of URL schemes, the
//! [`Lock`]/[`LockGuard`] handles with the one wait loop, the [`Settings`] carried over from
//! pylock 0.4, the [`Error`] type, the in-process [`memory`] backend and (feature
//! `conformance`) the behaviour suite every backend runs.
//!
//! Applications normally depend on the `pylock` facade, which re-exports this crate and
//! installs the backends its features enable. Backend authors depend on this crate only.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pylock_core::Result<()> {
//! use std::time::Duration;
//! use pylock_core::Locks;
//!
//! let locks = Locks::connect("memory://")?;
//! let lock = locks.lock("a_key").expires(Duration::from_secs(60)).timeout(Duration::from_secs(10));
//! let guard = lock.acquire().await?;   // waits at most `timeout`, holds for at most `expires`
//! // ... the work that must happen one at a time ...
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What the core guarantees, whatever the backend
//!
//! - Release and extend go through the owner token of the hold (128 random bits from the
//!   OS), so nobody else's lock is ever freed or prolonged; a lost lock is reported as
//!   [`Error::Lost`].
//! - A guard's [`remaining`](LockGuard::remaining) time is measured on the monotonic clock
//!   from when the acquire request was *sent*, never from wall clocks.
//! - A guard dropped without release is released in the background; an acquire cancelled
//!   mid-attempt releases its token in the background; without a runtime the TTL ends both.
//! - Waiters subscribe to release notices before their first attempt (no lost wake-ups),
//!   poll with jittered capped backoff as a fallback, and never sleep past their deadline or
//!   the holder's remaining TTL.
//! - Bad input is a typed error, never a panic.
//!
//! # Holding a lock safely
//!
//! A lease lock is only as safe as what happens while it is held. Three tools:
//!
//! **Auto-renewal** for work of unknown length: the guard extends the lock every third of
//! `expires` until released, with an optional bound on the whole hold so a stuck holder cannot
//! keep it forever.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pylock_core::Result<()> {
//! use std::time::Duration;
//! use pylock_core::Locks;
//!
//! let locks = Locks::connect("memory://")?;
//! let lock = locks
//!     .lock("reindex")
//!     .expires(Duration::from_millis(100)) // a crashed holder frees it within 100 ms
//!     .auto_renew()
//!     .max_hold(Duration::from_secs(3600)); // but nobody holds it over an hour
//! let guard = lock.acquire().await?;
//! tokio::time::sleep(Duration::from_millis(350)).await; // longer than `expires`
//! assert!(!guard.is_lost());
//! guard.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! **Loss detection**: [`LockGuard::lost`] resolves when the lock is lost (renewal found
//! another owner or failed past the TTL, the validity estimate ran out), and
//! [`Lock::run_until_lost`] stops the protected future then and returns [`Error::Lost`],
//! instead of letting it go on unprotected.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pylock_core::Result<()> {
//! use std::time::Duration;
//! use pylock_core::{Error, Locks};
//!
//! let locks = Locks::connect("memory://")?;
//! // Without renewal, work that outlives `expires` is cut off when the lock runs out.
//! let lock = locks.lock("payout").expires(Duration::from_millis(50));
//! let result = lock.run_until_lost(async {
//!     tokio::time::sleep(Duration::from_secs(3600)).await; // stuck
//! }).await;
//! assert!(matches!(result, Err(Error::Lost { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! **Fencing tokens**: no lease can stop a holder that paused (GC, swap, a stopped VM) past its
//! TTL from waking up and writing. A fencing token can: it grows with every hold of the lock,
//! so the resource remembers the largest it has seen and refuses writes with a smaller one.
//! [`Capabilities::fencing`] says which backends give them (`memory://`, `redis://`; not
//! `memcache://` or `open://`).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Mutex;
//! use pylock_core::Locks;
//!
//! /// A store that refuses writes from holders older than one it has already seen.
//! struct FencedStore {
//!     highest_fence: Mutex<u64>,
//!     value: Mutex<String>,
//! }
//!
//! impl FencedStore {
//!     fn write(&self, fence: u64, value: &str) -> Result<(), String> {
//!         let mut highest = self.highest_fence.lock().unwrap();
//!         if fence < *highest {
//!             return Err(format!("stale holder: fence {fence} < {}", *highest));
//!         }
//!         *highest = fence;
//!         *self.value.lock().unwrap() = value.to_owned();
//!         Ok(())
//!     }
//! }
//!
//! let store = FencedStore { highest_fence: Mutex::new(0), value: Mutex::new(String::new()) };
//! let locks = Locks::connect("memory://")?;
//! assert!(locks.backend().capabilities().fencing);
//!
//! let old = locks.lock("config").acquire().await?;
//! let old_fence = old.fence().expect("memory:// gives fencing tokens");
//! old.release().await?; // say it paused and lost the lock here...
//! let new = locks.lock("config").acquire().await?;
//! store.write(new.fence().unwrap(), "new")?;
//! // ...and woke up to write: the store refuses it.
//! assert!(store.write(old_fence, "old").is_err());
//! assert_eq!(*store.value.lock().unwrap(), "new");
//! new.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Writing a backend
//!
//! The backend author's API lives apart from the user's, in [`raw`], whose docs walk through
//! writing one step by step: implement [`LockBackend`], describe it with a
//! [`BackendDescriptor`](raw::BackendDescriptor), install it with [`Registry::install`], and run
//! the conformance suite (feature `conformance`) against a real server.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.88, the oldest our dependencies build with. Raising it is a minor-version change.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Library code returns errors and logs through `tracing`; tests may unwrap and print.
#![warn(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod background;
mod error;
mod guard;
mod hold;
mod lock;
pub mod memory;
mod notice;
mod per_runtime;
pub mod raw;
mod registry;
mod renewal;
mod request;
mod settings;
mod tls;
mod token;
mod url;
mod wait;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use backend::{Capabilities, Holder, LockBackend};
pub use background::settle;
pub use error::{BoxError, Error, Result};
pub use guard::LockGuard;
pub use hold::LostReason;
pub use lock::{DEFAULT_FAIR_PATIENCE, DEFAULT_URL, Lock, Locks, URL_ENV};
pub use memory::MemoryBackend;
pub use registry::Registry;
pub use request::{MAX_EXPIRES, NO_LIMIT};
pub use settings::{Backoff, DEFAULT_EXPIRES, DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT, Settings};
pub use url::redact_url;
pub use wait::FINAL_ATTEMPT_GRACE;

/// The backends every [`Registry::with_builtins`] (and so [`Registry::global`]) starts with.
/// The crate root lists them so that the registry itself names no backend.
const BUILT_IN: &[registry::BackendDescriptor] = memory::BACKENDS;
