//! The behaviour suite every backend runs: built-in ones and third parties' alike.
//!
//! Each check is a public async function that panics (like `assert!`) when the backend breaks
//! the rule it cites. Two ways to run them:
//!
//! - [`trials`]: one named [`libtest_mimic::Trial`] per check, for a `harness = false` test
//!   target, so that every broken rule shows at once, by name, and the checks a backend's
//!   [`Capabilities`] exclude are reported as ignored, with the reason;
//! - [`run_all`]: all applicable checks from one async test; it runs every check even when
//!   one fails, then panics naming each that failed.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use std::sync::Arc;
//! use pylock_core::{conformance, MemoryBackend};
//!
//! let report = conformance::run_all(Arc::new(MemoryBackend::new())).await;
//! assert!(report.skipped.is_empty());
//! # }
//! ```
//!
//! Checks use keys under a fresh random prefix, so several runs may share one server. They
//! measure time only to tell mechanisms apart (a waiter woken by a release notice versus one
//! that could only have polled), with margins of seconds.
//!
//! # The rules
//!
//! Every check cites the rule it holds a backend to. Rules 1 to 11 are the safety rules of
//! pylock's design, numbered as there; 12 to 15 are what users rely on besides.
//!
//! 1. **Only the owner** (same token) releases or extends. Release after expiry, a double
//!    release, release by another owner: nothing changes on the server, and the caller learns
//!    it no longer held the lock.
//! 2. **One holder at a time.** Acquire is one atomic server operation; no wall-clock
//!    comparisons between machines.
//! 3. **Validity counts from the request.** A guard's remaining time is measured from when the
//!    acquire request was sent, not from when the reply arrived.
//! 4. **Nothing is left behind.** A guard dropped without release is released in the
//!    background; a cancelled acquire leaves no lock beyond its TTL.
//! 5. **No lost wake-up.** A waiter subscribes to release notices before it tries, so a
//!    release between its try and its wait still wakes it; polling is a bounded fallback, and a
//!    waiter never sleeps past the holder's remaining TTL.
//! 6. **Bad input is a typed error**, never a panic and never a lock: empty keys, zero or
//!    overflowing durations, what the server cannot represent.
//! 7. **Secrets stay secret** (URLs and their passwords; checked by each backend's own tests).
//! 8. **Deadlines hold.** A call returns within its timeout plus a small documented margin.
//! 9. **Fencing tokens strictly increase** per lock, where a backend claims them.
//! 10. **A job dies with its lock** (`pylock run`; checked by the command's tests).
//! 11. **Operators' tools act only on locks**: `inspect` and `force_release` see and free
//!     locks of ours, whoever holds them.
//! 12. **A lease ends with its TTL** unless extended, and an extend keeps it.
//! 13. **A holder learns of a loss**: the guard says when its lock ran out or was taken, work
//!     run until lost stops, renewal keeps a lock only within its hold bound.
//! 14. **Names are what they say**: the key prefix makes distinct locks of one name.
//! 15. **Fair locks are first come, first served**, and a waiter that gave up or vanished
//!     loses its place.

// The checks are assertions, like tests: they panic with a message on a broken rule.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::backend::{Attempt, Capabilities, LockBackend};
use crate::error::{Error, Result};
use crate::guard::LockGuard;
use crate::hold::LostReason;
use crate::lock::{Lock, Locks};
use crate::notice::ReleaseNotice;
use crate::request::MAX_EXPIRES;
use crate::settings::{Backoff, DEFAULT_KEY_PREFIX};
use crate::token::Token;

type CheckFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One rule of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// The check's name, also the name of its function in this module.
    pub name: &'static str,
    /// Why it does not apply to a backend with these capabilities, if it does not.
    pub skip_reason: fn(&Capabilities) -> Option<&'static str>,
    run: fn(Arc<dyn LockBackend>) -> CheckFuture,
}

impl Check {
    /// Runs the check; panics if the backend breaks the rule.
    pub async fn run(&self, backend: Arc<dyn LockBackend>) {
        (self.run)(backend).await;
    }
}

/// What [`run_all`] did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks that ran and passed.
    pub passed: Vec<&'static str>,
    /// The checks that do not apply, with the reason.
    pub skipped: Vec<(&'static str, &'static str)>,
}

fn always(_: &Capabilities) -> Option<&'static str> {
    None
}

fn needs_exclusive(caps: &Capabilities) -> Option<&'static str> {
    (!caps.exclusive).then_some("the backend does not exclude other holders")
}

fn needs_notifications(caps: &Capabilities) -> Option<&'static str> {
    needs_exclusive(caps).or((!caps.notifications).then_some("the backend has no release notices"))
}

fn needs_inspection(caps: &Capabilities) -> Option<&'static str> {
    needs_exclusive(caps).or((!caps.inspection).then_some("the backend cannot inspect locks"))
}

fn needs_fairness(caps: &Capabilities) -> Option<&'static str> {
    needs_notifications(caps).or((!caps.fair).then_some("the backend keeps no fair queue"))
}

fn needs_fencing(caps: &Capabilities) -> Option<&'static str> {
    needs_exclusive(caps).or((!caps.fencing).then_some("the backend gives no fencing tokens"))
}

macro_rules! checks {
    ($($name:ident: $skip:expr),* $(,)?) => {
        /// Every check of the suite, in the order [`run_all`] runs them.
        pub const CHECKS: &[Check] = &[
            $(Check {
                name: stringify!($name),
                skip_reason: $skip,
                run: |backend| Box::pin($name(backend)),
            }),*
        ];
    };
}

