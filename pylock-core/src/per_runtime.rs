//! [`PerRuntime`]: one value per tokio runtime, for a backend's connections.
//!
//! A connection's tasks (its reader, its writer) run on the runtime that made it, and only
//! while that runtime runs. A client shared by several runtimes (the blocking API's and an
//! async one; the tests of one binary; a program with a runtime per thread) would otherwise
//! send everything through the first runtime's connection, and wait on it for as long as
//! that runtime does not run (its thread blocked in other work) or for ever once it ended.
//! So each runtime gets its own connection.

use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::runtime::{Handle, Id};

/// How many runtimes' values are kept; beyond, the one set longest ago goes (its runtime has
/// most likely ended, as each `#[tokio::test]`'s does).
const KEPT: usize = 16;

/// One value per tokio runtime (a connection, cheap to clone), looked up by the runtime the
/// caller runs on. Outside any runtime, one shared value.
#[derive(Debug)]
pub struct PerRuntime<T> {
    /// Most recently used last.
    values: Mutex<Vec<(Option<Id>, T)>>,
}

impl<T> Default for PerRuntime<T> {
    fn default() -> Self {
        PerRuntime {
            values: Mutex::new(Vec::new()),
        }
    }
}

fn current() -> Option<Id> {
    Handle::try_current().ok().map(|handle| handle.id())
}

impl<T: Clone> PerRuntime<T> {
    /// An empty holder.
    pub fn new() -> Self {
        Self::default()
    }

    fn values(&self) -> MutexGuard<'_, Vec<(Option<Id>, T)>> {
        // Each update is one push, remove or assignment: a panic cannot leave it half done.
        self.values.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of the caller's runtime, if it has one.
    pub fn get(&self) -> Option<T> {
        let runtime = current();
        let values = self.values();
        values
            .iter()
            .rev()
            .find(|(id, _)| *id == runtime)
            .map(|(_, value)| value.clone())
    }

    /// Makes `value` the caller's runtime's, replacing its previous one.
    pub fn set(&self, value: T) {
        let runtime = current();
        let mut values = self.values();
        values.retain(|(id, _)| *id != runtime);
        if values.len() >= KEPT {
            values.remove(0);
        }
        values.push((runtime, value));
    }

    /// Forgets the caller's runtime's value if `is_it` says it is the one to forget (e.g. the
    /// same connection, not a newer one made meanwhile).
    pub fn forget_if(&self, is_it: impl Fn(&T) -> bool) {
        let runtime = current();
        self.values()
            .retain(|(id, value)| *id != runtime || !is_it(value));
    }

    /// Forgets every runtime's value for which `is_it` says so.
    pub fn forget_all_if(&self, is_it: impl Fn(&T) -> bool) {
        self.values().retain(|(_, value)| !is_it(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_runtime_has_its_own_value() {
        let held = std::sync::Arc::new(PerRuntime::<u32>::new());
        let first = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let second = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        first.block_on(async { held.set(1) });
        assert_eq!(first.block_on(async { held.get() }), Some(1));
        assert_eq!(second.block_on(async { held.get() }), None);
        second.block_on(async { held.set(2) });
        assert_eq!(first.block_on(async { held.get() }), Some(1));
        assert_eq!(second.block_on(async { held.get() }), Some(2));
        first.block_on(async { held.forget_if(|v| *v == 2) });
        assert_eq!(
            first.block_on(async { held.get() }),
            Some(1),
            "not the first's"
        );
        first.block_on(async { held.forget_if(|v| *v == 1) });
        assert_eq!(first.block_on(async { held.get() }), None);
        assert_eq!(held.get(), None, "outside any runtime");
    }

    #[test]
    fn only_the_most_recent_runtimes_are_kept() {
        let held = PerRuntime::<usize>::new();
        let runtimes: Vec<_> = (0..KEPT + 2)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap()
            })
            .collect();
        for (i, runtime) in runtimes.iter().enumerate() {
            runtime.block_on(async { held.set(i) });
        }
        assert_eq!(runtimes[0].block_on(async { held.get() }), None);
        assert_eq!(
            runtimes[KEPT + 1].block_on(async { held.get() }),
            Some(KEPT + 1)
        );
        assert_eq!(held.values().len(), KEPT);
    }
}
