//! The conformance suite is only worth something if it fails on backends that break the
//! rules. Each test here builds a backend with one rule broken on purpose and asserts that the
//! check for that rule fails on it, while a faithful build of the same backend passes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pylock::Result;
use pylock::raw::{
    Attempt, Capabilities, LockBackend, NoticeBoard, ReleaseNotice, Token, async_trait,
};
use pylock_core::conformance::CHECKS;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Flaw {
    /// Nothing broken: the control.
    None,
    /// Release deletes the key whoever asks (pylock 0.4's unconditional `DEL`).
    ReleaseIgnoresOwner,
    /// Extend sets the TTL whoever asks (a plain `EXPIRE` or `touch`).
    ExtendIgnoresOwner,
    /// Acquire overwrites a held lock although the backend claims to exclude.
    AcquireIgnoresHolder,
    /// Locks never expire.
    TtlIgnored,
    /// Claims release notices but never sends any.
    SilentNotices,
    /// Claims fencing tokens but always gives the same one.
    StuckFence,
}

#[derive(Debug)]
struct Holder {
    token: Token,
    until: Instant,
}

/// A small lock table whose behaviour follows the rules except for its one flaw.
#[derive(Debug)]
struct Table {
    flaw: Flaw,
    holders: Mutex<HashMap<String, Holder>>,
    last_fence: Mutex<u64>,
    notices: NoticeBoard,
}

impl Table {
    fn build(flaw: Flaw) -> Arc<dyn LockBackend> {
        Arc::new(Table {
            flaw,
            holders: Mutex::default(),
            last_fence: Mutex::default(),
            notices: NoticeBoard::new(),
        })
    }

    /// Runs `f` on the holders that have not expired.
    fn with_live<T>(&self, f: impl FnOnce(&mut HashMap<String, Holder>) -> T) -> T {
        let mut holders = self.holders.lock().unwrap();
        let now = Instant::now();
        holders.retain(|_, h| h.until > now);
        f(&mut holders)
    }
}

#[async_trait]
impl LockBackend for Table {
    fn name(&self) -> &'static str {
        "table"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_fencing(true)
            .with_notifications(true)
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        let ttl = if self.flaw == Flaw::TtlIgnored {
            Duration::from_secs(3600)
        } else {
            ttl
        };
        let fence = {
            let mut last = self.last_fence.lock().unwrap();
            if self.flaw != Flaw::StuckFence {
                *last += 1;
            }
            *last
        };
        Ok(self.with_live(|holders| match holders.get(key) {
            Some(h) if h.token != *token && self.flaw != Flaw::AcquireIgnoresHolder => {
                Attempt::Held {
                    remaining: Some(h.until - Instant::now()),
                }
            }
            _ => {
                holders.insert(
                    key.to_owned(),
                    Holder {
                        token: *token,
                        until: Instant::now() + ttl,
                    },
                );
                Attempt::Acquired { fence: Some(fence) }
            }
        }))
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        let ignore_owner = self.flaw == Flaw::ReleaseIgnoresOwner;
        let released = self.with_live(|holders| match holders.get(key) {
            Some(h) if h.token == *token || ignore_owner => holders.remove(key).is_some(),
            _ => false,
        });
        if released && self.flaw != Flaw::SilentNotices {
            self.notices.notify(key);
        }
        Ok(released)
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        let ignore_owner = self.flaw == Flaw::ExtendIgnoresOwner;
        Ok(self.with_live(|holders| match holders.get_mut(key) {
            Some(h) if h.token == *token || ignore_owner => {
                h.until = Instant::now() + ttl;
                true
            }
            _ => false,
        }))
    }

    async fn subscribe(&self, key: &str) -> Result<Option<ReleaseNotice>> {
        Ok(Some(self.notices.subscribe(key).0))
    }
}

/// Runs the check named `check_name` on a table with `flaw`; returns whether it passed.
async fn passes(flaw: Flaw, check_name: &str) -> bool {
    let check = CHECKS
        .iter()
        .find(|c| c.name == check_name)
        .unwrap_or_else(|| panic!("no check named {check_name}"));
    let backend = Table::build(flaw);
    match tokio::spawn(async move { check.run(backend).await }).await {
        Ok(()) => true,
        Err(e) if e.is_panic() => false,
        Err(e) => panic!("{e}"),
    }
}

