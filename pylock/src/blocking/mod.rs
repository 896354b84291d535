//! A synchronous API for code without an async runtime (feature `blocking`).
//!
//! The same locks and the same methods as the async API (auto-renewal and loss detection
//! included), driven by one small current-thread tokio runtime for the process. A call runs
//! *on the calling thread*: it does not hop to another thread and back, it polls the
//! backend's I/O right where it was made. Between calls a background thread
//! (`pylock-blocking`) runs that runtime, so that renewals go on while your thread works, and
//! a backend can be shared with async code in any runtime ([`Locks::as_async`]) without
//! waiting on an idle runtime.
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
//! A long job keeps its lock with auto-renewal, and checks between steps that it still has it:
//!
//! ```
//! use std::time::Duration;
//! use pylock::blocking::Locks;
//!
//! let locks = Locks::connect("memory://")?;
//! let lock = locks.lock("import").expires(Duration::from_millis(90)).auto_renew();
//! let guard = lock.acquire()?;
//! for _step in 0..3 {
//!     std::thread::sleep(Duration::from_millis(100)); // longer than the TTL, renewed meanwhile
//!     assert!(!guard.is_lost(), "stop the work: the lock is gone");
//! }
//! guard.release()?;
//! # Ok::<(), pylock::Error>(())
//! ```
//!
//! Calling it from inside an async runtime would block that runtime's thread, so every
//! call there returns [`Error::BlockingInRuntime`] instead; use the async API there. Should
//! the operating system refuse the runtime's thread, every call returns
//! [`Error::BlockingRuntime`].

mod runtime;

use std::time::Duration;

