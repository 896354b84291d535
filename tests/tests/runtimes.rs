//! One client shared by several tokio runtimes, on a real Redis: the blocking API's and async
//! ones, runtimes that end (each `#[tokio::test]` has its own), and a runtime that is alive but
//! not running (its thread busy elsewhere). A connection's tasks run on the runtime that made
//! it, so each runtime gets its own; notices read on another runtime are not relied on.

use std::sync::mpsc;
use std::time::Duration;

use pylock_tests::{Kind, Needs, TestServer};

const TTL: Duration = Duration::from_secs(60);
const PATIENCE: Duration = Duration::from_secs(30);

/// A runtime on a thread of its own that runs `work`, then stays alive without running
/// (its thread blocked on other work) until the returned [`Stopped`] is dropped.
fn runtime_that_stops_running<F>(work: impl FnOnce() -> F + Send + 'static) -> Stopped
where
    F: std::future::Future<Output = ()>,
{
    let (idle, resume) = (mpsc::channel::<()>(), mpsc::channel::<()>());
    let thread = std::thread::spawn({
        let (idle, resume) = (idle.0, resume.1);
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(work());
            // Alive, not running: blocked on something else.
            idle.send(()).expect("idle");
            let _ = resume.recv();
        }
    });
    idle.1.recv().expect("the first runtime is idle");
    Stopped {
        resume: Some(resume.0),
        thread: Some(thread),
    }
}

/// A runtime that stopped running; dropping this lets its thread end.
struct Stopped {
    resume: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Stopped {
    fn drop(&mut self) {
        drop(self.resume.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits for `waiter` (whose lock was released just now), releases its lock, and checks it
/// came soon. Its last attempt at its deadline ([`PATIENCE`]) would find the lock free too:
/// what tells a poll or a notice from sleeping through the release is how soon it came, with
/// a wide margin.
async fn woken_soon_after_the_release(
    waiter: tokio::task::JoinHandle<pylock::Result<pylock::LockGuard>>,
) {
    let released = std::time::Instant::now();
    waiter
        .await
        .expect("task")
        .expect("the waiter got the lock")
        .release()
        .await
        .expect("release");
    let after = released.elapsed();
    assert!(
        after < PATIENCE / 3,
        "the waiter got the lock {after:?} after the release: it slept through it"
    );
}

/// Twenty acquire + release cycles of `locks` from the calling runtime, each bounded.
async fn cycles(locks: &pylock::Locks) {
    for i in 0..20 {
        locks
            .lock(format!("second-{i}"))
            .timeout(Duration::from_secs(5))
            .acquire()
            .await
            .expect("a call of the second runtime, on its own connection")
            .release()
            .await
            .expect("release");
    }
}

/// A client used from one runtime that then ends (as each `#[tokio::test]` has its own), and
/// then from another: the connections that lived on the first are replaced, and the call
/// succeeds.
#[test]
fn a_client_outlives_the_runtime_that_first_used_it() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime for the test server");
    let Some(server) = runtime.block_on(TestServer::start(Kind::Redis, Needs::any())) else {
        return;
    };
    let locks = pylock::Locks::connect(server.url())
        .expect("connect")
        .key_prefix(format!("outlives:{}:", std::process::id()));
    for round in 0..3 {
        let short_lived = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let started = std::time::Instant::now();
        short_lived
            .block_on(
                locks
                    .lock("outlived")
                    .timeout(Duration::from_secs(5))
                    .run(async {}),
            )
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        eprintln!("round {round}: {:?}", started.elapsed());
        drop(short_lived);
    }
    // A container is removed by an async drop, which needs a runtime.
    runtime.block_on(async move { drop(server) });
}

/// One client used from two runtimes (as the tests of one binary share a global client, each
/// on its own runtime): the first runtime's waiter makes the notice subscription, the second
/// runtime's waiter shares it, then the first runtime ends, taking the connection's reader
/// with it. The second waiter must still get the lock at the release (its notices are marked
/// down and it polls), not sleep until the holder's TTL.
#[test]
fn notices_outlive_the_runtime_that_made_them() {
    let main = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = main.block_on(TestServer::start(Kind::Redis, Needs::control())) else {
        return;
    };
    let shared = pylock::connect(server.url())
        .expect("connect")
        .expires(TTL)
        .timeout(PATIENCE);
    let holder = pylock::connect(server.url()).expect("connect").expires(TTL);
    let held = main
        .block_on(holder.lock("outlived").acquire())
        .expect("holder");

    let first = tokio::runtime::Runtime::new().expect("runtime");
    let first_waiter = first.spawn({
        let lock = shared.lock("outlived");
        async move { lock.acquire().await.map(pylock::LockGuard::abandon) }
    });
    std::thread::sleep(Duration::from_millis(500));
    let second_waiter = main.spawn({
        let lock = shared.lock("outlived");
        async move { lock.acquire().await }
    });
    std::thread::sleep(Duration::from_millis(500));
    first_waiter.abort();
    first.shutdown_timeout(Duration::from_secs(5));

    main.block_on(async {
        held.release().await.expect("release");
        woken_soon_after_the_release(second_waiter).await;
        drop(server);
    });
}

/// The first runtime to use a client makes its connections, then stops running (its thread
/// blocks on other work) without ending, with one of its waiters subscribed: another
/// runtime's calls and waits on the same client, on the same lock too, must not wait on it.
#[test]
fn a_runtime_that_stopped_running_holds_up_no_one() {
    let main = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = main.block_on(TestServer::start(Kind::Redis, Needs::control())) else {
        return;
    };
    let url = format!("{}?response_timeout=2s", server.url());
    let shared = pylock::connect(&url).expect("connect").expires(TTL);
    let other = pylock::connect(server.url()).expect("connect").expires(TTL);
    let held = main.block_on(other.lock("parked").acquire()).expect("held");

    // The first runtime: a call, and a waiter that subscribes and stays parked, then it idles.
    let stopped = runtime_that_stops_running({
        let shared = shared.clone();
        move || async move {
            shared
                .lock("first")
                .acquire()
                .await
                .expect("first call")
                .release()
                .await
                .expect("release");
            let lock = shared.lock("parked").timeout(PATIENCE);
            tokio::spawn(async move { lock.acquire().await });
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });

    main.block_on(async {
        cycles(&shared).await;
        // The lock the first runtime's parked waiter waits for: its channel is subscribed on
        // the first runtime's notice connection, which nobody reads now.
        let waiter = tokio::spawn({
            let lock = shared.lock("parked").timeout(PATIENCE);
            async move { lock.acquire().await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release().await.expect("release");
        woken_soon_after_the_release(waiter).await;
    });
    drop(stopped);
    main.block_on(async move { drop(server) });
}

/// The same for memcached's connections: the runtime that made them idles, another runtime's
/// calls go through connections of its own.
#[test]
fn memcached_calls_do_not_wait_on_a_runtime_that_stopped_running() {
    let main = tokio::runtime::Runtime::new().expect("runtime");
    let Some(server) = main.block_on(TestServer::start(Kind::Memcached, Needs::any())) else {
        return;
    };
    let url = format!("{}?response_timeout=2s", server.url());
    let shared = pylock::connect(&url).expect("connect");
    let stopped = runtime_that_stops_running({
        let shared = shared.clone();
        move || async move {
            let lock = shared.lock("first");
            lock.acquire()
                .await
                .expect("first")
                .release()
                .await
                .expect("release");
        }
    });
    main.block_on(cycles(&shared));
    drop(stopped);
    main.block_on(async move { drop(server) });
}
