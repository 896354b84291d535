//! The fair line of an etcd lock (`Lock::fair`): each waiter's place is a key under the lock's
//! queue prefix, on a lease of the waiter's patience, so its `create_revision` orders the line
//! and a waiter that stops signing of life drops out by itself; the lock goes to the first in
//! line only. The pattern of etcd's own `concurrency.Mutex`, with the lock itself kept apart so
//! that the unfair and fair modes share its key.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use etcd_client::{GetOptions, KeyValue, SortOrder, SortTarget};

/// What the names of a lock's queue entries start with, after the lock's key. Lock names may
/// not contain it.
pub(crate) const QUEUE_MARK: &str = ":pylock-queue/";

/// Places remembered at most; beyond it they are all forgotten (their waiters queue again
/// with their next attempt, keeping their turn: putting a place again keeps its revision).
const MAX_PLACES: usize = 4096;

/// A waiter's place in line, as its last attempt left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spot {
    /// The place's `create_revision`: its turn.
    pub(crate) revision: i64,
    /// The lease the place is on.
    pub(crate) lease: i64,
}

/// The places in line of this backend's fair waiters, by their keys, so that an attempt after
/// the first is one transaction.
#[derive(Debug, Default)]
pub(crate) struct Places {
    spots: Mutex<HashMap<String, Spot>>,
}

impl Places {
    fn spots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Spot>> {
        self.spots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where the waiter of `place` stands, if known.
    pub(crate) fn get(&self, place: &str) -> Option<Spot> {
        self.spots().get(place).copied()
    }

    /// The waiter of `place` stands at `spot`.
    pub(crate) fn remember(&self, place: &str, spot: Spot) {
        let mut spots = self.spots();
        if spots.len() >= MAX_PLACES {
            spots.clear();
        }
        spots.insert(place.to_owned(), spot);
    }

    /// The waiter of `place` left the line (it took the lock or gave up) or lost its place.
    pub(crate) fn forget(&self, place: &str) {
        self.spots().remove(place);
    }
}

/// The prefix of `key`'s queue.
pub(crate) fn queue_prefix(key: &str) -> String {
    format!("{key}{QUEUE_MARK}")
}

/// The queue entry of the waiter with owner token `token` (hex).
pub(crate) fn entry(key: &str, token: &str) -> String {
    format!("{}{token}", queue_prefix(key))
}

/// The end (exclusive) of the range that holds `key` and its queue: the watch of a lock
/// covers both. Other keys in that range (names that extend `key` with a character sorting
/// before `:`) are filtered out by [`is_watched`].
pub(crate) fn watch_range_end(key: &str) -> Vec<u8> {
    prefix_end(queue_prefix(key).as_bytes())
}

/// Whether an event on `changed` concerns the lock `key`: the lock itself, or its line.
pub(crate) fn is_watched(key: &str, changed: &[u8]) -> bool {
    changed == key.as_bytes() || changed.starts_with(queue_prefix(key).as_bytes())
}

/// Reading the first in `key`'s line: the entry created earliest.
pub(crate) fn first_in_line_options() -> GetOptions {
    GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
}

/// The token (hex) of a queue entry.
pub(crate) fn token_of(entry: &KeyValue) -> String {
    String::from_utf8_lossy(entry.value()).into_owned()
}

/// The smallest key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_remembered_until_forgotten_and_bounded() {
        let places = Places::default();
        let spot = Spot {
            revision: 7,
            lease: 9,
        };
        places.remember("pylock:a:pylock-queue/01", spot);
        assert_eq!(places.get("pylock:a:pylock-queue/01"), Some(spot));
        places.forget("pylock:a:pylock-queue/01");
        assert_eq!(places.get("pylock:a:pylock-queue/01"), None);
        for i in 0..=MAX_PLACES {
            places.remember(&format!("p{i}"), spot);
        }
        assert!(places.spots().len() <= MAX_PLACES);
        assert_eq!(
            places.get(&format!("p{MAX_PLACES}")),
            Some(spot),
            "the newest stays"
        );
    }

    #[test]
    fn the_watched_range_holds_the_lock_and_its_line_only_as_filtered() {
        let end = watch_range_end("pylock:a");
        assert_eq!(end, b"pylock:a:pylock-queue0");
        assert!(b"pylock:a".as_slice() < end.as_slice());
        assert!(is_watched("pylock:a", b"pylock:a"));
        assert!(is_watched("pylock:a", b"pylock:a:pylock-queue/00ff"));
        assert!(!is_watched("pylock:a", b"pylock:a+b"));
        assert_eq!(prefix_end(&[0x61, 0xff]), vec![0x62]);
    }
}
