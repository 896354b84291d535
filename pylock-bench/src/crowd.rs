//! The `crowd` scenario: many waiters on one lock. What it costs the server while they wait
//! and per hand-off, how long each waits, and whether they are served in order.
//!
//! 1. A holder takes the lock; `waiters` tasks start acquiring it (fair ones with `--fair`),
//!    one after the other (the order they started in is their request order; a fair one only
//!    once the one before stands in line on the server, see [`Line`]), with a 5-minute
//!    timeout.
//! 2. Once all wait, the server's command count over [`IDLE_WINDOW`] gives the idle cost.
//! 3. The holder releases; each waiter in turn holds the lock for `hold` and releases. The
//!    server's commands from the first release to the last, divided by the acquisitions, give
//!    the cost per hand-off; a hand-off's latency is from the start of a release to the
//!    return of the next acquire; a waiter's wait is counted from the first release (or from
//!    when it asked, if later), so that the ideal longest wait is `waiters` × `hold`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pylock::{Error, Locks};
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::stats::Samples;

/// How long the idle cost is measured (longer for fair waiters, see [`crowd`]).
const IDLE_WINDOW: Duration = Duration::from_secs(2);
/// How long apart fair waiters start where the bench cannot see the line, so that each has
/// its place in line before the next asks.
const FAIR_STAGGER: Duration = Duration::from_millis(20);
/// How long the bench waits to see a fair waiter in line before it stops looking and
/// staggers the rest (a line it cannot find: a namespace, say).
const LINE_PATIENCE: Duration = Duration::from_secs(2);
/// Each waiter's timeout: no waiter should ever reach it.
const WAIT_LIMIT: Duration = Duration::from_secs(300);
/// The lock's TTL, longer than the idle phase so that it does not end by itself.
const TTL: Duration = Duration::from_secs(10);

/// What one crowd run measured.
#[derive(Debug, Clone)]
pub(crate) struct Crowd {
    pub(crate) waiters: usize,
    pub(crate) fair: bool,
    pub(crate) acquisitions: u64,
    pub(crate) timeouts: u64,
    pub(crate) errors: u64,
    /// Server commands per acquisition during the hand-offs (Redis only).
    pub(crate) server_cmds_per_handoff: Option<f64>,
    /// Server commands per second while everyone waits on a held lock (Redis only).
    pub(crate) idle_cmds_per_s: Option<f64>,
    pub(crate) handoffs: Samples,
    pub(crate) waits: Samples,
    /// Acquisitions by a waiter that started waiting after one that was still waiting.
    pub(crate) fifo_violations: u64,
}

/// One acquisition: when its waiter started, and when it got and gave back the lock.
struct Turn {
    requested: u64,
    asked_at: Instant,
    acquired_at: Instant,
    released_at: Instant,
}

/// Where the bench sees a fair lock's line on the server, so that it starts each fair waiter
/// once the one before stands in it: the request order is then the order of the line,
/// however long a first attempt takes (on etcd it can be two round trips, sent on streams of
/// their own).
pub(crate) enum Line {
    /// The places in the line's sorted set.
    Redis(ConnectionManager),
    /// The places under the line's prefix.
    Etcd(Box<etcd_client::Client>),
    /// A line the bench cannot see: fair waiters start [`FAIR_STAGGER`] apart.
    Unseen,
}

impl Line {
    /// How many stand in the line of the lock stored at `key`, if the bench can tell.
    async fn length(&mut self, key: &str) -> Option<u64> {
        match self {
            Line::Redis(connection) => pylock::redis::scripts::waiters_in_line(key)
                .query_async(connection)
                .await
                .ok(),
            Line::Etcd(client) => {
                let options = etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only();
                let places = client.get(pylock::etcd::line_prefix(key), Some(options));
                places
                    .await
                    .ok()
                    .and_then(|found| u64::try_from(found.count()).ok())
            }
            Line::Unseen => None,
        }
    }

    /// Returns once `count` stand in the line of `key`, or after [`FAIR_STAGGER`] if the bench
    /// cannot see it (from then on, too, if it has not seen the line grow for
    /// [`LINE_PATIENCE`]).
    async fn stand(&mut self, key: &str, count: u64) {
        let deadline = Instant::now() + LINE_PATIENCE;
        while Instant::now() < deadline {
            match self.length(key).await {
                Some(length) if length >= count => return,
                Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                None => break,
            }
        }
        if !matches!(self, Line::Unseen) {
            eprintln!("crowd: the fair line is not where the bench looks; staggering instead");
            *self = Line::Unseen;
        }
        tokio::time::sleep(FAIR_STAGGER).await;
    }
}

