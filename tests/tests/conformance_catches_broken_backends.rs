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
