//! How the Redis backend saves server time, checked against a real server: concurrent calls
//! coalesced into batch scripts still give every lock its own right answer (and a bad key
//! fails alone), and a release publishes a notice only when someone waited for the lock.

use std::sync::Arc;
use std::time::Duration;

use pylock::redis::RedisBackend;
use pylock::{Error, Locks};
use pylock_tests::{Kind, Needs, TestServer, raw_redis};
use redis::AsyncCommands;

/// How many times the server ran `command` (scripts' inner calls included) since the last
/// `CONFIG RESETSTAT`.
async fn calls(raw: &mut redis::aio::MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(raw)
        .await
        .expect("INFO");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

async fn reset_stats(raw: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(raw)
        .await
        .expect("CONFIG RESETSTAT");
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_acquires_are_batched_and_each_lock_gets_its_own_answer() {
    // A server of its own: the test counts the server's script calls.
    let Some(server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let locks = Locks::new(Arc::new(
        RedisBackend::from_url(server.url()).expect("backend"),
    ));
    let mut raw = raw_redis(server.url()).await;
    // One lock name whose key someone else filled with a hash: its commands fail. It comes
    // after the first few locks, which go out alone, so that it lands in a batch.
    const BAD: usize = 20;
    let _: () = raw
        .hset(format!("pylock:batch-{BAD}"), "field", "x")
        .await
        .expect("HSET");
    // Load the scripts, so that the counts below are the calls themselves.
    locks
        .lock("warm-up")
        .acquire()
        .await
        .expect("warm-up")
        .release()
        .await
        .expect("warm-up release");
    reset_stats(&mut raw).await;

    const LOCKS: usize = 40;
    let attempts = (0..LOCKS).map(|i| {
        let lock = locks.lock(format!("batch-{i}")).timeout(Duration::ZERO);
        async move { lock.acquire().await }
    });
    let results = futures_util::future::join_all(attempts).await;
    let scripts = calls(&mut raw, "evalsha").await;

    let mut guards = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        if i == BAD {
            let error = result.expect_err("a key of another type cannot be locked");
            assert!(matches!(error, Error::Backend { .. }), "{error:?}");
            assert!(format!("{error:?}").contains("WRONGTYPE"), "{error:?}");
        } else {
            let guard = result.unwrap_or_else(|e| panic!("lock {i}: {e:?}"));
            // A fresh lock name: its fence is the server's clock in microseconds.
            assert!(
                guard
                    .fence()
                    .is_some_and(|fence| fence > 1_000_000_000_000_000),
                "lock {i}: {:?}",
                guard.fence()
            );
            guards.push(guard);
        }
    }
    // The batch holding the bad key was answered lock by lock, the others in batches: far
    // fewer script calls than locks.
    assert!(
        scripts < LOCKS as u64,
        "{scripts} script calls for {LOCKS} acquires: nothing was batched"
    );

    let releases = guards.into_iter().map(|guard| guard.release());
    for (i, released) in futures_util::future::join_all(releases)
        .await
        .into_iter()
        .enumerate()
    {
        released.unwrap_or_else(|e| panic!("release {i}: {e}"));
    }
    for i in (0..LOCKS).filter(|i| *i != BAD) {
        let exists: bool = raw
            .exists(format!("pylock:batch-{i}"))
            .await
            .expect("EXISTS");
        assert!(!exists, "lock {i} was not released");
    }
    let untouched: String = raw
        .hget(format!("pylock:batch-{BAD}"), "field")
        .await
        .expect("HGET");
    assert_eq!(untouched, "x", "the other client's hash was changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_publishes_only_when_someone_waited() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let locks = Locks::new(Arc::new(
        RedisBackend::from_url(server.url()).expect("backend"),
    ));
    let mut raw = raw_redis(server.url()).await;
    reset_stats(&mut raw).await;

    for i in 0..20 {
        let guard = locks
            .lock(format!("alone-{i}"))
            .acquire()
            .await
            .expect("acquire");
        guard.release().await.expect("release");
    }
    assert_eq!(
        calls(&mut raw, "publish").await,
        0,
        "releases nobody waited for were announced"
    );

    let lock = locks.lock("waited").timeout(Duration::from_secs(10));
    let mut guard = lock.acquire().await.expect("acquire");
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire().await }
    });
    // The waiter's failed attempt marks the lock; the holder's token stays recognisable.
    let mut marked = String::new();
    for _ in 0..200 {
        marked = raw.get("pylock:waited").await.expect("GET");
        if marked.ends_with('+') {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        marked.ends_with('+'),
        "the waiter did not mark the lock: {marked:?}"
    );
    assert!(
        guard.extend(Duration::from_secs(10)).await.is_ok(),
        "a marked lock must still be its holder's to extend"
    );
    guard.release().await.expect("release of a marked lock");
    let next = waiter
        .await
        .expect("waiter task")
        .expect("the waiter gets the lock");
    assert_eq!(
        calls(&mut raw, "publish").await,
        1,
        "the release of a waited-for lock must be announced once"
    );
    next.release().await.expect("release");
}

/// While the server is down, a burst of acquires, queued and batched, each fails with a
/// transient error within the call limit (none hangs); once the server is back, the same
/// backend serves the burst again.
#[tokio::test(flavor = "current_thread")]
async fn a_batched_burst_fails_cleanly_while_the_server_is_down_and_recovers() {
    let Some(mut server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let url = format!(
        "{}?connect_timeout=200ms&response_timeout=500ms",
        server.url()
    );
    let locks = Locks::new(Arc::new(RedisBackend::from_url(&url).expect("backend")));
    let burst = |round: &'static str| {
        let attempts = (0..40).map(|i| {
            let lock = locks.lock(format!("{round}-{i}")).timeout(Duration::ZERO);
            async move { lock.acquire().await }
        });
        futures_util::future::join_all(attempts)
    };
    // Connect and load the scripts first.
    for guard in burst("warm-up").await {
        guard.expect("warm-up").release().await.expect("release");
    }

    server.stop().await;
    let outcome = tokio::time::timeout(Duration::from_secs(10), burst("down"))
        .await
        .expect("a queued call hung while the server was down");
    for (i, result) in outcome.into_iter().enumerate() {
        let error = result.expect_err("no server, no lock");
        assert!(error.is_transient(), "call {i}: {error:?}");
    }

    server.start_again().await;
    let mut recovered = Vec::new();
    for _ in 0..50 {
        recovered = burst("up").await;
        if recovered.iter().all(Result::is_ok) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, result) in recovered.into_iter().enumerate() {
        let guard = result.unwrap_or_else(|e| panic!("call {i} after the restart: {e:?}"));
        guard.release().await.expect("release after the restart");
    }
}