/// Runs the scenario; `meter` counts the server's commands (Redis), `line` shows the fair
/// line.
pub(crate) async fn crowd(
    locks: &Locks,
    waiters: usize,
    hold: Duration,
    fair: bool,
    mut meter: Option<ConnectionManager>,
    mut line: Line,
) -> Crowd {
    let key = "crowd";
    let server_key = format!("{}{key}", locks.settings().key_prefix);
    if fair {
        // Load the fair script first: the first attempts on a server without it are answered
        // NOSCRIPT and sent again, in whatever order, which would reorder the line once.
        let warm_up = locks.lock("crowd-warm-up").fair();
        warm_up
            .acquire()
            .await
            .expect("warm-up")
            .release()
            .await
            .expect("warm-up");
    }
    // Long enough to outlast the waiters' start (fair ones start apart); renewed to `TTL`
    // once they all wait, so that the idle phase sees the same lock either way.
    let starting = u32::try_from(waiters).unwrap_or(u32::MAX);
    let mut holder = locks
        .lock(key)
        .expires(TTL + FAIR_STAGGER.saturating_mul(starting).saturating_mul(2))
        .acquire()
        .await
        .expect("the first holder");
    let turns: Arc<Mutex<Vec<Turn>>> = Arc::default();
    let order = Arc::new(AtomicU64::new(0));
    let waiting = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(waiters);
    for started in 1..=waiters {
        let mut lock = locks.lock(key).expires(TTL).timeout(WAIT_LIMIT);
        if fair {
            lock = lock.fair();
        }
        let (turns, order, waiting) =
            (Arc::clone(&turns), Arc::clone(&order), Arc::clone(&waiting));
        tasks.push(tokio::spawn(async move {
            let requested = order.fetch_add(1, Ordering::SeqCst);
            let asked_at = Instant::now();
            waiting.fetch_add(1, Ordering::SeqCst);
            let guard = lock.acquire().await?;
            let acquired_at = Instant::now();
            // The work under the lock, timed exactly (a timer would round it up to its tick).
            std::thread::sleep(hold);
            let released_at = Instant::now();
            guard.release().await?;
            turns.lock().await.push(Turn {
                requested,
                asked_at,
                acquired_at,
                released_at,
            });
            Ok::<(), Error>(())
        }));
        // One at a time, so that the request order is the order they start waiting in: a fair
        // waiter's place in line is made by its first attempt, which must land before the
        // next waiter's.
        if fair {
            line.stand(&server_key, started as u64).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    // Let every waiter make its first attempt and subscribe.
    while waiting.load(Ordering::SeqCst) < waiters as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    holder.extend(TTL).await.expect("the first holder's extend");

    // Fair waiters sign of life every half of their patience: the window must see that.
    let idle_window = if fair {
        IDLE_WINDOW.max(pylock::DEFAULT_FAIR_PATIENCE / 2 + Duration::from_secs(1))
    } else {
        IDLE_WINDOW
    };
    let idle_from = commands(meter.as_mut()).await;
    let idle_started = Instant::now();
    tokio::time::sleep(idle_window).await;
    let idle_to = commands(meter.as_mut()).await;
    let idle_cmds_per_s = per(idle_from, idle_to, idle_started.elapsed().as_secs_f64());

    let first_release = Instant::now();
    let handoff_from = commands(meter.as_mut()).await;
    holder.release().await.expect("the first holder's release");
    let (mut timeouts, mut errors) = (0, 0);
    for task in tasks {
        match task.await.expect("waiter task") {
            Ok(()) => {}
            Err(Error::Timeout { .. }) => timeouts += 1,
            Err(error) => {
                eprintln!("crowd waiter: {error}");
                errors += 1;
            }
        }
    }
    let handoff_to = commands(meter.as_mut()).await;

    let mut turns = std::mem::take(&mut *turns.lock().await);
    turns.sort_by_key(|turn| turn.acquired_at);
    let acquisitions = turns.len() as u64;
    let mut handoffs = Samples::default();
    let mut waits = Samples::default();
    let mut fifo_violations = 0;
    let mut previous_release = first_release;
    let mut earliest_unserved = 0u64;
    let mut served = vec![false; waiters];
    for turn in &turns {
        handoffs.push(turn.acquired_at.saturating_duration_since(previous_release));
        // From when the lock first became free: the idle phase is not a wait for a turn.
        waits.push(turn.acquired_at - turn.asked_at.max(first_release));
        previous_release = turn.released_at;
        // Someone who asked earlier was still waiting: served out of order.
        if turn.requested > earliest_unserved {
            fifo_violations += 1;
        }
        if let Some(slot) = served.get_mut(turn.requested as usize) {
            *slot = true;
        }
        while served.get(earliest_unserved as usize) == Some(&true) {
            earliest_unserved += 1;
        }
    }
    handoffs.operations = acquisitions;
    handoffs.elapsed = first_release.elapsed();
    Crowd {
        waiters,
        fair,
        acquisitions,
        timeouts,
        errors,
        server_cmds_per_handoff: match (handoff_from, handoff_to) {
            (Some(from), Some(to)) if acquisitions > 0 => {
                Some(between(from, to) as f64 / acquisitions as f64)
            }
            _ => None,
        },
        idle_cmds_per_s,
        handoffs,
        waits,
        fifo_violations,
    }
}

fn per(from: Option<u64>, to: Option<u64>, seconds: f64) -> Option<f64> {
    match (from, to) {
        (Some(from), Some(to)) if seconds > 0.0 => Some(between(from, to) as f64 / seconds),
        _ => None,
    }
}

/// The commands run between two readings of [`commands`], the first reading's `INFO` not
/// counted.
fn between(from: u64, to: u64) -> u64 {
    to.saturating_sub(from).saturating_sub(1)
}

/// All commands the server has run so far (`INFO commandstats`; the `INFO` itself is
/// counted from the next reading on).
async fn commands(meter: Option<&mut ConnectionManager>) -> Option<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(meter?)
        .await
        .ok()?;
    let calls = info
        .lines()
        .filter(|line| line.starts_with("cmdstat_"))
        .filter_map(|line| {
            let calls = line.split("calls=").nth(1)?;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum::<u64>();
    Some(calls)
}
