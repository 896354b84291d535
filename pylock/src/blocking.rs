//! A synchronous API for code without an async runtime (feature `blocking`).
//!
//! The same locks as the async API, driven by a small current-thread tokio runtime that runs
//! *on the calling thread*: a call does not hop to another thread and back, it polls the
//! backend's I/O right where it was made. The runtime is shared by all blocking clients of the
//! process and only runs while some thread is inside a call.
//!
//! The guard releases on drop, like a `MutexGuard`:
//!
//! ```
//! use std::time::Duration;
//! use pylock::blocking::Locks;
//!
//! let locks = Locks::connect("memory://")?;
//! let lock = locks.lock("nightly-report").expires(Duration::from_secs(60));
//! {
//!     let _guard = lock.acquire()?;
//!     // ... one process at a time ...
//! } // released here
//! let total = lock.run(|| 40 + 2)?;
//! assert_eq!(total, 42);
//! # Ok::<(), pylock::Error>(())
//! ```
//!
//! Calling it from inside an async runtime would block that runtime's thread, so every
//! call there returns [`Error::BlockingInRuntime`] instead; use the async API there.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

use crate::install_default_backends;
use pylock_core::{Error, Result};

/// The runtime every blocking call runs its future on, on the caller's thread.
fn runtime() -> Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    let runtime = Builder::new_current_thread()
        .enable_all()
        .thread_name("pylock-blocking")
        .build()
        .map_err(|e| Error::Backend {
            backend: "blocking",
            context: "starting the runtime of pylock::blocking".to_owned(),
            source: Box::new(e),
        })?;
    Ok(RUNTIME.get_or_init(|| runtime))
}

/// Runs `future` to completion on the calling thread.
fn block_on<F: Future>(future: F) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Error::BlockingInRuntime);
    }
    Ok(runtime()?.block_on(future))
}

/// A blocking lock client: the blocking counterpart of [`crate::Locks`].
#[derive(Debug, Clone)]
pub struct Locks {
    inner: crate::Locks,
}

impl Locks {
    /// Wraps an async client.
    pub fn new(inner: crate::Locks) -> Self {
        Locks { inner }
    }

    /// A client for `url`. See [`crate::Locks::connect`].
    ///
    /// # Errors
    ///
    /// As for [`crate::Locks::connect`].
    pub fn connect(url: &str) -> Result<Self> {
        install_default_backends();
        crate::Locks::connect(url).map(Self::new)
    }

    /// The client for `PYLOCK_URL` (or `memory://`). See [`crate::Locks::from_env`].
    ///
    /// # Errors
    ///
    /// As for [`crate::Locks::from_env`].
    pub fn from_env() -> Result<Self> {
        install_default_backends();
        crate::Locks::from_env().map(Self::new)
    }

    /// Sets the default timeout of this client's locks.
    pub fn timeout(self, timeout: Duration) -> Self {
        Self::new(self.inner.timeout(timeout))
    }

    /// Sets the default expiry of this client's locks.
    pub fn expires(self, expires: Duration) -> Self {
        Self::new(self.inner.expires(expires))
    }

    /// Sets the key prefix of this client's locks.
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        Self::new(self.inner.key_prefix(prefix))
    }

    /// The async client underneath.
    pub fn as_async(&self) -> &crate::Locks {
        &self.inner
    }

    /// A lock named `key`.
    pub fn lock(&self, key: impl Into<String>) -> Lock {
        Lock {
            inner: self.inner.lock(key),
        }
    }
}

/// One named lock: the blocking counterpart of [`crate::Lock`].
#[derive(Debug, Clone)]
pub struct Lock {
    inner: crate::Lock,
}

impl Lock {
    /// A lock on the default backend (`PYLOCK_URL`, or `memory://`), like pylock 0.4's
    /// `Lock('a_key')`.
    pub fn new(key: impl Into<String>) -> Self {
        install_default_backends();
        Lock {
            inner: crate::Lock::new(key),
        }
    }

    /// How long [`acquire`](Self::acquire) waits; zero means one attempt.
    pub fn timeout(self, timeout: Duration) -> Self {
        Lock {
            inner: self.inner.timeout(timeout),
        }
    }

    /// How long the lock lives unless released or extended.
    pub fn expires(self, expires: Duration) -> Self {
        Lock {
            inner: self.inner.expires(expires),
        }
    }

    /// The key prefix for this lock.
    pub fn key_prefix(self, prefix: impl Into<String>) -> Self {
        Lock {
            inner: self.inner.key_prefix(prefix),
        }
    }

    /// Blocks until the lock is ours, at most the timeout. See [`crate::Lock::acquire`].
    ///
    /// # Errors
    ///
    /// As for [`crate::Lock::acquire`], and [`Error::BlockingInRuntime`].
    pub fn acquire(&self) -> Result<LockGuard> {
        block_on(self.inner.acquire())?.map(LockGuard::new)
    }