async fn caught(flaw: Flaw, check_name: &str) {
    assert!(
        passes(Flaw::None, check_name).await,
        "{check_name} fails on a faithful backend"
    );
    assert!(
        !passes(flaw, check_name).await,
        "{check_name} passed on a backend with {flaw:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_1_release_by_a_non_owner_is_caught() {
    caught(
        Flaw::ReleaseIgnoresOwner,
        "only_the_owner_releases_or_extends",
    )
    .await;
    caught(
        Flaw::ReleaseIgnoresOwner,
        "lost_lock_release_and_extend_change_nothing",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_1_extend_by_a_non_owner_is_caught() {
    caught(
        Flaw::ExtendIgnoresOwner,
        "only_the_owner_releases_or_extends",
    )
    .await;
    caught(
        Flaw::ExtendIgnoresOwner,
        "lost_lock_release_and_extend_change_nothing",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_2_a_non_exclusive_acquire_is_caught() {
    caught(Flaw::AcquireIgnoresHolder, "holder_excludes_others").await;
    caught(
        Flaw::AcquireIgnoresHolder,
        "mutual_exclusion_under_contention",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_that_never_expire_are_caught() {
    caught(Flaw::TtlIgnored, "expiry_frees_the_lock").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_5_missing_release_notices_are_caught() {
    caught(Flaw::SilentNotices, "waiter_wakes_on_release").await;
    caught(
        Flaw::SilentNotices,
        "release_between_attempt_and_wait_still_wakes",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_that_do_not_increase_are_caught() {
    caught(Flaw::StuckFence, "fencing_tokens_increase").await;
}

/// `run_all` does not stop at the first broken rule: it names every check that failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_names_every_broken_rule_at_once() {
    let run = tokio::spawn(pylock_core::conformance::run_all(Table::build(
        Flaw::ReleaseIgnoresOwner,
    )));
    let error = run.await.expect_err("run_all panics on a broken backend");
    let payload = error.into_panic();
    let message = payload
        .downcast_ref::<String>()
        .expect("a formatted message");
    for check in [
        "only_the_owner_releases_or_extends",
        "lost_lock_release_and_extend_change_nothing",
    ] {
        assert!(message.contains(check), "{check} missing: {message}");
    }
    assert!(message.contains("conformance checks failed"), "{message}");
}

/// Each check is a trial of its own: a broken rule fails its trial, and what a backend cannot
/// do is ignored, not passed.
#[test]
fn trials_are_one_per_check_and_excused_checks_are_ignored() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let trials = |flaw: Flaw| {
        let backend = Table::build(flaw);
        pylock_core::conformance::trials(
            "table",
            runtime.handle(),
            Arc::new(move || Ok(Arc::clone(&backend))),
        )
    };
    let names: Vec<String> = trials(Flaw::None)
        .iter()
        .map(|trial| trial.name().to_owned())
        .collect();
    let expected: Vec<String> = CHECKS
        .iter()
        .map(|check| format!("table::{}", check.name))
        .collect();
    assert_eq!(names, expected);
    let run = |flaw: Flaw, check: &str| {
        let arguments = libtest_mimic::Arguments {
            filter: Some(format!("table::{check}")),
            exact: true,
            test_threads: Some(1),
            // The runs here fail on purpose: their report goes to a file, not to the log of
            // the real test run, where a FAILED line would mislead.
            logfile: Some(
                std::env::temp_dir()
                    .join(format!("pylock-nested-trials-{}.log", std::process::id()))
                    .display()
                    .to_string(),
            ),
            ..libtest_mimic::Arguments::default()
        };
        let outcome = libtest_mimic::run(&arguments, trials(flaw));
        (outcome.num_passed, outcome.num_failed, outcome.num_ignored)
    };
    assert_eq!(run(Flaw::None, "fencing_tokens_increase"), (1, 0, 0));
    assert_eq!(run(Flaw::StuckFence, "fencing_tokens_increase"), (0, 1, 0));
    // The table keeps no fair queue and cannot inspect: those checks are ignored.
    assert_eq!(run(Flaw::None, "inspect_and_force_release"), (0, 0, 1));
}
