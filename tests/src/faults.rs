//! The fault tests every backend with a server runs, whatever the server: the same attack,
//! the same promise.

use std::time::{Duration, Instant};

use pylock::{Error, Lock, Locks};

use crate::server::{Kind, Needs, TestServer};

/// A server of `kind` restarted (its memory lost) while a lock is held: the holder's extend
/// and release say [`Error::Lost`], and the same client, no new one, acquires again.
pub async fn a_restart_while_held_is_reported(kind: Kind) {
    let Some(mut server) = TestServer::start(kind, Needs::control()).await else {
        return;
    };
    let locks = Locks::connect(server.url()).expect("url");
    let lock = locks.lock("restart").expires(Duration::from_secs(30));
    let mut guard = lock.acquire().await.expect("acquire");

    server.restart().await;

    // The lock vanished with the server's memory: the guard learns it lost the lock.
    let extended = guard.extend(Duration::from_secs(30)).await;
    assert!(matches!(extended, Err(Error::Lost { .. })), "{extended:?}");
    let released = guard.release().await;
    assert!(matches!(released, Err(Error::Lost { .. })), "{released:?}");

    // The same backend (no new client) acquires again.
    let again = lock
        .clone()
        .timeout(Duration::from_secs(10))
        .acquire()
        .await
        .expect("acquire after the restart");
    again.release().await.expect("release after the restart");
}

/// A server of `kind` stopped: see [`assert_outage_reported_and_survived`], with connect and
/// response timeouts of 500 ms; the error names `backend`.
pub async fn a_dead_server_is_reported_in_time(kind: Kind, backend: &str) {
    let Some(mut server) = TestServer::start(kind, Needs::control()).await else {
        return;
    };
    let url = format!(
        "{}?connect_timeout=500ms&response_timeout=500ms",
        server.url()
    );
    let locks = Locks::connect(&url).expect("url");
    assert_outage_reported_and_survived(
        &mut server,
        &locks.lock("dead"),
        backend,
        Duration::from_millis(500),
    )
    .await;
}

/// Stops `server`, and checks that acquiring `lock` (timeout zero, then 2 s) fails with
/// [`Error::Unavailable`] naming `backend`, by about the timeout plus one connect attempt,
/// never hanging; then starts the server again and checks that the same lock, from the same
/// client, works.
pub async fn assert_outage_reported_and_survived(
    server: &mut TestServer,
    lock: &Lock,
    backend: &str,
    connect_timeout: Duration,
) {
    lock.acquire()
        .await
        .expect("warm up")
        .release()
        .await
        .expect("release");
    server.stop().await;
    for timeout in [Duration::ZERO, Duration::from_secs(2)] {
        let started = Instant::now();
        let result = lock.clone().timeout(timeout).acquire().await;
        let took = started.elapsed();
        match &result {
            Err(error @ Error::Unavailable { .. }) => {
                assert!(error.to_string().contains(backend), "{error}");
            }
            other => panic!("timeout {timeout:?}: {other:?}"),
        }
        // Generous slack for a busy machine; a hang would take far longer.
        assert!(
            took < timeout + connect_timeout * 2 + Duration::from_secs(2),
            "timeout {timeout:?} returned after {took:?}"
        );
    }
    server.start_again().await;
    lock.clone()
        .timeout(Duration::from_secs(10))
        .acquire()
        .await
        .expect("the same client works once the server is back")
        .release()
        .await
        .expect("release");
}

/// `inspect` and `force_release` refuse each of `not_locks` (names under which the caller
/// planted items that are not locks of ours) with [`Error::NotALock`]; a real lock is seen,
/// forced, and gone. The caller then checks that its planted items are still there.
pub async fn operators_tools_refuse_what_is_not_a_lock(locks: &Locks, not_locks: &[&str]) {
    for name in not_locks {
        let lock = locks.lock(*name);
        let seen = lock.inspect().await;
        assert!(
            matches!(seen, Err(Error::NotALock { .. })),
            "{name}: {seen:?}"
        );
        let forced = lock.force_release().await;
        assert!(
            matches!(forced, Err(Error::NotALock { .. })),
            "{name}: {forced:?}"
        );
    }
    let real = locks.lock("real");
    let guard = real.acquire().await.expect("acquire");
    assert!(real.inspect().await.expect("inspect").is_some());
    assert!(real.force_release().await.expect("force"));
    assert!(real.inspect().await.expect("inspect").is_none());
    guard.abandon();
}