use crate::install_default_backends;
#[cfg(doc)]
use pylock_core::Error;
use pylock_core::{Holder, LostReason, Result, Settings};
use runtime::block_on;

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

    /// Replaces all default settings of this client.
    pub fn with_settings(self, settings: Settings) -> Self {
        Self::new(self.inner.with_settings(settings))
    }

    /// The default settings.
    pub fn settings(&self) -> &Settings {
        self.inner.settings()
    }

    /// The backend.
    pub fn backend(&self) -> &std::sync::Arc<dyn crate::LockBackend> {
        self.inner.backend()
    }

    /// The async client underneath: the same backend and connections, usable from async code
    /// in any runtime at the same time as this client.
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

    /// Keeps the lock while it is held: a background task extends it every third of the TTL,
    /// and runs while the calling thread does its work. See [`crate::Lock::auto_renew`];
    /// [`LockGuard::is_lost`] and [`LockGuard::lost`] tell when renewal failed.
    pub fn auto_renew(self) -> Self {
        Lock {
            inner: self.inner.auto_renew(),
        }
    }

    /// Bounds how long one hold may last, renewals included. See [`crate::Lock::max_hold`].
    pub fn max_hold(self, max_hold: Duration) -> Self {
        Lock {
            inner: self.inner.max_hold(max_hold),
        }
    }

    /// The lock's name, without prefix.
    pub fn key(&self) -> &str {
        self.inner.key()
    }

    /// The async lock underneath.
    pub fn as_async(&self) -> &crate::Lock {
        &self.inner
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

    /// Who holds the lock now, if anyone. See [`crate::Lock::inspect`].
    ///
    /// # Errors
    ///
    /// As for [`crate::Lock::inspect`], and [`Error::BlockingInRuntime`].
    pub fn inspect(&self) -> Result<Option<Holder>> {
        block_on(self.inner.inspect())?
    }

    /// Deletes this lock whoever holds it, for operators. See [`crate::Lock::force_release`].
    ///
    /// # Errors
    ///
    /// As for [`crate::Lock::force_release`], and [`Error::BlockingInRuntime`].
    pub fn force_release(&self) -> Result<bool> {
        block_on(self.inner.force_release())?
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

    /// The key the backend stores, with prefix.
    pub fn server_key(&self) -> &str {
        self.inner().server_key()
    }

    /// How long the lock has been held.
    pub fn held_for(&self) -> Duration {
        self.inner().held_for()
    }

    /// Whether the lock is (or may be) lost: its validity ran out, or the server said another
    /// owner has it. Work that needs the lock should stop. See [`crate::LockGuard::is_lost`].
    pub fn is_lost(&self) -> bool {
        self.inner().is_lost()
    }

    /// Blocks until the lock is lost and says why; with auto-renewal, for as long as renewals
    /// keep it. For a worker thread that must stop when the lock goes, run the work on
    /// another thread and this here, or poll [`is_lost`](Self::is_lost) between steps.
    ///
    /// # Errors
    ///
    /// [`Error::BlockingInRuntime`] inside an async runtime.
    pub fn lost(&self) -> Result<LostReason> {
        block_on(self.inner().lost())
    }

    /// Like [`lost`](Self::lost), but gives up after `limit`: `Ok(None)` if the lock is still
    /// held then.
    ///
    /// # Errors
    ///
    /// [`Error::BlockingInRuntime`] inside an async runtime.
    pub fn lost_within(&self, limit: Duration) -> Result<Option<LostReason>> {
        block_on(async { tokio::time::timeout(limit, self.inner().lost()).await.ok() })
    }

    /// The async guard underneath.
    pub fn as_async(&self) -> &crate::LockGuard {
        self.inner()
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
    use pylock_core::Error;

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

    #[test]
    fn the_async_methods_have_blocking_twins() {
        let locks = Locks::connect("memory://blocking-tests").unwrap();
        let lock = locks.lock("twins").timeout(Duration::ZERO);
        assert_eq!(lock.key(), "twins");
        assert!(lock.inspect().unwrap().is_none(), "free");
        let guard = lock.acquire().unwrap();
        assert_eq!(guard.server_key(), "pylock:twins");
        assert!(lock.inspect().unwrap().is_some(), "held");
        std::thread::sleep(Duration::from_millis(20));
        assert!(guard.held_for() >= Duration::from_millis(20));
        assert!(!guard.is_lost());
        assert_eq!(guard.lost_within(Duration::from_millis(20)).unwrap(), None);
        // An operator takes the lock away: the holder learns it at its next extend.
        assert!(lock.force_release().unwrap());
        let mut guard = guard;
        assert!(matches!(
            guard.extend(Duration::from_secs(5)),
            Err(Error::Lost { .. })
        ));
        assert!(guard.is_lost());
        assert_eq!(guard.lost().unwrap(), LostReason::TakenOver);
        guard.abandon();
    }

    #[test]
    fn max_hold_ends_an_auto_renewed_hold_while_the_thread_sleeps() {
        let locks = Locks::connect("memory://blocking-tests").unwrap();
        let lock = locks
            .lock("bounded")
            .expires(Duration::from_millis(60))
            .auto_renew()
            .max_hold(Duration::from_millis(200));
        let guard = lock.acquire().unwrap();
        // Renewed past its TTL while no call is in progress...
        std::thread::sleep(Duration::from_millis(120));
        assert!(!guard.is_lost(), "auto-renewal stopped between calls");
        // ... and ended by the bound.
        assert_eq!(
            guard.lost_within(Duration::from_secs(5)).unwrap(),
            Some(LostReason::Expired)
        );
        guard.abandon();
    }

    #[test]
    fn tasks_of_the_runtime_run_between_calls() {
        let (sender, receiver) = std::sync::mpsc::channel();
        runtime::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            sender.send(()).unwrap();
        })
        .unwrap();
        // No blocking call is in progress: only the driver thread can run the timer.
        receiver
            .recv_timeout(Duration::from_secs(10))
            .expect("the runtime ran without a call");
    }

    #[tokio::test]
    async fn inside_a_runtime_it_is_a_typed_error_not_a_panic() {
        let locks = Locks::connect("memory://blocking-tests").unwrap();
        let result = locks.lock("in-runtime").acquire();
        assert!(matches!(result, Err(Error::BlockingInRuntime)));
    }
}
