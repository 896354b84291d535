//! The leases a backend keeps between attempts, so that an attempt costs one write through
//! Raft instead of two.
//!
//! A lease that carries no key (an attempt that found the lock held, a lock released, the old
//! lease of an extended lock) goes back to the pool, and the next attempt that asks for the
//! same number of seconds takes it instead of granting a new one. That attempt renews it (a
//! keep-alive, answered by the leader without a Raft write) alongside its transaction and
//! trusts the lock only once both have answered: the renewal reached the leader after the
//! attempt was sent, so the lease lives at least the TTL counted from the attempt, which is
//! what the waiting loop counts the lock's validity from.
//!
//! The book also keeps the lease of each lock this backend holds (its "lent" leases), so that a
//! release knows how long the lease it frees has left.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Idle leases kept at most; more are revoked. A crowd of waiters in one process keeps one
/// each between its attempts.
const MAX_IDLE: usize = 1024;

/// Lent leases remembered at most; beyond it those surely gone are forgotten.
const MAX_LENT: usize = 4096;

/// A lease of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// etcd's id.
    pub(crate) id: i64,
    /// The seconds it was asked for: the pool's key.
    pub(crate) seconds: i64,
    /// The TTL etcd granted (at least its minimum), which each renewal restores.
    granted: Duration,
    /// Before this the lease surely lives: its grant or last renewal was sent no earlier than
    /// `alive_until - granted`.
    alive_until: Instant,
}

impl Lease {
    /// A lease granted `granted` by a request sent at `sent`.
    pub(crate) fn granted(id: i64, seconds: i64, granted: Duration, sent: Instant) -> Self {
        Lease {
            id,
            seconds,
            granted,
            alive_until: sent + granted,
        }
    }

    /// This lease, renewed by a request sent at `sent`.
    pub(crate) fn renewed(self, sent: Instant) -> Self {
        Lease {
            alive_until: sent + self.granted,
            ..self
        }
    }
}

/// The idle and lent leases of one backend.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    idle: Vec<Lease>,
    lent: HashMap<i64, Lease>,
}

impl Leases {
    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An idle lease of `seconds` that lives at least `margin` more, the most recently used
    /// first. Idle leases with less life left are forgotten: they end by themselves.
    pub(crate) fn take(&self, seconds: i64, margin: Duration) -> Option<Lease> {
        let now = Instant::now();
        let mut book = self.book();
        book.idle.retain(|lease| lease.alive_until > now + margin);
        let at = book
            .idle
            .iter()
            .rposition(|lease| lease.seconds == seconds)?;
        Some(book.idle.remove(at))
    }

    /// `lease`, which carries no key, for a later attempt. Returns it if the pool is full: the
    /// caller revokes it.
    #[must_use]
    pub(crate) fn give_back(&self, lease: Lease) -> Option<Lease> {
        let mut book = self.book();
        if book.idle.len() >= MAX_IDLE {
            return Some(lease);
        }
        book.idle.push(lease);
        None
    }

    /// `lease` now carries a lock this backend holds.
    pub(crate) fn lend(&self, lease: Lease) {
        let mut book = self.book();
        if book.lent.len() >= MAX_LENT {
            let now = Instant::now();
            book.lent.retain(|_, lease| lease.alive_until > now);
        }
        if book.lent.len() < MAX_LENT {
            book.lent.insert(lease.id, lease);
        }
    }

    /// The lent lease `id`, whose lock was released or moved to another lease: it carries no
    /// key any more. `None` if it is not one this backend lent.
    pub(crate) fn returned(&self, id: i64) -> Option<Lease> {
        self.book().lent.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(id: i64, seconds: i64, life: Duration) -> Lease {
        Lease::granted(id, seconds, life, Instant::now())
    }

    #[test]
    fn an_idle_lease_serves_only_its_own_seconds_and_only_with_life_left() {
        let leases = Leases::default();
        let margin = Duration::from_secs(1);
        assert_eq!(
            leases.give_back(lease(1, 10, Duration::from_secs(10))),
            None
        );
        assert_eq!(
            leases.give_back(lease(2, 5, Duration::from_millis(500))),
            None
        );
        assert_eq!(leases.take(5, margin), None, "too little life left");
        assert_eq!(leases.take(10, margin).map(|l| l.id), Some(1));
        assert_eq!(leases.take(10, margin), None, "taken once");
    }

    #[test]
    fn a_full_pool_hands_the_lease_back_for_revoking() {
        let leases = Leases::default();
        for id in 0..MAX_IDLE {
            let id = i64::try_from(id).unwrap();
            assert_eq!(
                leases.give_back(lease(id, 10, Duration::from_secs(60))),
                None
            );
        }
        let extra = lease(-1, 10, Duration::from_secs(60));
        assert_eq!(leases.give_back(extra), Some(extra));
    }

    #[test]
    fn a_released_lock_returns_the_lease_it_was_lent() {
        let leases = Leases::default();
        let lent = lease(7, 10, Duration::from_secs(10));
        leases.lend(lent);
        assert_eq!(leases.returned(7), Some(lent));
        assert_eq!(leases.returned(7), None);
        assert_eq!(leases.returned(8), None, "never lent");
    }

    #[test]
    fn a_renewal_counts_the_life_from_when_it_was_sent() {
        let sent = Instant::now();
        let old = Lease::granted(
            1,
            10,
            Duration::from_secs(10),
            sent - Duration::from_secs(9),
        );
        let renewed = old.renewed(sent);
        assert_eq!(renewed.alive_until, sent + Duration::from_secs(10));
        assert_eq!((renewed.id, renewed.seconds), (1, 10));
    }
}
