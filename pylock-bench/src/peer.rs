//! The peer baseline, `--peer rslock`: the same work done with rslock, the Rust lock library
//! users compare us with, on the same Redis in the same run.
//!
//! - `uncontended`: one task, lock + unlock on fresh keys, as pylock's `uncontended`;
//! - `contended`: `--processes` processes (default 4) take turns on one key, `--cycles` times
//!   each (default 300), doing a non-atomic `GET` + `SET` of a counter while they hold it. The
//!   wall time is taken from the moment every process is connected and told to go until the
//!   last one is done, for pylock's processes and then for rslock's, `--repeat` times; the
//!   counter must come out exact (one lost update means two holders at once).
//!
//! The workers are this program again (`--worker pylock|rslock`), reading `go` on stdin.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pylock::Locks;
use redis::AsyncCommands;
use rslock::LockManager;

use crate::load::Budget;
use crate::stats::Samples;

/// How long a lock of the contended workload is asked for: far longer than any hold.
const TTL: Duration = Duration::from_secs(10);

/// rslock's uncontended cycle: `lock` then `unlock` on fresh keys, within `budget`.
pub(crate) async fn rslock_uncontended(url: &str, budget: Budget) -> Samples {
    let manager = LockManager::new(vec![url.to_owned()]);
    let mut samples = Samples::default();
    let started = Instant::now();
    for i in 0..budget.operations {
        let key = format!("rslock-bench:{}:{i}", std::process::id());
        let cycle = Instant::now();
        let lock = manager
            .lock(key.as_bytes(), TTL)
            .await
            .expect("rslock lock");
        manager.unlock(&lock).await;
        samples.push(cycle.elapsed());
        samples.elapsed += cycle.elapsed();
        samples.operations += 1;
        if started.elapsed() > budget.time {
            break;
        }
    }
    samples
}

/// One timed run of the contended workload with `library`'s workers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Contended {
    pub(crate) seconds: f64,
    pub(crate) counter_exact: bool,
}

/// Runs `processes` workers of `library` on one key, `cycles` each.
pub(crate) async fn contended(
    url: &str,
    library: &str,
    processes: usize,
    cycles: u64,
) -> Contended {
    let key = format!("pylock-bench:contended:{}:{library}", std::process::id());
    let counter = format!("{key}:counter");
    let mut redis = plain_connection(url).await;
    let (): () = redis.set(&counter, 0).await.expect("SET");

    let exe = std::env::current_exe().expect("this program");
    let mut workers: Vec<(Child, BufReader<std::process::ChildStdout>)> = (0..processes)
        .map(|_| {
            let mut child = Command::new(&exe)
                .args(["--url", url, "--worker", library, "--worker-key", &key])
                .args(["--cycles", &cycles.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a worker");
            let stdout = BufReader::new(child.stdout.take().expect("stdout"));
            (child, stdout)
        })
        .collect();
    for (_, stdout) in &mut workers {
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("a worker says it is ready");
        assert_eq!(line.trim(), "ready", "a worker failed to start");
    }
    let started = Instant::now();
    for (child, _) in &mut workers {
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("go");
        stdin.flush().expect("go");
    }
    for (child, _) in &mut workers {
        assert!(child.wait().expect("a worker").success(), "a worker failed");
    }
    let seconds = started.elapsed().as_secs_f64();
    let count: u64 = redis.get(&counter).await.expect("GET");
    let _: () = redis.del(&counter).await.expect("DEL");
    Contended {
        seconds,
        counter_exact: count == processes as u64 * cycles,
    }
}

/// A worker process of the contended workload: connects, says `ready`, waits for `go`, then
/// takes the lock `cycles` times, each time incrementing the counter with a `GET` and a `SET`.
pub(crate) async fn worker(url: &str, library: &str, key: &str, cycles: u64) {
    let counter = format!("{key}:counter");
    let mut redis = plain_connection(url).await;
    let locks = pylock::connect(url).expect("URL");
    let manager = LockManager::new(vec![url.to_owned()]);
    // Connect and load the scripts before the clock starts.
    let warm_up = format!("{key}:warm-up:{}", std::process::id());
    match library {
        "pylock" => locks
            .lock(&warm_up)
            .acquire()
            .await
            .expect("acquire")
            .release()
            .await
            .expect("release"),
        "rslock" => {
            manager
                .unlock(&manager.lock(warm_up.as_bytes(), TTL).await.expect("lock"))
                .await
        }
        other => panic!("no such library {other:?}: pylock or rslock"),
    }
    println!("ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).expect("go");
    for _ in 0..cycles {
        match library {
            "pylock" => {
                let guard = held(&locks, key).await;
                increment(&mut redis, &counter).await;
                guard.release().await.expect("release");
            }
            _ => {
                let lock = manager
                    .acquire_no_guard(key.as_bytes(), TTL)
                    .await
                    .expect("lock");
                increment(&mut redis, &counter).await;
                manager.unlock(&lock).await;
            }
        }
    }
}

async fn held(locks: &Locks, key: &str) -> pylock::LockGuard {
    locks
        .lock(key)
        .expires(TTL)
        .timeout(Duration::from_secs(60))
        .acquire()
        .await
        .expect("acquire")
}

/// A connection of the `redis` crate's own, for the counter.
async fn plain_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

/// The non-atomic increment the lock protects.
async fn increment(redis: &mut redis::aio::MultiplexedConnection, counter: &str) {
    let value: u64 = redis.get(counter).await.expect("GET");
    let (): () = redis.set(counter, value + 1).await.expect("SET");
}