checks! {
    bad_input_is_rejected: always,
    key_prefix_is_applied: always,
    zero_timeout_is_one_attempt: always,
    validity_counts_from_the_request: always,
    holder_excludes_others: needs_exclusive,
    only_the_owner_releases_or_extends: needs_exclusive,
    timeout_is_kept: needs_exclusive,
    expiry_frees_the_lock: needs_exclusive,
    lost_lock_release_and_extend_change_nothing: needs_exclusive,
    extend_keeps_the_lock: needs_exclusive,
    dropped_guard_is_released: needs_exclusive,
    cancelled_acquire_leaves_no_lock: needs_exclusive,
    mutual_exclusion_under_contention: needs_exclusive,
    waiter_wakes_on_release: needs_notifications,
    release_between_attempt_and_wait_still_wakes: needs_notifications,
    fencing_tokens_increase: needs_fencing,
    run_until_lost_stops_the_work: always,
    loss_is_visible: needs_exclusive,
    auto_renewal_keeps_the_lock: needs_exclusive,
    hold_bound_ends_a_stuck_holder: needs_exclusive,
    inspect_and_force_release: needs_inspection,
    fair_waiters_take_turns_in_the_order_they_came: needs_fairness,
    a_fair_waiter_that_gives_up_leaves_the_queue_at_once: needs_fairness,
    a_fair_waiter_never_heard_from_again_is_skipped: needs_fairness,
    a_dead_waiter_behind_a_fair_holder_is_skipped: needs_fairness,
    a_fair_waiter_behind_another_never_takes_the_lock_first: needs_fairness,
}

