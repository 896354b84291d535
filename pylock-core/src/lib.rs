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
//! # Writing a backend
//!
//! Implement [`LockBackend`] (four atomic primitives plus [`Capabilities`]), give it a
//! factory that parses its URL with [`url::ConnectionUrl`], and register it:
//! `Registry::global().register("myscheme", my_factory)`. Then run
//! `conformance::run_all` against it in a test (feature `conformance`).
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
mod error;
mod guard;
mod hold;
mod lock;
pub mod memory;
mod notice;
mod registry;
mod renewal;
mod settings;
mod token;
pub mod url;
mod wait;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

pub use async_trait::async_trait;

pub use backend::{Attempt, Capabilities, Holder, LockBackend};
pub use error::{BoxError, Error, Result};
pub use guard::LockGuard;
pub use hold::LostReason;
pub use lock::{DEFAULT_URL, Lock, Locks, MAX_EXPIRES, URL_ENV};
pub use memory::MemoryBackend;
pub use notice::{IdleHook, NoticeBoard, ReleaseNotice};
pub use registry::{Factory, Registry};
pub use settings::{Backoff, DEFAULT_EXPIRES, DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT, Settings};
pub use token::Token;
