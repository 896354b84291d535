//! The scenarios, each bounded in count and in time.

use std::sync::Arc;
use std::time::Duration;

use pylock::Locks;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::baseline::{FloorPinger, Pinger};
use crate::load::{Budget, in_tasks};
use crate::stats::Samples;

/// One task, fresh keys: acquire + release, one after the other. With a pinger, each cycle
/// is preceded by a PING, timed into `pings`, so cycle and round trip are measured under the
/// same load.
pub(crate) async fn uncontended(
    locks: &Locks,
    budget: Budget,
    mut pinger: Option<&mut Pinger>,
) -> Cycles {
    let mut log = CycleLog::new(budget);
    for i in 0..budget.operations {
        let lock = locks.lock(format!("uncontended:{i}"));
        if let Some(pinger) = pinger.as_deref_mut() {
            log.pinged(pinger.ping().await);
        }
        let cycle = Instant::now();
        let guard = lock.acquire().await.expect("acquire");
        log.acquired(cycle.elapsed());
        guard.release().await.expect("release");
        if !log.cycle(cycle.elapsed()) {
            break;
        }
    }
    log.finish()
}

/// The timing of a loop of cycles, each preceded by a round trip.
pub(crate) struct Cycles {
    /// Each cycle, acquire + release.
    pub(crate) samples: Samples,
    /// The round trip before each cycle, if measured.
    pub(crate) pings: Samples,
    /// The acquire of each cycle alone: with `samples`, what the release took.
    pub(crate) acquires: Samples,
}

/// Cycles being measured, and when to stop.
struct CycleLog {
    cycles: Cycles,
    started: std::time::Instant,
    time: Duration,
}

impl CycleLog {
    fn new(budget: Budget) -> Self {
        CycleLog {
            cycles: Cycles {
                samples: Samples::default(),
                pings: Samples::default(),
                acquires: Samples::default(),
            },
            started: std::time::Instant::now(),
            time: budget.time,
        }
    }

    /// The round trip before the next cycle took `took`.
    fn pinged(&mut self, took: Duration) {
        self.cycles.pings.push(took);
    }

    /// The acquire of the current cycle took `took`.
    fn acquired(&mut self, took: Duration) {
        self.cycles.acquires.push(took);
    }

    /// Records a cycle that took `took`; whether the time budget allows another.
    fn cycle(&mut self, took: Duration) -> bool {
        let samples = &mut self.cycles.samples;
        samples.push(took);
        // Cycles per second of lock work alone, without the interleaved round trips.
        samples.elapsed += took;
        samples.operations += 1;
        self.started.elapsed() <= self.time
    }

    fn finish(self) -> Cycles {
        self.cycles
    }
}

/// The blocking API (`pylock::blocking`) from a plain thread, as code without a runtime uses
/// it: acquire + release on fresh keys. With a floor pinger, each cycle is preceded by a
/// round trip on a plain blocking socket, timed into the second result.
pub(crate) fn blocking(
    locks: &pylock::blocking::Locks,
    budget: Budget,
    mut floor: Option<&mut FloorPinger>,
) -> Cycles {
    let mut log = CycleLog::new(budget);
    for i in 0..budget.operations {
        let lock = locks.lock(format!("blocking:{i}"));
        if let Some(floor) = floor.as_deref_mut() {
            log.pinged(floor.ping());
        }
        let cycle = std::time::Instant::now();
        let guard = lock.acquire().expect("acquire");
        log.acquired(cycle.elapsed());
        guard.release().expect("release");
        if !log.cycle(cycle.elapsed()) {
            break;
        }
    }
    log.finish()
}

/// `tasks` tasks on distinct keys of one backend, acquiring and releasing as fast as they can.
pub(crate) async fn throughput(locks: &Locks, tasks: usize, budget: Budget) -> Samples {
    let locks = locks.clone();
    in_tasks(tasks, budget, move |task, i| {
        let lock = locks.lock(format!("throughput:{task}:{}", i % 16));
        async move {
            let guard = lock.acquire().await.expect("acquire");
            guard.release().await.expect("release");
        }
    })
    .await
}

/// `waiters` tasks on one key. Each sample is the time from the moment a holder starts its
/// release to the moment the next holder's acquire returns. Every holder keeps the lock for
/// `HOLD`, so the others are all waiting by then; after its release it stays out until
/// someone else got the lock, so the next holder is always a waiter woken by the release.
pub(crate) async fn handoff(locks: &Locks, waiters: usize, budget: Budget) -> Samples {
    const HOLD: Duration = Duration::from_millis(1);
    let released_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (acquisitions, _) = watch::channel(0u64);
    let acquisitions = Arc::new(acquisitions);
    let started = Instant::now();
    let handles: Vec<_> = (0..waiters)
        .map(|_| {
            let lock = locks
                .lock("handoff")
                .timeout(Duration::from_secs(30))
                .expires(Duration::from_secs(10));
            let released_at = Arc::clone(&released_at);
            let acquisitions = Arc::clone(&acquisitions);
            tokio::spawn(async move {
                let mut samples = Samples::default();
                let mut seen = acquisitions.subscribe();
                loop {
                    let guard = lock.acquire().await.expect("acquire");
                    if let Some(at) = released_at.lock().await.take() {
                        samples.push(at.elapsed());
                    }
                    samples.operations += 1;
                    let mut count = 0;
                    acquisitions.send_modify(|n| {
                        *n += 1;
                        count = *n;
                    });
                    let done = count >= budget.operations || started.elapsed() > budget.time;
                    seen.mark_unchanged();
                    tokio::time::sleep(HOLD).await;
                    *released_at.lock().await = Some(Instant::now());
                    guard.release().await.expect("release");
                    if done {
                        return samples;
                    }
                    // Stay out until another task got the lock (or all others have finished).
                    let _ = tokio::time::timeout(Duration::from_secs(1), seen.changed()).await;
                    if started.elapsed() > budget.time + Duration::from_secs(1) {
                        return samples;
                    }
                }
            })
        })
        .collect();
    Samples::of_tasks(handles, started).await
}
