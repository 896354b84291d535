//! `open://`: a backend that **always acquires and never blocks. It is not a lock.**
//!
//! It is pylock 0.4's `OpenLock`, kept for tests that exercise code paths around a lock
//! without a server and without caring whether the lock excludes anyone. Every acquire
//! succeeds at once, for any number of holders; release and extend always report that the
//! caller held the lock. Its [`Capabilities`] say `exclusive: false`, so the conformance
//! suite asks only the checks that do not need exclusion of it.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pylock_core::Result<()> {
//! use pylock_core::{Locks, Registry};
//!
//! Registry::global().install(pylock_open::BACKENDS); // the `pylock` facade does this for you
//! let locks = Locks::connect("open://")?;
//! let a = locks.lock("k").acquire().await?;
//! let b = locks.lock("k").acquire().await?; // both "hold" it: open:// excludes nobody
//! a.release().await?;
//! b.release().await?;
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

use std::sync::Arc;
use std::time::Duration;

use pylock_core::Result;
use pylock_core::raw::{
    Attempt, BackendDescriptor, Capabilities, ConnectionUrl, Holder, LockBackend, Token,
    async_trait,
};

/// `open://`, for [`Registry::install`](pylock_core::Registry::install).
pub const BACKENDS: &[BackendDescriptor] = &[BackendDescriptor {
    name: "open",
    schemes: &["open"],
    open: |url| Ok(Arc::new(OpenBackend::from_url(url)?)),
}];

/// The never-blocking backend. See the [crate docs](crate).
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenBackend;

impl OpenBackend {
    /// The backend.
    pub fn new() -> Self {
        OpenBackend
    }

    /// Builds the backend for an `open://` URL, which takes no host, path or options.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`](pylock_core::Error::InvalidUrl) for anything after `open://`
    /// other than options; [`Error::UnknownOption`](pylock_core::Error::UnknownOption) for
    /// any option.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = ConnectionUrl::parse(url)?;
        url.options(&[])?;
        if !url.hosts().is_empty()
            || url.username().is_some()
            || url.password().is_some()
            || !matches!(url.path(), "" | "/")
        {
            return Err(url.invalid("open:// takes nothing after the scheme"));
        }
        Ok(OpenBackend)
    }
}

#[async_trait]
impl LockBackend for OpenBackend {
    fn name(&self) -> &'static str {
        "open"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_exclusive(false)
            .with_inspection(true)
    }

    async fn try_acquire(&self, _key: &str, _token: &Token, _ttl: Duration) -> Result<Attempt> {
        Ok(Attempt::Acquired { fence: None })
    }

    async fn release(&self, _key: &str, _token: &Token) -> Result<bool> {
        Ok(true)
    }

    async fn extend(&self, _key: &str, _token: &Token, _ttl: Duration) -> Result<bool> {
        Ok(true)
    }

    /// Nobody ever holds an `open://` lock.
    async fn inspect(&self, _key: &str) -> Result<Option<Holder>> {
        Ok(None)
    }

    /// There is never anything to release.
    async fn force_release(&self, _key: &str) -> Result<bool> {
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylock_core::Error;
    use pylock_core::Registry;

    #[test]
    fn urls() {
        assert!(OpenBackend::from_url("open://").is_ok());
        assert!(OpenBackend::from_url("OPEN:///").is_ok());
        assert!(matches!(
            OpenBackend::from_url("open://?strict=1"),
            Err(Error::UnknownOption { .. })
        ));
        assert!(matches!(
            OpenBackend::from_url("open://somehost"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn registers_its_scheme() {
        let registry = Registry::new();
        registry.install(BACKENDS);
        assert_eq!(registry.schemes(), vec!["open".to_owned()]);
        assert!(registry.connect("open://").is_ok());
    }
}