    /// One attempt: `Ok(None)` if someone else holds the lock.
    ///
    /// # Errors
    ///
    /// As for [`crate::Lock::try_acquire`], and [`Error::BlockingInRuntime`].
    pub fn try_acquire(&self) -> Result<Option<LockGuard>> {
        Ok(block_on(self.inner.try_acquire())??.map(LockGuard::new))
    }

    /// Runs `work` while holding the lock and releases it afterwards, also when `work`
    /// panics (the panic continues after the release).
    ///
    /// # Errors
    ///
    /// As for [`crate::Lock::run`].
    pub fn run<T>(&self, work: impl FnOnce() -> T) -> Result<T> {
        let guard = self.acquire()?;
        let output = work();
        guard.release()?;
        Ok(output)
    }
}

/// A held lock: released by [`release`](Self::release) or on drop.
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock at once"]
pub struct LockGuard {
    inner: Option<crate::LockGuard>,
}

impl LockGuard {
    fn new(inner: crate::LockGuard) -> Self {
        LockGuard { inner: Some(inner) }
    }

    fn inner(&self) -> &crate::LockGuard {
        // `inner` is taken only by methods that consume `self`, and by `Drop`.
        self.inner
            .as_ref()
            .unwrap_or_else(|| unreachable!("a LockGuard is used after release"))
    }

    /// The lock's name.
    pub fn key(&self) -> &str {
        self.inner().key()
    }

    /// The fencing token of this hold, if the backend gives them.
    pub fn fence(&self) -> Option<u64> {
        self.inner().fence()
    }

    /// How long the lock is surely still ours. See [`crate::LockGuard::remaining`].
    pub fn remaining(&self) -> Duration {
        self.inner().remaining()
    }

    /// Sets the lock's TTL to `ttl` from now, if it is still ours.
    ///
    /// # Errors
    ///
    /// As for [`crate::LockGuard::extend`], and [`Error::BlockingInRuntime`].
    pub fn extend(&mut self, ttl: Duration) -> Result<()> {
        match self.inner.as_mut() {
            Some(guard) => block_on(guard.extend(ttl))?,
            None => unreachable!("a LockGuard is used after release"),
        }
    }

    /// Releases the lock now.
    ///
    /// # Errors
    ///
    /// As for [`crate::LockGuard::release`], and [`Error::BlockingInRuntime`].
    pub fn release(mut self) -> Result<()> {
        match self.inner.take() {
            Some(guard) => block_on(guard.release())?,
            None => Ok(()),
        }
    }

    /// Gives up the guard without releasing; the lock expires by its TTL.
    pub fn abandon(mut self) {
        if let Some(guard) = self.inner.take() {
            guard.abandon();
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Inside a runtime `block_on` refuses and drops the unpolled release future, and with
        // it the async guard, whose own drop then releases in the background.
        if let Some(guard) = self.inner.take()
            && let Ok(Err(error)) = block_on(guard.release())
        {
            // Drop cannot return the error; a lost lock means the critical section was not
            // fully protected, which the user must see in their logs.
            tracing::warn!(%error, "pylock: release on drop failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_releases_on_drop_and_excludes_while_held() {
        let locks = Locks::connect("memory://blocking-tests").unwrap();
        let lock = locks.lock("drop").timeout(Duration::ZERO);
        let guard = lock.acquire().unwrap();
        assert!(lock.try_acquire().unwrap().is_none());
        drop(guard);
        let again = lock.try_acquire().unwrap().expect("released on drop");
        again.release().unwrap();
    }

    #[test]
    fn run_releases_after_work_and_after_a_panic() {
        let locks = Locks::connect("memory://blocking-tests").unwrap();
        let lock = locks.lock("run").timeout(Duration::ZERO);
        assert_eq!(lock.run(|| 7).unwrap(), 7);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock.run(|| panic!("work failed"))
        }));
        assert!(panicked.is_err());
        assert!(
            lock.try_acquire().unwrap().is_some(),
            "released after the panic"
        );
    }

    #[test]
    fn waits_for_another_thread_then_times_out_typed() {
        let locks = Locks::connect("memory://blocking-tests").unwrap();
        let lock = locks.lock("threads").expires(Duration::from_secs(30));
        let guard = lock.acquire().unwrap();
        let waiter = {
            let lock = lock.clone().timeout(Duration::from_secs(20));
            std::thread::spawn(move || lock.acquire().map(|g| g.key().to_owned()))
        };
        std::thread::sleep(Duration::from_millis(100));
        guard.release().unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), "threads");
        let held = lock.acquire().unwrap();
        let timed_out = lock.clone().timeout(Duration::from_millis(50)).acquire();
        assert!(matches!(timed_out, Err(Error::Timeout { .. })));
        held.release().unwrap();
    }

    #[tokio::test]
    async fn inside_a_runtime_it_is_a_typed_error_not_a_panic() {
        let locks = Locks::connect("memory://blocking-tests").unwrap();
        let result = locks.lock("in-runtime").acquire();
        assert!(matches!(result, Err(Error::BlockingInRuntime)));
    }
}
