//! The backend author's API, apart from the user's: what a crate that adds a lock server to
//! pylock implements and uses. Applications never need it.
//!
//! # Writing a backend, step by step
//!
//! **1. The primitives.** Implement [`LockBackend`]: `try_acquire`, `release` and `extend`,
//! each one atomic step on the server, plus [`name`](LockBackend::name) and
//! [`capabilities`](LockBackend::capabilities). When they are called, the core has already
//! checked the key and the TTL (against [`Capabilities::max_key_len`] and
//! [`Capabilities::max_ttl`]), added the key prefix, and made the owner [`Token`] (128 random
//! bits; all attempts of one acquire share it, so an attempt that finds its own token has
//! the lock). Everything else (waiting, deadlines, guards, renewal, loss detection, tracing)
//! is the core's, done once for every backend.
//!
//! - `try_acquire` answers [`Attempt::Acquired`] (with a fence if the backend gives them) or
//!   [`Attempt::Held`] (with the holder's remaining time when the same round trip can tell:
//!   a waiter never sleeps past it).
//! - `release` and `extend` act only if `token` still owns the key, and say whether it did;
//!   `false` becomes [`Error::Lost`](crate::Error::Lost) for the user.
//! - A server that cannot be reached is [`Error::Unavailable`](crate::Error::Unavailable) (the
//!   wait loop tries again until its deadline); anything retrying will not fix is
//!   [`Error::Backend`](crate::Error::Backend).
//!
//! **2. What it can do.** [`Capabilities`] declare the rest, and both the core and the
//! conformance suite read them: fencing, release notices, TTL granularity and limits, key
//! length, inspection (for `pylock status` and `release --force`: implement
//! [`inspect`](LockBackend::inspect) and [`force_release`](LockBackend::force_release), and
//! touch only keys that are locks of ours), clock drift, and fair queues.
//!
//! **3. Waking waiters.** A backend with a way to announce releases implements
//! [`subscribe`](LockBackend::subscribe): the core subscribes *before* each attempt that may
//! precede a wait, so a release between the attempt and the wait still wakes the waiter.
//! [`NoticeBoard`] does the bookkeeping: one entry per key with local waiters; the backend
//! calls [`NoticeBoard::notify`] when it hears of a release (it wakes one waiter, who passes
//! the wake-up on if it gives up: see [`ReleaseNotice::pass_on`]), and
//! [`NoticeBoard::set_healthy`] when its notice channel goes down or comes back, so that
//! waiters poll meanwhile. Without notices, waiters poll with jittered, capped backoff.
//!
//! **4. Fair queues (optional).** [`try_acquire_fair`](LockBackend::try_acquire_fair) keeps a
//! first-come, first-served queue on the server, [`leave_queue`](LockBackend::leave_queue)
//! takes a waiter out when it gives up, and
//! [`subscribe_waiter`](LockBackend::subscribe_waiter) with
//! [`NoticeBoard::notify_waiter`] wakes exactly the waiter whose turn it is. Declare
//! [`Capabilities::fair`].
//!
//! **5. Connections.** A connection's tasks run on the tokio runtime that made it; keep one
//! per calling runtime with [`PerRuntime`], so that a runtime that stops running (a blocked
//! thread, an ended `#[tokio::test]`) never holds up the others.
//!
//! **6. The URL.** Parse it with [`ConnectionUrl`] (several hosts, IPv6, passwords with any
//! character, kept out of every message), read options with [`Options`] (unknown ones are
//! errors), take the usual `connect_timeout` and `response_timeout` as [`Timeouts`], and
//! refuse anything you cannot use with [`ConnectionUrl::invalid`]. Then describe the backend
//! with a [`BackendDescriptor`] (its schemes and that parsing function) and export it as
//! `BACKENDS`, as every backend of ours does; users install it with
//! [`Registry::install`](crate::Registry::install).
//!
//! **7. Conformance.** Run the suite (feature `conformance`) against a real server in your
//! tests; it is the spec. `conformance::trials` makes one named test per rule (run them with
//! `libtest-mimic` in a `harness = false` test), so you see every broken rule at once, and
//! rules your [`Capabilities`] exclude are reported as ignored, with the reason.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use pylock_core::raw::{
//!     Attempt, BackendDescriptor, Capabilities, ConnectionUrl, LockBackend, Token, async_trait,
//! };
//! use pylock_core::{Registry, Result};
//!
//! /// Stands in for a server.
//! #[derive(Debug, Default)]
//! struct Mine;
//!
//! #[async_trait]
//! impl LockBackend for Mine {
//!     fn name(&self) -> &'static str {
//!         "mine"
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities::default()
//!     }
//!     async fn try_acquire(&self, _key: &str, _token: &Token, _ttl: Duration) -> Result<Attempt> {
//!         Ok(Attempt::Acquired { fence: None }) // a real one asks its server
//!     }
//!     async fn release(&self, _key: &str, _token: &Token) -> Result<bool> {
//!         Ok(true)
//!     }
//!     async fn extend(&self, _key: &str, _token: &Token, _ttl: Duration) -> Result<bool> {
//!         Ok(true)
//!     }
//! }
//!
//! fn open(url: &str) -> Result<Arc<dyn LockBackend>> {
//!     let url = ConnectionUrl::parse(url)?;
//!     url.options(&[])?; // no options: any given is an error
//!     Ok(Arc::new(Mine))
//! }
//!
//! pub const BACKENDS: &[BackendDescriptor] =
//!     &[BackendDescriptor { name: "mine", schemes: &["mine"], open }];
//!
//! let registry = Registry::new();
//! registry.install(BACKENDS);
//! assert!(registry.connect("mine://?strict=1").is_err());
//! assert!(registry.connect("mine://").is_ok());
//! ```

pub use async_trait::async_trait;

pub use crate::backend::{Attempt, Capabilities, Holder, LockBackend};
pub use crate::notice::{IdleHook, NoticeBoard, ReleaseNotice};
pub use crate::per_runtime::PerRuntime;
pub use crate::registry::{BackendDescriptor, Factory};
pub use crate::tls::{TLS_OPTIONS, TlsFiles, certificate_refused, is_certificate_error};
pub use crate::token::Token;
pub use crate::url::{
    CALL_MARGIN, ConnectionUrl, DEFAULT_CONNECT_TIMEOUT, DEFAULT_RESPONSE_TIMEOUT, HostPort,
    MAX_OPTION_TIMEOUT, Options, Password, Timeouts,
};
