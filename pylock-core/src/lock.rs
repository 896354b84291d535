//! The user-facing handles: [`Locks`], a client bound to one backend, and [`Lock`], one named
//! lock with its expiry and timeout.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::backend::{Holder, LockBackend};
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::registry::Registry;
use crate::request::{Options, Request};
use crate::settings::Settings;
use crate::wait::{self, Outcome};

/// The environment variable naming the default backend, e.g. `redis://localhost`.
pub const URL_ENV: &str = "PYLOCK_URL";

/// The backend used when [`URL_ENV`] is not set: in-process locks.
pub const DEFAULT_URL: &str = "memory://";

/// A lock client: one backend plus the default [`Settings`] for the locks it makes.
///
/// Cheap to clone; clones share the backend (and so its connection).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> pylock_core::Result<()> {
/// use std::time::Duration;
/// use pylock_core::Locks;
///
/// let locks = Locks::connect("memory://")?;
/// let lock = locks
///     .lock("a_key")
///     .expires(Duration::from_secs(60))
///     .timeout(Duration::from_secs(10));
/// let guard = lock.acquire().await?; // waits at most 10 s, holds for at most 60 s
/// // ... the work that must happen one at a time ...
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Locks {
    backend: Arc<dyn LockBackend>,
    settings: Arc<Settings>,
}

impl Locks {
    /// A client for `backend` with the default [`Settings`].
    pub fn new(backend: Arc<dyn LockBackend>) -> Self {
        Locks {
            backend,
            settings: Arc::new(Settings::default()),
        }
    }

    /// A client for the backend that `url` names, built by the process-wide
    /// [`Registry::global`]. Backends connect lazily, on the first operation.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`], [`Error::UnknownScheme`] or [`Error::UnknownOption`] when `url`
    /// cannot be used.
    pub fn connect(url: &str) -> Result<Self> {
        Self::connect_with(Registry::global(), url)
    }

    /// Like [`connect`](Self::connect), with an explicit registry.
    ///
    /// # Errors
    ///
    /// As for [`connect`](Self::connect).
    pub fn connect_with(registry: &Registry, url: &str) -> Result<Self> {
        registry.connect(url).map(Self::new)
    }

    /// A client for the URL in `PYLOCK_URL`, or for `memory://` when it is unset or empty.
    ///
    /// # Errors
    ///
    /// As for [`connect`](Self::connect); [`Error::InvalidUrl`] if the variable is not UTF-8.
    pub fn from_env() -> Result<Self> {
        Self::connect(&url_from_env()?)
    }

    /// The process-wide default client that [`Lock::new`] uses: [`from_env`](Self::from_env),
    /// made once and then shared (a failure is not cached, so fixing the variable and trying
    /// again works).
    ///
    /// # Errors
    ///
    /// As for [`from_env`](Self::from_env).
    pub fn global() -> Result<Self> {
        static GLOBAL: OnceLock<Locks> = OnceLock::new();
        if let Some(locks) = GLOBAL.get() {
            return Ok(locks.clone());
        }
        let locks = Self::from_env()?;
        Ok(GLOBAL.get_or_init(|| locks).clone())
    }

    /// Replaces all default settings.
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = Arc::new(settings);
        self
    }

    /// Sets the default timeout of this client's locks.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        Arc::make_mut(&mut self.settings).timeout = timeout;
        self
    }

    /// Sets the default expiry of this client's locks.
    pub fn expires(mut self, expires: Duration) -> Self {
        Arc::make_mut(&mut self.settings).expires = expires;
        self
    }

    /// Sets the key prefix of this client's locks (default `pylock:`).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.settings).key_prefix = prefix.into();
        self
    }

    /// The default settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn LockBackend> {
        &self.backend
    }

    /// A lock named `key` with this client's defaults.
    pub fn lock(&self, key: impl Into<String>) -> Lock {
        Lock {
            client: Some(self.clone()),
            ..Lock::new(key)
        }
    }
}

fn url_from_env() -> Result<String> {
    match std::env::var(URL_ENV) {
        Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(DEFAULT_URL.to_owned()),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::InvalidUrl {
            url: format!("${URL_ENV}"),
            reason: "the variable is not valid UTF-8".to_owned(),
        }),
    }
}

/// One named lock: what to lock, for how long, and how long to wait for it.
///
/// A `Lock` is only a description; it holds nothing until [`acquire`](Self::acquire) returns a
/// [`LockGuard`]. It can be acquired many times, one after another or from several tasks.
#[derive(Debug, Clone)]
pub struct Lock {
    /// `None`: the process-wide default client, resolved at the first acquire.
    client: Option<Locks>,
    key: String,
    options: Options,
}

