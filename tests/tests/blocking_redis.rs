//! The blocking API (feature `blocking`) on a real Redis: threads without any async runtime
//! of their own exclude each other, and a guard releases on drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use pylock::blocking::Locks;
use pylock_tests::{Kind, Needs, TestServer};

/// A Redis server for a test without a runtime of its own, and the runtime that started it:
/// a container is removed by an async drop, which needs that runtime.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: Option<TestServer>,
}

impl Fixture {
    fn start() -> Option<Fixture> {
        let runtime = tokio::runtime::Runtime::new().expect("runtime for the test server");
        let server = runtime.block_on(TestServer::start(Kind::Redis, Needs::any()))?;
        Some(Fixture {
            runtime,
            server: Some(server),
        })
    }

    fn server(&self) -> &TestServer {
        self.server
            .as_ref()
            .expect("the server lives as long as the fixture")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(async move { drop(server) });
        }
    }
}

#[test]
fn threads_exclude_each_other_and_drop_releases() {
    let Some(fixture) = Fixture::start() else {
        return;
    };
    let server = fixture.server();
    let locks = Locks::connect(server.url())
        .expect("connect")
        .key_prefix(format!("blocking:{}:", std::process::id()));

    let lock = locks.lock("drop").timeout(Duration::ZERO);
    let guard = lock.acquire().expect("acquire");
    assert!(lock.try_acquire().expect("try").is_none(), "held");
    drop(guard);
    lock.try_acquire()
        .expect("try")
        .expect("released on drop")
        .release()
        .expect("release");

    const THREADS: usize = 4;
    const ROUNDS: u64 = 10;
    let counter = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let lock = locks.lock("threads").timeout(Duration::from_secs(30));
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    lock.run(|| {
                        let seen = counter.load(Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(1));
                        counter.store(seen + 1, Ordering::SeqCst);
                    })
                    .expect("run under the lock");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("thread");
    }
    assert_eq!(counter.load(Ordering::SeqCst), THREADS as u64 * ROUNDS);
}

/// A blocking holder with auto-renewal keeps its lock across several TTLs while its thread
/// works (no call in progress), and another blocking client waiting meanwhile gets the lock
/// only after the release.
#[test]
fn auto_renewal_keeps_a_blocking_holder_across_ttls_while_another_waits() {
    let Some(fixture) = Fixture::start() else {
        return;
    };
    let server = fixture.server();
    let prefix = format!("blocking-renew:{}:", std::process::id());
    let holder_locks = Locks::connect(server.url())
        .expect("connect")
        .key_prefix(&prefix);
    // A second client with its own backend and connections, as another process would have.
    let waiter_locks = Locks::connect(server.url())
        .expect("connect")
        .key_prefix(&prefix);
    let ttl = Duration::from_millis(300);
    let guard = holder_locks
        .lock("renewed")
        .expires(ttl)
        .auto_renew()
        .acquire()
        .expect("acquire");
    // Work for three TTLs without any pylock call on this thread.
    let work = || {
        for _ in 0..3 {
            std::thread::sleep(ttl);
            assert!(
                !guard.is_lost(),
                "lost its lock after {:?}",
                guard.held_for()
            );
        }
    };
    // First no other call is in progress in this process: the renewals alone keep the lock.
    work();
    assert!(
        waiter_locks
            .lock("renewed")
            .try_acquire()
            .expect("try")
            .is_none(),
        "the renewed lock was free to take after {:?}",
        guard.held_for()
    );
    // Then a blocking client waits on another thread, and gets the lock only after the release.
    let releasing = Arc::new(AtomicBool::new(false));
    let waiter = {
        let lock = waiter_locks
            .lock("renewed")
            .timeout(Duration::from_secs(30));
        let releasing = Arc::clone(&releasing);
        std::thread::spawn(move || {
            let guard = lock
                .acquire()
                .expect("the waiter gets the lock after the release");
            assert!(
                releasing.load(Ordering::SeqCst),
                "the waiter got the lock while the renewed holder still had it"
            );
            guard.release().expect("release");
        })
    };
    work();
    releasing.store(true, Ordering::SeqCst);
    guard.release().expect("still ours at release");
    waiter.join().expect("waiter");
}

/// One backend, used first through the blocking API, then at the same time by blocking
/// threads, by async tasks in a multi-thread runtime and by async tasks in a current-thread
/// runtime: nobody waits on an idle runtime (which used to cost the async users a 3 s
/// timeout against a healthy server), and the count under the lock is exact.
#[test]
fn one_backend_serves_blocking_and_async_users_in_two_runtimes() {
    let Some(fixture) = Fixture::start() else {
        return;
    };
    let (runtime, server) = (&fixture.runtime, fixture.server());
    let blocking = Locks::connect(&format!("{}?response_timeout=3s", server.url()))
        .expect("connect")
        .key_prefix(format!("blocking-mixed:{}:", std::process::id()))
        .timeout(Duration::from_secs(30));
    // First use through the blocking API: the connection's tasks start on its runtime.
    blocking
        .lock("warm")
        .acquire()
        .expect("acquire")
        .release()
        .expect("release");
    // Now the blocking side is idle, and async code in another runtime uses the backend.
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    current_thread
        .block_on(blocking.as_async().lock("warm").try_acquire())
        .expect("an async call on a backend first used by blocking code")
        .expect("free")
        .abandon();
    eprintln!(
        "first async call after blocking use: {:?}",
        started.elapsed()
    );

    const ROUNDS: u64 = 20;
    let counter = Arc::new(AtomicU64::new(0));
    let increment = |counter: &AtomicU64| {
        let seen = counter.load(Ordering::SeqCst);
        std::thread::yield_now();
        counter.store(seen + 1, Ordering::SeqCst);
    };
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let lock = blocking.lock("shared");
            let counter = &counter;
            scope.spawn(move || {
                for _ in 0..ROUNDS {
                    lock.run(|| increment(counter)).expect("blocking user");
                }
            });
        }
        let counter = &counter;
        let multi = blocking.as_async().clone();
        let runtime = &runtime;
        scope.spawn(move || {
            runtime.block_on(async move {
                let tasks: Vec<_> = (0..2)
                    .map(|_| async_users(multi.clone(), counter, ROUNDS))
                    .collect();
                futures_util::future::join_all(tasks).await;
            });
        });
        let single = blocking.as_async().clone();
        let current_thread = &current_thread;
        scope.spawn(move || current_thread.block_on(async_users(single, counter, ROUNDS)));
    });
    assert_eq!(counter.load(Ordering::SeqCst), 5 * ROUNDS);
}

/// `rounds` increments of `counter` under the lock `shared`, from async code.
async fn async_users(locks: pylock::Locks, counter: &AtomicU64, rounds: u64) {
    let lock = locks.lock("shared");
    for _ in 0..rounds {
        lock.run(async {
            let seen = counter.load(Ordering::SeqCst);
            tokio::task::yield_now().await;
            counter.store(seen + 1, Ordering::SeqCst);
        })
        .await
        .expect("async user");
    }
}