/// Runs every check that applies to `backend`, each in a task of its own, one after another.
///
/// # Panics
///
/// After the last check, if any failed, naming each with its message.
pub async fn run_all(backend: Arc<dyn LockBackend>) -> Report {
    let caps = backend.capabilities();
    let mut report = Report::default();
    let mut failed = Vec::new();
    for check in CHECKS {
        match (check.skip_reason)(&caps) {
            Some(reason) => report.skipped.push((check.name, reason)),
            None => {
                tracing::info!(check = check.name, backend = backend.name(), "conformance");
                let run = check.run(Arc::clone(&backend));
                match tokio::spawn(run).await {
                    Ok(()) => report.passed.push(check.name),
                    Err(error) => failed.push(format!("{}: {}", check.name, panic_message(error))),
                }
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} conformance checks failed on the {} backend:\n{}",
        failed.len(),
        failed.len() + report.passed.len(),
        backend.name(),
        failed.join("\n")
    );
    report
}

/// What a check's task ended with.
fn panic_message(error: tokio::task::JoinError) -> String {
    if !error.is_panic() {
        return error.to_string();
    }
    let payload = error.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

/// The backend a group of [`trials`] runs against, made by the first trial that runs and shared
/// by the others; `Err(reason)` ignores the trials (say, no server to test against).
pub type Fixture = Arc<dyn Fn() -> std::result::Result<Arc<dyn LockBackend>, String> + Send + Sync>;

/// One [`libtest_mimic::Trial`] per check, named `<group>::<check>`, each run on `runtime`
/// against the backend `fixture` gives. A check that the backend's [`Capabilities`] exclude,
/// or all of them when `fixture` has no backend, is reported as ignored with the reason.
///
/// In a test target with `harness = false`:
///
/// ```no_run
/// use std::sync::Arc;
/// use pylock_core::raw::LockBackend;
/// use pylock_core::{MemoryBackend, conformance};
///
/// fn main() -> std::process::ExitCode {
///     let runtime = tokio::runtime::Runtime::new().expect("a runtime");
///     let memory: Arc<dyn LockBackend> = Arc::new(MemoryBackend::new());
///     let trials = conformance::trials("memory", runtime.handle(), Arc::new(move || Ok(Arc::clone(&memory))));
///     libtest_mimic::run(&libtest_mimic::Arguments::from_args(), trials).exit_code()
/// }
/// ```
pub fn trials(
    group: &str,
    runtime: &tokio::runtime::Handle,
    fixture: Fixture,
) -> Vec<libtest_mimic::Trial> {
    CHECKS
        .iter()
        .map(|check| {
            let (runtime, fixture) = (runtime.clone(), Arc::clone(&fixture));
            libtest_mimic::Trial::ignorable_test(format!("{group}::{}", check.name), move || {
                let backend = match fixture() {
                    Ok(backend) => backend,
                    Err(reason) => return Ok(libtest_mimic::Completion::ignored_with(reason)),
                };
                if let Some(reason) = (check.skip_reason)(&backend.capabilities()) {
                    return Ok(libtest_mimic::Completion::ignored_with(reason));
                }
                runtime.block_on(check.run(backend));
                Ok(libtest_mimic::Completion::Completed)
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A client with a fresh key prefix, so checks never see each other's locks.
fn client(backend: &Arc<dyn LockBackend>) -> Locks {
    let unique = Token::generate().map(|t| t.to_hex()).unwrap_or_default();
    Locks::new(Arc::clone(backend))
        .key_prefix(format!("conformance:{}:", &unique[..12]))
        .timeout(Duration::from_secs(30))
        .expires(Duration::from_secs(30))
}

/// The shortest TTL worth testing expiry with on this backend: 300 ms, or two ticks of a
/// coarse server clock.
fn short_ttl(backend: &Arc<dyn LockBackend>) -> Duration {
    let granularity = backend.capabilities().ttl_granularity;
    Duration::from_millis(300).max(granularity * 2)
}

/// How long after a TTL ends the server may still show the key (coarse clocks, lazy expiry).
fn expiry_slack(backend: &Arc<dyn LockBackend>) -> Duration {
    backend.capabilities().ttl_granularity * 2 + Duration::from_secs(3)
}

/// A fair waiter of `patience` on `name` that waits up to 20 s, in a task of its own: the
/// living one behind a dead one.
fn living_fair_waiter(
    locks: &Locks,
    name: &str,
    patience: Duration,
) -> tokio::task::JoinHandle<Result<LockGuard>> {
    let lock = locks
        .lock(name)
        .fair_patience(patience)
        .timeout(Duration::from_secs(20));
    tokio::spawn(async move { lock.acquire().await })
}

async fn must_acquire(lock: &Lock) -> LockGuard {
    match lock.acquire().await {
        Ok(guard) => guard,
        Err(error) => panic!("acquiring {:?} failed: {error}", lock.key()),
    }
}

async fn assert_held_by_someone(lock: &Lock, why: &str) {
    match lock.try_acquire().await {
        Ok(None) => {}
        Ok(Some(_)) => panic!("{:?} could be acquired although {why}", lock.key()),
        Err(error) => panic!("try_acquire of {:?} failed: {error}", lock.key()),
    }
}

/// Wraps a backend to watch and steer what the core does with it.
#[derive(Debug)]
struct Probe {
    inner: Arc<dyn LockBackend>,
    attempts: AtomicUsize,
    keys: Mutex<Vec<String>>,
    /// Pause before answering an attempt that acquired.
    delay_after_acquire: Duration,
    /// Answers "held" seen so far.
    held_answers: AtomicUsize,
    /// Releases (key, token) right after the n-th "held" answer, before that answer reaches
    /// the waiter.
    release_after_held: Mutex<Option<(usize, String, Token)>>,
}

impl Probe {
    fn new(inner: &Arc<dyn LockBackend>) -> Self {
        Probe {
            inner: Arc::clone(inner),
            attempts: AtomicUsize::new(0),
            held_answers: AtomicUsize::new(0),
            keys: Mutex::default(),
            delay_after_acquire: Duration::ZERO,
            release_after_held: Mutex::default(),
        }
    }
}

#[async_trait]
impl LockBackend for Probe {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key.to_owned());
        let attempt = self.inner.try_acquire(key, token, ttl).await?;
        match attempt {
            Attempt::Acquired { .. } if !self.delay_after_acquire.is_zero() => {
                tokio::time::sleep(self.delay_after_acquire).await;
            }
            Attempt::Held { .. } => {
                let nth = self.held_answers.fetch_add(1, Ordering::SeqCst) + 1;
                let pending = {
                    let mut pending = self
                        .release_after_held
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    match pending.as_ref() {
                        Some((when, ..)) if *when == nth => pending.take(),
                        _ => None,
                    }
                };
                if let Some((_, key, token)) = pending {
                    assert!(
                        self.inner.release(&key, &token).await?,
                        "the holder's release failed"
                    );
                }
            }
            _ => {}
        }
        Ok(attempt)
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        self.inner.release(key, token).await
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        self.inner.extend(key, token, ttl).await
    }

    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        self.inner.subscribe(key).await
    }
}

// ---------------------------------------------------------------------------------------------
// The checks

/// Empty keys, zero, too long or overflowing durations are typed errors, and nothing is
/// locked by a refused request.
///
/// Rule 6 of [the rules](self#the-rules).
pub async fn bad_input_is_rejected(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let lock = locks.lock("bad-input");

    let empty = locks.lock("").acquire().await;
    assert!(
        matches!(empty, Err(Error::InvalidKey { .. })),
        "empty key: {empty:?}"
    );
    for (expires, why) in [
        (Duration::ZERO, "zero expiry"),
        (
            MAX_EXPIRES + Duration::from_secs(1),
            "expiry past MAX_EXPIRES",
        ),
        (Duration::MAX, "Duration::MAX expiry"),
    ] {
        let result = lock.clone().expires(expires).acquire().await;
        assert!(
            matches!(result, Err(Error::InvalidOption { .. })),
            "{why}: {result:?}"
        );
    }
    if let Some(max) = backend.capabilities().max_ttl {
        let result = lock
            .clone()
            .expires(max + Duration::from_secs(1))
            .acquire()
            .await;
        assert!(
            matches!(result, Err(Error::InvalidOption { .. })),
            "expiry past the backend's max_ttl: {result:?}"
        );
    }
    // No limit is a valid timeout: on a free lock, it acquires at once.
    lock.clone()
        .timeout(Duration::MAX)
        .acquire()
        .await
        .expect("a timeout of Duration::MAX waits as long as it takes")
        .release()
        .await
        .expect("release");
    if let Some(max) = backend.capabilities().max_key_len {
        let long = locks.lock("k".repeat(max + 1)).acquire().await;
        assert!(
            matches!(long, Err(Error::InvalidKey { .. })),
            "key over max_key_len: {long:?}"
        );
    }

    // None of that took the lock.
    let mut guard = lock
        .try_acquire()
        .await
        .expect("try_acquire after refused requests")
        .expect("refused requests left the lock free");
    let zero = guard.extend(Duration::ZERO).await;
    assert!(
        matches!(zero, Err(Error::InvalidOption { .. })),
        "extend by zero: {zero:?}"
    );
    guard.release().await.expect("release");
}

/// Lock `somekey` is server key `pylock:somekey`; the prefix can be changed per client and per
/// lock, and the same name under two prefixes is two locks.
///
/// Rule 14 of [the rules](self#the-rules).
pub async fn key_prefix_is_applied(backend: Arc<dyn LockBackend>) {
    let probe = Arc::new(Probe::new(&backend));
    let probed: Arc<dyn LockBackend> = probe.clone();
    let unique = client(&backend).settings().key_prefix.clone();

    let default = Locks::new(Arc::clone(&probed));
    assert_eq!(default.settings().key_prefix, DEFAULT_KEY_PREFIX);
    let name = format!("{unique}somekey");
    let guard = must_acquire(&default.lock(name.as_str())).await;
    assert_eq!(guard.server_key(), format!("pylock:{name}"));
    assert_eq!(guard.key(), name);

    let custom = default.clone().key_prefix("app:");
    let other = must_acquire(&custom.lock(name.as_str()).timeout(Duration::ZERO)).await;
    let per_lock = must_acquire(
        &custom
            .lock(name.as_str())
            .key_prefix("job:")
            .timeout(Duration::ZERO),
    )
    .await;
    let keys = probe
        .keys
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert_eq!(
        keys,
        vec![
            format!("pylock:{name}"),
            format!("app:{name}"),
            format!("job:{name}")
        ]
    );
    for guard in [guard, other, per_lock] {
        guard.release().await.expect("release");
    }
}

/// A timeout of zero makes exactly one attempt, held or not.
///
/// Rule 8 of [the rules](self#the-rules).
pub async fn zero_timeout_is_one_attempt(backend: Arc<dyn LockBackend>) {
    let probe = Arc::new(Probe::new(&backend));
    let locks = client(&(probe.clone() as Arc<dyn LockBackend>));
    let lock = locks.lock("zero-timeout");
    let holder = must_acquire(&lock).await;
    probe.attempts.store(0, Ordering::SeqCst);

    let result = lock.clone().timeout(Duration::ZERO).acquire().await;
    assert_eq!(probe.attempts.load(Ordering::SeqCst), 1, "attempts");
    if backend.capabilities().exclusive {
        match result {
            Err(Error::Timeout { key, .. }) => assert_eq!(key, "zero-timeout"),
            other => panic!("a held lock with timeout 0 gave {other:?}"),
        }
    } else if let Ok(guard) = result {
        guard.release().await.expect("release");
    } else {
        panic!("a non-exclusive backend refused: {result:?}");
    }
    holder.release().await.expect("release");
}

/// A guard's validity is counted from when the acquire request was sent, not from when its
/// answer arrived (rule 3).
pub async fn validity_counts_from_the_request(backend: Arc<dyn LockBackend>) {
    let delay = Duration::from_millis(400);
    let mut probe = Probe::new(&backend);
    probe.delay_after_acquire = delay;
    let locks = client(&(Arc::new(probe) as Arc<dyn LockBackend>));
    let expires = Duration::from_secs(5);
    let guard = must_acquire(&locks.lock("validity").expires(expires)).await;
    assert!(
        guard.remaining() <= expires - delay,
        "{:?} left of {expires:?} although the answer took {delay:?}",
        guard.remaining()
    );
    assert!(guard.held_for() >= delay);
    guard.release().await.expect("release");
}

/// While one owner holds the lock, nobody else gets it; after release, someone can.
///
/// Rule 2 of [the rules](self#the-rules).
pub async fn holder_excludes_others(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let lock = locks.lock("excludes");
    let guard = must_acquire(&lock).await;
    assert_held_by_someone(&lock, "it is held").await;
    guard.release().await.expect("release");
    let again = lock
        .try_acquire()
        .await
        .expect("try_acquire")
        .expect("the released lock is free");
    again.release().await.expect("release");
}

/// Only the token that holds a lock can release or extend it; double release does nothing
/// (rule 1, at the level of the backend's primitives).
pub async fn only_the_owner_releases_or_extends(backend: Arc<dyn LockBackend>) {
    let key = format!("{}owner", client(&backend).settings().key_prefix);
    let owner = Token::generate().expect("token");
    let stranger = Token::generate().expect("token");
    let ttl = Duration::from_secs(30);
    assert!(
        matches!(
            backend.try_acquire(&key, &owner, ttl).await.expect("try"),
            Attempt::Acquired { .. }
        ),
        "the free key was not acquired"
    );
    assert!(!backend.release(&key, &stranger).await.expect("release"));
    assert!(!backend.extend(&key, &stranger, ttl).await.expect("extend"));
    assert!(
        matches!(
            backend
                .try_acquire(&key, &stranger, ttl)
                .await
                .expect("try"),
            Attempt::Held { .. }
        ),
        "a stranger's release or extend freed the lock"
    );
    assert!(backend.release(&key, &owner).await.expect("release"));
    assert!(
        !backend.release(&key, &owner).await.expect("release"),
        "double release reported success"
    );
    assert!(!backend.extend(&key, &owner, ttl).await.expect("extend"));
}

/// `acquire` gives up with `Error::Timeout` once the timeout has passed, not before and not
/// much later.
///
/// Rule 8 of [the rules](self#the-rules).
pub async fn timeout_is_kept(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let lock = locks.lock("timeout");
    let holder = must_acquire(&lock).await;
    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    match lock.clone().timeout(timeout).acquire().await {
        Err(Error::Timeout { waited, .. }) => {
            assert!(waited >= timeout, "gave up after {waited:?} of {timeout:?}");
        }
        other => panic!("waiting for a held lock gave {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < timeout + Duration::from_secs(5),
        "a {timeout:?} timeout returned after {elapsed:?}"
    );
    holder.release().await.expect("release");
}

/// A lock nobody releases is free once its TTL has run out.
///
/// Rule 12 of [the rules](self#the-rules).
pub async fn expiry_frees_the_lock(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let ttl = short_ttl(&backend);
    let lock = locks.lock("expiry").expires(ttl);
    must_acquire(&lock).await.abandon();
    assert_held_by_someone(&lock, "its TTL has not run out").await;
    let guard = must_acquire(&lock.clone().timeout(ttl + expiry_slack(&backend))).await;
    guard.release().await.expect("release");
}

/// After A's lock expired and B took it, A's release and extend report `Error::Lost` and leave
/// B's lock as it was (rule 1, through guards).
pub async fn lost_lock_release_and_extend_change_nothing(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let ttl = short_ttl(&backend);
    let lock = locks.lock("lost");
    let mut a = must_acquire(&lock.clone().expires(ttl)).await;
    let b_ttl = Duration::from_secs(30);
    let b = must_acquire(
        &lock
            .clone()
            .expires(b_ttl)
            .timeout(ttl + expiry_slack(&backend)),
    )
    .await;

    let extended = a.extend(Duration::from_secs(3600)).await;
    assert!(
        matches!(extended, Err(Error::Lost { .. })),
        "extend of a lost lock: {extended:?}"
    );
    assert!(a.remaining().is_zero(), "a lost guard still claims time");
    let released = a.release().await;
    assert!(
        matches!(released, Err(Error::Lost { .. })),
        "release of a lost lock: {released:?}"
    );

    // B still holds it, with its own TTL (not A's hour).
    let stranger = Token::generate().expect("token");
    match backend
        .try_acquire(b.server_key(), &stranger, b_ttl)
        .await
        .expect("try")
    {
        Attempt::Held { remaining } => {
            if let Some(remaining) = remaining {
                // Coarse server clocks round up and may add a tick.
                let slack = backend.capabilities().ttl_granularity * 2;
                assert!(
                    remaining <= b_ttl + slack,
                    "B's lock was extended by A to {remaining:?}"
                );
            }
        }
        Attempt::Acquired { .. } => panic!("A's release freed B's lock"),
    }
    b.release().await.expect("B releases its own lock");
}

/// `extend` keeps the lock past its original TTL.
///
/// Rule 12 of [the rules](self#the-rules).
pub async fn extend_keeps_the_lock(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let ttl = short_ttl(&backend);
    let lock = locks.lock("extend");
    let mut guard = must_acquire(&lock.clone().expires(ttl)).await;
    guard
        .extend(Duration::from_secs(30))
        .await
        .expect("extend a held lock");
    assert!(guard.remaining() > ttl);
    tokio::time::sleep(ttl + expiry_slack(&backend)).await;
    assert_held_by_someone(&lock, "it was extended").await;
    guard.release().await.expect("release after extend");
}

/// A guard dropped without release is released in the background, long before its TTL
/// (rule 4).
pub async fn dropped_guard_is_released(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let lock = locks.lock("dropped").expires(Duration::from_secs(60));
    drop(must_acquire(&lock).await);
    let guard = lock
        .clone()
        .timeout(Duration::from_secs(10))
        .acquire()
        .await
        .expect("the dropped guard was not released");
    guard.release().await.expect("release");
}

/// An acquire cancelled after its attempt reached the server leaves no lock behind
/// (rule 4).
pub async fn cancelled_acquire_leaves_no_lock(backend: Arc<dyn LockBackend>) {
    let mut probe = Probe::new(&backend);
    probe.delay_after_acquire = Duration::from_secs(5);
    let slow = client(&(Arc::new(probe) as Arc<dyn LockBackend>));
    let name = "cancelled";
    let slow_lock = slow.lock(name).expires(Duration::from_secs(60));
    let cancelled = tokio::time::timeout(Duration::from_millis(200), slow_lock.acquire()).await;
    assert!(cancelled.is_err(), "the slow acquire was not cancelled");

    let lock = Locks::new(Arc::clone(&backend))
        .key_prefix(slow.settings().key_prefix.clone())
        .lock(name)
        .timeout(Duration::from_secs(10));
    let guard = lock
        .acquire()
        .await
        .expect("the cancelled acquire left its lock behind");
    guard.release().await.expect("release");
}

/// Many tasks on one key: every critical section runs alone (no two hold intervals overlap)
/// and a non-atomic read-modify-write of a shared counter loses no update.
///
/// Rule 2 of [the rules](self#the-rules).
pub async fn mutual_exclusion_under_contention(backend: Arc<dyn LockBackend>) {
    const TASKS: usize = 8;
    const ROUNDS: usize = 10;
    let locks = client(&backend);
    let counter = Arc::new(AtomicU64::new(0));
    let intervals = Arc::new(Mutex::new(Vec::with_capacity(TASKS * ROUNDS)));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let lock = locks.lock("contended").timeout(Duration::from_secs(60));
        let counter = Arc::clone(&counter);
        let intervals = Arc::clone(&intervals);
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let guard = lock.acquire().await.expect("acquire under contention");
                let start = Instant::now();
                // A read-modify-write split by an await: any overlap loses an update.
                let seen = counter.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.store(seen + 1, Ordering::SeqCst);
                let end = Instant::now();
                intervals
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((start, end));
                guard.release().await.expect("release under contention");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a contending task panicked");
    }
    assert_eq!(
        counter.load(Ordering::SeqCst),
        (TASKS * ROUNDS) as u64,
        "updates were lost: critical sections overlapped"
    );
    let mut intervals = intervals
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    intervals.sort();
    for pair in intervals.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "two hold intervals overlap: {pair:?}"
        );
    }
}

/// A waiter wakes when the holder releases, not at its next poll: with polling slowed to 20 s
/// (and a timeout of 8 s), it still gets the lock within seconds of the release (rule 5).
pub async fn waiter_wakes_on_release(backend: Arc<dyn LockBackend>) {
    let slow_polls = client(&backend).with_settings({
        let mut settings = client(&backend).settings().clone();
        settings.retry = Backoff::new(Duration::from_secs(20), Duration::from_secs(20));
        settings.timeout = Duration::from_secs(8);
        settings
    });
    let lock = slow_polls.lock("wake");
    let holder = must_acquire(&lock).await;
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let released_at = Instant::now();
    holder.release().await.expect("release");
    let guard = waiter
        .await
        .expect("waiter task")
        .expect("the waiter did not get the released lock");
    let woke_after = released_at.elapsed();
    assert!(
        woke_after < Duration::from_secs(5),
        "the waiter took {woke_after:?}: it polled instead of waking on the release"
    );
    guard.release().await.expect("release");
}

/// A release that happens after a waiter's attempt failed but before it starts waiting still
/// wakes it (rule 5). Two moments are checked: between the first
/// attempt and the subscription (the waiter must try again once subscribed), and between a
/// later attempt and its wait (the subscription must already be active on the server).
pub async fn release_between_attempt_and_wait_still_wakes(backend: Arc<dyn LockBackend>) {
    for (nth_held, attempts) in [(1, 2), (2, 3)] {
        release_after_held_answer(&backend, nth_held, attempts).await;
    }
}

/// Holds a lock, lets a waiter come, releases right after the waiter's `nth_held` "held"
/// answer, and checks the waiter got the lock promptly after `attempts` attempts.
async fn release_after_held_answer(
    backend: &Arc<dyn LockBackend>,
    nth_held: usize,
    attempts: usize,
) {
    let probe = Arc::new(Probe::new(backend));
    let probed: Arc<dyn LockBackend> = probe.clone();
    let locks = client(&probed).with_settings({
        let mut settings = client(backend).settings().clone();
        settings.retry = Backoff::new(Duration::from_secs(20), Duration::from_secs(20));
        settings.timeout = Duration::from_secs(8);
        settings
    });
    let name = "race";
    let server_key = format!("{}{name}", locks.settings().key_prefix);
    let holder = Token::generate().expect("token");
    assert!(matches!(
        backend
            .try_acquire(&server_key, &holder, Duration::from_secs(60))
            .await
            .expect("try"),
        Attempt::Acquired { .. }
    ));
    *probe
        .release_after_held
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some((nth_held, server_key, holder));
    let started = Instant::now();
    let guard = must_acquire(&locks.lock(name)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "the wake-up was lost (release after held answer {nth_held}): the waiter slept \
         {waited:?}, until its next poll"
    );
    assert_eq!(probe.attempts.load(Ordering::SeqCst), attempts);
    guard.release().await.expect("release");
}

/// Fencing tokens strictly increase per key: across releases and across expiries.
///
/// Rule 9 of [the rules](self#the-rules).
pub async fn fencing_tokens_increase(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let ttl = short_ttl(&backend);
    let lock = locks.lock("fence").timeout(ttl + expiry_slack(&backend));
    let mut last = 0;
    let mut next_fence = |guard: &LockGuard, how: &str| {
        let fence = guard
            .fence()
            .expect("a backend claiming fencing gave no token");
        assert!(fence > last, "fence {fence} after {last} ({how})");
        last = fence;
    };
    for _ in 0..3 {
        let guard = must_acquire(&lock).await;
        next_fence(&guard, "after a release");
        guard.release().await.expect("release");
    }
    let expiring = must_acquire(&lock.clone().expires(ttl)).await;
    next_fence(&expiring, "after a release");
    expiring.abandon();
    let after_expiry = must_acquire(&lock).await;
    next_fence(&after_expiry, "after an expiry");
    after_expiry.release().await.expect("release");
}

/// `run_until_lost` stops work that outlives its lock and says `Error::Lost`.
///
/// Rule 13 of [the rules](self#the-rules).
pub async fn run_until_lost_stops_the_work(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let ttl = short_ttl(&backend);
    let started = Instant::now();
    let outcome = locks
        .lock("until-lost")
        .expires(ttl)
        .run_until_lost(tokio::time::sleep(Duration::from_secs(600)))
        .await;
    assert!(matches!(outcome, Err(Error::Lost { .. })), "{outcome:?}");
    let took = started.elapsed();
    let validity = backend.capabilities().validity(ttl);
    assert!(
        took >= validity && took < ttl + expiry_slack(&backend),
        "the work was stopped after {took:?}, its lock lasted {validity:?}"
    );
}

/// A guard tells when its lock is lost: when its validity runs out (`Expired`), and when the
/// server says another owner has it (`Error::Lost` from extend).
///
/// Rule 13 of [the rules](self#the-rules).
pub async fn loss_is_visible(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let ttl = short_ttl(&backend);
    let lock = locks.lock("loss");
    let mut guard = must_acquire(&lock.clone().expires(ttl)).await;
    assert!(!guard.is_lost());
    let reason = tokio::time::timeout(ttl + expiry_slack(&backend), guard.lost())
        .await
        .expect("the guard never noticed its lock expired");
    assert_eq!(reason, LostReason::Expired);
    let validity = backend.capabilities().validity(ttl);
    assert!(
        guard.held_for() >= validity,
        "lost after {:?} of a lock valid for {validity:?}",
        guard.held_for()
    );
    assert!(guard.is_lost());
    assert!(guard.remaining().is_zero());
    let other = must_acquire(&lock.clone().timeout(ttl + expiry_slack(&backend))).await;
    let extended = guard.extend(Duration::from_secs(30)).await;
    assert!(matches!(extended, Err(Error::Lost { .. })), "{extended:?}");
    other.release().await.expect("release");
}

/// With auto-renewal a lock outlives several TTLs while its guard lives, and is free right
/// after release.
///
/// Rule 13 of [the rules](self#the-rules).
pub async fn auto_renewal_keeps_the_lock(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let ttl = short_ttl(&backend);
    let lock = locks.lock("renewed").expires(ttl);
    let guard = must_acquire(&lock.clone().auto_renew()).await;
    for _ in 0..4 {
        tokio::time::sleep(ttl).await;
        assert!(!guard.is_lost(), "the renewed guard counts itself lost");
        assert_held_by_someone(&lock, "it is renewed").await;
    }
    guard.release().await.expect("release after renewals");
    let again = lock
        .try_acquire()
        .await
        .expect("try")
        .expect("free after release: renewal stopped");
    again.release().await.expect("release");
}

/// With a hold bound, renewals stop so that the lock ends at the bound: the guard reports the
/// loss and others get the lock.
///
/// Rule 13 of [the rules](self#the-rules).
pub async fn hold_bound_ends_a_stuck_holder(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let ttl = short_ttl(&backend);
    let max_hold = ttl * 2;
    let lock = locks.lock("bounded").expires(ttl);
    let started = Instant::now();
    let stuck = must_acquire(&lock.clone().auto_renew().max_hold(max_hold)).await;
    let reason = tokio::time::timeout(max_hold + expiry_slack(&backend), stuck.lost())
        .await
        .expect("the bounded hold never ended");
    assert_eq!(reason, LostReason::Expired);
    assert!(
        started.elapsed() >= max_hold.saturating_sub(Duration::from_millis(5)),
        "ended after {:?}, before the bound {max_hold:?}",
        started.elapsed()
    );
    let next = must_acquire(&lock.clone().timeout(max_hold + expiry_slack(&backend))).await;
    assert!(
        started.elapsed() < max_hold + ttl + expiry_slack(&backend),
        "the stuck holder kept the lock for {:?}",
        started.elapsed()
    );
    next.release().await.expect("release");
    drop(stuck);
}

/// `inspect` sees the holder (TTL, fence), `force_release` frees a lock whoever holds it,
/// and the old holder then finds it lost.
///
/// Rule 11 of [the rules](self#the-rules).
pub async fn inspect_and_force_release(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let lock = locks.lock("operator");
    assert_eq!(lock.inspect().await.expect("inspect"), None, "a free lock");
    let ttl = Duration::from_secs(30);
    let mut guard = must_acquire(&lock.clone().expires(ttl)).await;
    let holder = lock
        .inspect()
        .await
        .expect("inspect")
        .expect("a held lock shows its holder");
    if let Some(remaining) = holder.remaining {
        let slack = backend.capabilities().ttl_granularity * 2;
        assert!(remaining <= ttl + slack, "{remaining:?} of {ttl:?}");
        assert!(
            remaining + Duration::from_secs(5) >= ttl,
            "{remaining:?} of {ttl:?}"
        );
    }
    if backend.capabilities().fencing {
        assert_eq!(
            holder.fence,
            guard.fence(),
            "inspect shows the holder's fence"
        );
    }
    assert!(
        lock.force_release().await.expect("force"),
        "there was a lock"
    );
    let next = lock
        .try_acquire()
        .await
        .expect("try")
        .expect("free after a forced release");
    let extended = guard.extend(ttl).await;
    assert!(matches!(extended, Err(Error::Lost { .. })), "{extended:?}");
    assert_eq!(guard.lost().await, LostReason::TakenOver);
    next.release().await.expect("release");
    assert!(
        !lock.force_release().await.expect("force"),
        "nothing left to release"
    );
}

// ---------------------------------------------------------------------------------------------
// Fair locks

/// Fair waiters get the lock in the order they started waiting, and a fair newcomer that
/// keeps trying cannot jump the queue, however often and however fast it tries.
///
/// Rule 15 of [the rules](self#the-rules).
pub async fn fair_waiters_take_turns_in_the_order_they_came(backend: Arc<dyn LockBackend>) {
    const WAITERS: usize = 6;
    let locks = client(&backend);
    let holder = must_acquire(&locks.lock("fair")).await;
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..WAITERS {
        let lock = locks.lock("fair").fair();
        let order = Arc::clone(&order);
        waiters.push(tokio::spawn(async move {
            let guard = must_acquire(&lock).await;
            order.lock().unwrap_or_else(PoisonError::into_inner).push(i);
            tokio::time::sleep(Duration::from_millis(5)).await;
            guard.release().await.expect("release");
        }));
        // In line one after the other.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A newcomer trying as fast as it can, fair too: it must wait for everyone in line.
    let barger = {
        let lock = locks.lock("fair").fair();
        let order = Arc::clone(&order);
        tokio::spawn(async move {
            loop {
                match lock.try_acquire().await {
                    Ok(Some(guard)) => {
                        order
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(WAITERS);
                        guard.release().await.expect("release");
                        return;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(1)).await,
                    Err(error) => panic!("try_acquire: {error}"),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    holder.release().await.expect("release");
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    let served = order.lock().unwrap_or_else(PoisonError::into_inner).clone();
    assert_eq!(
        served[..WAITERS],
        (0..WAITERS).collect::<Vec<_>>()[..],
        "fair waiters served out of order (the newcomer is {WAITERS}): {served:?}"
    );
    barger.await.expect("the newcomer got its turn at the end");
}

/// A fair waiter behind another does not take a free lock, however often it asks, while the
/// one before it is still in line and has not taken it yet (here, it is slow to come back):
/// a backend that keeps each waiter's place must check that no place is older, not only that
/// the lock is free.
///
/// Rule 15 of [the rules](self#the-rules).
pub async fn a_fair_waiter_behind_another_never_takes_the_lock_first(
    backend: Arc<dyn LockBackend>,
) {
    let locks = client(&backend);
    let (ttl, patience) = (Duration::from_secs(30), Duration::from_secs(30));
    let holder = must_acquire(&locks.lock("behind")).await;
    let key = holder.server_key().to_owned();
    let [first, second] = [(); 2].map(|()| Token::generate().expect("token"));
    let attempt = |token: Token| {
        let (backend, key) = (Arc::clone(&backend), key.clone());
        async move {
            backend
                .try_acquire_fair(&key, &token, ttl, patience)
                .await
                .expect("a fair attempt")
        }
    };
    for token in [first, second] {
        let attempt = attempt(token).await;
        assert!(matches!(attempt, Attempt::Held { .. }), "{attempt:?}");
    }
    holder.release().await.expect("release");
    for _ in 0..3 {
        let attempt = attempt(second).await;
        assert!(
            matches!(attempt, Attempt::Held { .. }),
            "the second in line took the lock before the first: {attempt:?}"
        );
    }
    for token in [first, second] {
        let attempt = attempt(token).await;
        assert!(matches!(attempt, Attempt::Acquired { .. }), "{attempt:?}");
        assert!(backend.release(&key, &token).await.expect("release"));
    }
}

/// A fair waiter that times out or is cancelled leaves the queue then and there: the next
/// in line gets the lock at the release, not after the leaver's patience (set here to far
/// longer than the check).
///
/// Rule 15 of [the rules](self#the-rules).
pub async fn a_fair_waiter_that_gives_up_leaves_the_queue_at_once(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let patience = Duration::from_secs(120);
    let holder = must_acquire(&locks.lock("leaver")).await;
    let quitter = locks
        .lock("leaver")
        .fair_patience(patience)
        .timeout(Duration::from_millis(300));
    let cancelled = tokio::spawn({
        let lock = locks.lock("leaver").fair_patience(patience);
        async move { lock.acquire().await.map(LockGuard::abandon) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(matches!(
        quitter.acquire().await,
        Err(Error::Timeout { .. })
    ));
    cancelled.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stayer = tokio::spawn({
        let lock = locks
            .lock("leaver")
            .fair_patience(patience)
            .timeout(Duration::from_secs(10));
        async move { lock.acquire().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.release().await.expect("release");
    let guard = stayer
        .await
        .expect("task")
        .expect("the waiters who left were skipped at once, not after their patience");
    guard.release().await.expect("release");
}

/// A fair waiter that joined the queue and was never heard from again (its process died)
/// is skipped once its patience has passed: the queue does not stop for good.
///
/// Rule 15 of [the rules](self#the-rules).
pub async fn a_fair_waiter_never_heard_from_again_is_skipped(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let patience = Duration::from_millis(600);
    let holder = must_acquire(&locks.lock("ghost")).await;
    let server_key = holder.server_key().to_owned();
    // A waiter that tries once, then dies without a word.
    let ghost = Token::generate().expect("token");
    let attempt = backend
        .try_acquire_fair(&server_key, &ghost, Duration::from_secs(30), patience)
        .await
        .expect("the ghost's attempt");
    assert!(matches!(attempt, Attempt::Held { .. }), "{attempt:?}");
    let living = living_fair_waiter(&locks, "ghost", patience);
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.release().await.expect("release");
    let guard = living
        .await
        .expect("task")
        .expect("the waiter behind a dead one got the lock once the dead one's patience passed");
    guard.release().await.expect("release");
}

/// The same behind a fair holder: a waiter that dies while the one before it, itself a fair
/// waiter, holds the lock is skipped once its patience has passed. (A backend may tell a fair
/// holder who comes next, as Redis's does in the lock's value so that the release is announced
/// to that waiter alone; a next that is dead must not stop the line for good either.)
///
/// Rule 15 of [the rules](self#the-rules).
pub async fn a_dead_waiter_behind_a_fair_holder_is_skipped(backend: Arc<dyn LockBackend>) {
    let locks = client(&backend);
    let patience = Duration::from_millis(600);
    let ttl = Duration::from_secs(30);
    let holder = must_acquire(&locks.lock("successor")).await;
    let server_key = holder.server_key().to_owned();
    // Two waiters that try by hand: the next holder, and behind it one that then dies.
    let next = Token::generate().expect("token");
    let ghost = Token::generate().expect("token");
    for token in [next, ghost] {
        let attempt = backend
            .try_acquire_fair(&server_key, &token, ttl, patience)
            .await
            .expect("a fair attempt");
        assert!(matches!(attempt, Attempt::Held { .. }), "{attempt:?}");
    }
    let living = living_fair_waiter(&locks, "successor", patience);
    tokio::time::sleep(Duration::from_millis(100)).await;
    holder.release().await.expect("release");
    // The next in line takes its turn (it is first; it may have to wait for the release to
    // be seen) and releases it, with the dead waiter behind it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = backend
            .try_acquire_fair(&server_key, &next, ttl, patience)
            .await
            .expect("the next one's attempt");
        if matches!(attempt, Attempt::Acquired { .. }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the first in line never got its turn: {attempt:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(backend.release(&server_key, &next).await.expect("release"));
    let guard = living.await.expect("task").expect(
        "the waiter behind a dead one got the lock from a fair holder once the dead one's \
         patience passed",
    );
    guard.release().await.expect("release");
}