/// How long a fair waiter keeps its place in the queue without a sign of life, unless
/// [`Lock::fair_patience`] says otherwise. It signs every half of it while it waits; a
/// waiter that died (its process killed, its runtime gone) is skipped once this has passed.
pub const DEFAULT_FAIR_PATIENCE: Duration = Duration::from_secs(15);

impl Lock {
    /// A lock on the default backend: `PYLOCK_URL`, or in-process `memory://` when unset.
    /// The counterpart of pylock 0.4's `Lock('a_key')`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pylock_core::Result<()> {
    /// use pylock_core::Lock;
    ///
    /// let guard = Lock::new("a_key").acquire().await?;
    /// assert_eq!(guard.key(), "a_key");
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(key: impl Into<String>) -> Self {
        Lock {
            client: None,
            key: key.into(),
            options: Options::default(),
        }
    }

    /// How long [`acquire`](Self::acquire) waits; zero means one attempt, and
    /// `Duration::MAX` (or anything from [`NO_LIMIT`](crate::NO_LIMIT), 100 years, up) as long
    /// as it takes.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// How long the lock lives unless released or extended.
    pub fn expires(mut self, expires: Duration) -> Self {
        self.options.expires = Some(expires);
        self
    }

    /// The key prefix for this lock, instead of the client's.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.key_prefix = Some(prefix.into());
        self
    }

    /// Keeps the lock while its guard lives: a background task extends it by `expires`
    /// every third of `expires`, and stops on release or drop. A renewal that finds another
    /// owner, or that keeps failing until the lock's TTL has passed, marks the guard lost
    /// ([`LockGuard::lost`]). Use it for work whose length is not known in advance, with a
    /// short `expires` so that a crashed holder's lock ends soon.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pylock_core::Result<()> {
    /// use std::time::Duration;
    /// use pylock_core::Locks;
    ///
    /// let locks = Locks::connect("memory://")?;
    /// let lock = locks.lock("migration").expires(Duration::from_millis(90)).auto_renew();
    /// let guard = lock.acquire().await?;
    /// tokio::time::sleep(Duration::from_millis(300)).await; // several TTLs
    /// assert!(!guard.is_lost());
    /// assert!(locks.lock("migration").try_acquire().await?.is_none());
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn auto_renew(mut self) -> Self {
        self.options.auto_renew = true;
        self
    }

    /// Bounds how long one hold may last, renewals included, so that a stuck holder cannot
    /// keep the lock forever: renewals stop so that the lock ends at `max_hold` after the
    /// acquire (rounded up to the backend's TTL resolution), and the guard then reports it
    /// lost.
    pub fn max_hold(mut self, max_hold: Duration) -> Self {
        self.options.max_hold = Some(max_hold);
        self
    }

    /// First come, first served: waiters get the lock in the order they started waiting,
    /// across processes, instead of whoever tries first after a release. A waiter that gives
    /// up or is cancelled leaves the queue at once; one that died is skipped after
    /// [`DEFAULT_FAIR_PATIENCE`] (see [`fair_patience`](Self::fair_patience)). The lock still
    /// expires with its holder. A lock is fair only if all its users ask for it; backends
    /// without a queue ([`Capabilities::fair`](crate::Capabilities::fair) false) refuse with
    /// [`Error::Unsupported`].
    ///
    /// The cost: each waiter signs of life every half of the patience while it waits (one
    /// script call), and a hand-off takes a few more commands than without (measured in
    /// `docs/BENCHMARKS.md`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pylock_core::Result<()> {
    /// use std::time::Duration;
    /// use pylock_core::Locks;
    ///
    /// let locks = Locks::connect("memory://")?;
    /// let holder = locks.lock("queue").acquire().await?;
    /// let mut turns = Vec::new();
    /// for name in ["first", "second", "third"] {
    ///     let lock = locks.lock("queue").fair();
    ///     turns.push(tokio::spawn(async move {
    ///         let guard = lock.acquire().await?;
    ///         guard.release().await?;
    ///         Ok::<_, pylock_core::Error>(name)
    ///     }));
    ///     tokio::time::sleep(Duration::from_millis(20)).await; // each starts waiting in turn
    /// }
    /// holder.release().await?;
    /// let mut order = Vec::new();
    /// for turn in turns {
    ///     order.push(turn.await.unwrap()?);
    /// }
    /// // Each released before the next could take it, in the order they came.
    /// assert_eq!(order, ["first", "second", "third"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fair(mut self) -> Self {
        self.options.fair = Some(self.options.fair.unwrap_or(DEFAULT_FAIR_PATIENCE));
        self
    }

    /// Fair (see [`fair`](Self::fair)), with a waiter that died skipped after `patience`
    /// rather than [`DEFAULT_FAIR_PATIENCE`]. Shorter means a dead waiter holds up the queue
    /// less, and live waiters sign of life more often.
    pub fn fair_patience(mut self, patience: Duration) -> Self {
        self.options.fair = Some(patience);
        self
    }

    /// The lock's name, without prefix.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Waits until the lock is ours, at most the timeout.
    ///
    /// Waiters wake on release where the backend sends notices, and otherwise poll with
    /// jittered backoff; either way they never sleep past the timeout or past the holder's
    /// remaining TTL. Dropping this future (cancelling the acquire) leaves no lock behind: an
    /// attempt whose outcome is unknown is released in the background.
    ///
    /// The timeout bounds the whole call, whatever the server does (silent, slow, half-open):
    /// it returns within the timeout plus [`FINAL_ATTEMPT_GRACE`](crate::FINAL_ATTEMPT_GRACE)
    /// (20 ms, a round trip's chance for the attempt made at the deadline) plus scheduling,
    /// even when the backend's own response timeout is longer.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the lock stayed held; [`Error::InvalidKey`] or
    /// [`Error::InvalidOption`] for bad input; backend errors as they come (a backend that
    /// stays unreachable until the deadline returns its last [`Error::Unavailable`], or one
    /// saying it did not answer within the timeout).
    pub async fn acquire(&self) -> Result<LockGuard> {
        match wait::acquire(self.request()?).await? {
            Outcome::Acquired(guard) => Ok(guard),
            Outcome::TimedOut { waited } => Err(Error::Timeout {
                key: self.key.clone(),
                waited,
            }),
        }
    }

    /// One attempt, no waiting: `Ok(None)` if someone else holds the lock. The attempt is
    /// bounded by the backend's own call limit (for Redis and memcached, the URL's
    /// `connect_timeout` plus `response_timeout`, plus 100 ms).
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire), without [`Error::Timeout`].
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        let mut request = self.request()?;
        request.timeout = Duration::ZERO;
        match wait::acquire(request).await? {
            Outcome::Acquired(guard) => Ok(Some(guard)),
            Outcome::TimedOut { .. } => Ok(None),
        }
    }

    /// Runs `work` while holding the lock, like pylock 0.4's `with Lock(...):`.
    ///
    /// The lock is released when `work` finishes, whatever it returns; if the future returned
    /// by `run` is dropped (cancelled) or `work` panics, the guard is released in the
    /// background.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pylock_core::Result<()> {
    /// use pylock_core::Locks;
    ///
    /// let locks = Locks::connect("memory://")?;
    /// let answer = locks.lock("job").run(async { 6 * 7 }).await?;
    /// assert_eq!(answer, 42);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire); and [`Error::Lost`] if the lock had expired or
    /// been taken over by the time `work` finished (the work ran at least partly unprotected:
    /// make `expires` longer than the work, or extend the guard).
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output> {
        let guard = self.acquire().await?;
        let output = work.await;
        guard.release().await?;
        Ok(output)
    }

    /// Like [`run`](Self::run), but if the lock is lost while `work` runs, `work` is stopped
    /// (dropped at its next await) and the result is [`Error::Lost`]: the critical section
    /// stops instead of going on unprotected. Pair it with [`auto_renew`](Self::auto_renew).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> pylock_core::Result<()> {
    /// use std::time::Duration;
    /// use pylock_core::{Error, Locks};
    ///
    /// let locks = Locks::connect("memory://")?;
    /// let lock = locks.lock("report").expires(Duration::from_millis(50));
    /// let outcome = lock.run_until_lost(tokio::time::sleep(Duration::from_secs(60))).await;
    /// assert!(matches!(outcome, Err(Error::Lost { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`run`](Self::run); [`Error::Lost`] as soon as the lock is lost.
    pub async fn run_until_lost<F: Future>(&self, work: F) -> Result<F::Output> {
        let guard = self.acquire().await?;
        tokio::select! {
            output = work => {
                guard.release().await?;
                Ok(output)
            }
            reason = guard.lost() => {
                tracing::warn!(key = %self.key, ?reason, "pylock: work stopped, the lock was lost");
                drop(guard);
                Err(Error::Lost { key: self.key.clone() })
            }
        }
    }

    /// Who holds this lock now, if anybody (for operators: the answer may be stale at once).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] if the backend cannot tell; bad input and backend errors as for
    /// [`acquire`](Self::acquire).
    pub async fn inspect(&self) -> Result<Option<Holder>> {
        let request = self.request()?;
        request.backend.inspect(&request.server_key).await
    }

    /// Deletes this lock whoever holds it, and wakes its waiters. For operators, when a holder
    /// is stuck but alive; the holder finds out at its next extend or release. Returns whether
    /// there was a lock.
    ///
    /// # Errors
    ///
    /// As for [`inspect`](Self::inspect).
    pub async fn force_release(&self) -> Result<bool> {
        let request = self.request()?;
        tracing::warn!(key = %self.key, "pylock: forced release");
        request.backend.force_release(&request.server_key).await
    }

    fn request(&self) -> Result<Request> {
        let locks = match &self.client {
            Some(locks) => locks.clone(),
            None => Locks::global()?,
        };
        Request::new(locks.backend(), locks.settings(), &self.key, &self.options)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::backend::{Attempt, Capabilities};
    use crate::memory::MemoryBackend;
    use crate::request::MAX_EXPIRES;
    use crate::settings::{Backoff, DEFAULT_EXPIRES, DEFAULT_KEY_PREFIX, DEFAULT_TIMEOUT};
    use crate::token::Token;

    fn locks() -> Locks {
        Locks::new(Arc::new(MemoryBackend::new()))
    }

    #[test]
    fn defaults_are_pylock_0_4s() {
        assert_eq!(DEFAULT_TIMEOUT, Duration::from_secs(60));
        assert_eq!(DEFAULT_EXPIRES, Duration::from_secs(10));
        assert_eq!(DEFAULT_KEY_PREFIX, "pylock:");
        let request = locks().lock("somekey").request().unwrap();
        assert_eq!(request.server_key, "pylock:somekey");
        assert_eq!(request.timeout, DEFAULT_TIMEOUT);
        assert_eq!(request.expires, DEFAULT_EXPIRES);
    }

    #[test]
    fn a_lock_overrides_its_client_which_overrides_the_defaults() {
        let client = locks()
            .timeout(Duration::from_secs(5))
            .expires(Duration::from_secs(7))
            .key_prefix("app:");
        let inherited = client.lock("k").request().unwrap();
        assert_eq!(
            (
                inherited.timeout,
                inherited.expires,
                inherited.server_key.as_str()
            ),
            (Duration::from_secs(5), Duration::from_secs(7), "app:k")
        );
        let own = client
            .lock("k")
            .timeout(Duration::from_millis(1500))
            .expires(Duration::from_millis(250))
            .key_prefix("")
            .request()
            .unwrap();
        assert_eq!(
            (own.timeout, own.expires, own.server_key.as_str()),
            (Duration::from_millis(1500), Duration::from_millis(250), "k")
        );
    }

    #[test]
    fn acquire_and_run_futures_can_be_spawned() {
        fn is_send<T: Send>(_: &T) {}
        let lock = locks().lock("k");
        is_send(&lock.acquire());
        is_send(&lock.try_acquire());
        is_send(&lock.run(async {}));
    }

    #[tokio::test]
    async fn run_releases_after_success_error_and_cancellation() {
        let locks = locks();
        let lock = locks.lock("run").timeout(Duration::ZERO);
        assert_eq!(lock.run(async { 1 }).await.unwrap(), 1);
        let failed: Result<std::result::Result<(), &str>> = lock.run(async { Err("no") }).await;
        assert_eq!(failed.unwrap(), Err("no"));
        assert!(lock.try_acquire().await.unwrap().is_some_and(|g| {
            g.abandon();
            true
        }));

        let other = locks.lock("cancelled").timeout(Duration::ZERO);
        let cancelled = tokio::time::timeout(
            Duration::from_millis(20),
            other.run(std::future::pending::<()>()),
        )
        .await;
        assert!(cancelled.is_err());
        // The dropped guard is released in the background: give that task a turn.
        let guard = other
            .clone()
            .timeout(Duration::from_secs(5))
            .acquire()
            .await
            .unwrap();
        guard.release().await.unwrap();
    }

    #[tokio::test]
    async fn run_reports_a_lock_lost_during_the_work() {
        let lock = locks().lock("slow-work").expires(Duration::from_millis(20));
        let result = lock
            .run(tokio::time::sleep(Duration::from_millis(100)))
            .await;
        assert!(matches!(result, Err(Error::Lost { .. })), "{result:?}");
    }

    #[tokio::test]
    async fn a_waiter_never_sleeps_past_the_holders_ttl() {
        // Polling once an hour, and an expiry sends no notice: only the holder's remaining
        // TTL, reported by the failed attempt, can end the wait in time.
        let locks = locks().with_settings(Settings {
            retry: Backoff::new(Duration::from_secs(3600), Duration::from_secs(3600)),
            ..Settings::default()
        });
        let lock = locks.lock("ttl-bound");
        lock.clone()
            .expires(Duration::from_millis(300))
            .acquire()
            .await
            .unwrap()
            .abandon();
        let started = tokio::time::Instant::now();
        let guard = lock
            .clone()
            .timeout(Duration::from_secs(20))
            .acquire()
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        guard.release().await.unwrap();
    }

    /// Fails its first `failures` attempts with `error`, then acts as a memory backend.
    #[derive(Debug)]
    struct Flaky {
        inner: MemoryBackend,
        failures: usize,
        transient: bool,
        attempts: AtomicUsize,
    }

    #[async_trait]
    impl LockBackend for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
            let n = self.attempts.fetch_add(1, Ordering::SeqCst);
            if n < self.failures {
                let source = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
                return Err(if self.transient {
                    Error::Unavailable {
                        backend: "flaky",
                        context: "connecting".into(),
                        source,
                    }
                } else {
                    Error::Backend {
                        backend: "flaky",
                        context: "auth".into(),
                        source,
                    }
                });
            }
            self.inner.try_acquire(key, token, ttl).await
        }
        async fn release(&self, key: &str, token: &Token) -> Result<bool> {
            self.inner.release(key, token).await
        }
        async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
            self.inner.extend(key, token, ttl).await
        }
    }

    fn flaky(failures: usize, transient: bool) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner: MemoryBackend::new(),
            failures,
            transient,
            attempts: AtomicUsize::new(0),
        })
    }

    #[tokio::test]
    async fn unavailable_backends_are_retried_until_the_deadline() {
        let backend = flaky(3, true);
        let guard = Locks::new(backend.clone())
            .lock("k")
            .timeout(Duration::from_secs(10))
            .acquire()
            .await
            .unwrap();
        assert_eq!(backend.attempts.load(Ordering::SeqCst), 4);
        guard.release().await.unwrap();

        // Down for good: the last backend error comes back at the deadline, not a Timeout.
        let down = flaky(usize::MAX, true);
        let result = Locks::new(down.clone())
            .lock("k")
            .timeout(Duration::from_millis(200))
            .acquire()
            .await;
        assert!(
            matches!(result, Err(Error::Unavailable { .. })),
            "{result:?}"
        );
        assert!(down.attempts.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test]
    async fn other_backend_errors_end_the_wait_at_once() {
        let backend = flaky(usize::MAX, false);
        let result = Locks::new(backend.clone())
            .lock("k")
            .timeout(Duration::from_secs(60))
            .acquire()
            .await;
        assert!(matches!(result, Err(Error::Backend { .. })), "{result:?}");
        assert_eq!(backend.attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn extend_measures_validity_from_its_request() {
        let locks = locks();
        let mut guard = locks
            .lock("extend")
            .expires(Duration::from_secs(1))
            .acquire()
            .await
            .unwrap();
        guard.extend(Duration::from_secs(30)).await.unwrap();
        assert!(guard.remaining() > Duration::from_secs(29));
        assert!(guard.remaining() <= Duration::from_secs(30));
        let too_long = guard.extend(MAX_EXPIRES * 2).await;
        assert!(matches!(too_long, Err(Error::InvalidOption { .. })));
        guard.release().await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_timeout_of_duration_max_waits_as_long_as_it_takes() {
        let locks = locks();
        let holder = locks.lock("forever").acquire().await.unwrap();
        let waiter = tokio::spawn({
            let lock = locks.lock("forever").timeout(Duration::MAX);
            async move { lock.acquire().await.map(|guard| guard.abandon()) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "gave up or got in while the lock was held"
        );
        holder.release().await.unwrap();
        waiter
            .await
            .unwrap()
            .expect("no limit: got the lock after the release");
    }
}
