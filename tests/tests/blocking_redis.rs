//! The blocking API (feature `blocking`) on a real Redis: threads without any async runtime
//! of their own exclude each other, and a guard releases on drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pylock::blocking::Locks;
use pylock_tests::{Kind, Needs, TestServer};

#[test]
fn threads_exclude_each_other_and_drop_releases() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime for the test server");
    let Some(server) = runtime.block_on(TestServer::start(Kind::Redis, Needs::any())) else {
        return;
    };
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
    // A container is removed by an async drop, which needs its runtime.
    runtime.block_on(async move { drop(server) });
}
