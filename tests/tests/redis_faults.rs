//! Faults against a real Redis: restarts, a paused holder, a dead server, scripts flushed,
//! keys evicted. Each test asserts the outcome a user must be able to rely on.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pylock::redis::RedisBackend;
use pylock::{Backoff, Error, LockBackend, Locks, Settings};
use pylock_tests::faults;
use pylock_tests::{Kind, Needs, TestServer, raw_redis};
use redis::AsyncCommands;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

fn locks(url: &str) -> Locks {
    Locks::new(Arc::new(RedisBackend::from_url(url).expect("backend")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_held_is_reported_and_the_backend_keeps_working() {
    faults::a_restart_while_held_is_reported(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_after_the_server_restarts() {
    let Some(mut server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let slow_polls = locks(server.url()).with_settings({
        let mut settings = Settings::default();
        settings.retry = Backoff::new(Duration::from_secs(30), Duration::from_secs(30));
        settings
    });
    let lock = slow_polls
        .lock("restart-wake")
        .timeout(Duration::from_secs(25));
    let holder = lock
        .clone()
        .expires(Duration::from_secs(60))
        .acquire()
        .await
        .expect("holder");
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The restart drops the holder's lock without any release notice; the subscriber
    // connection comes back and wakes the waiter, which polls only every 30 s.
    let restarted = Instant::now();
    server.restart().await;
    let guard = waiter
        .await
        .expect("task")
        .expect("the waiter got the lock");
    assert!(
        restarted.elapsed() < Duration::from_secs(15),
        "the waiter took {:?}",
        restarted.elapsed()
    );
    guard.release().await.expect("release");
    holder.abandon();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_fails_acquire_in_time_and_recovery_needs_no_new_backend() {
    faults::a_dead_server_is_reported_in_time(Kind::Redis, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_and_foreign_releases_leave_the_new_holders_lock_in_place() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::any()).await else {
        return;
    };
    let locks = locks(server.url()).key_prefix(format!("faults:{}:", std::process::id()));
    let lock = locks.lock("late");
    let server_key = format!("{}late", locks.settings().key_prefix);
    let mut raw = raw_redis(server.url()).await;

    let mut a = lock
        .clone()
        .expires(Duration::from_millis(200))
        .acquire()
        .await
        .expect("A");
    let b = lock
        .clone()
        .expires(Duration::from_secs(30))
        .timeout(Duration::from_secs(5))
        .acquire()
        .await
        .expect("B, after A's lock expired");
    let before: String = raw.get(&server_key).await.expect("GET");
    let ttl_before: i64 = raw.pttl(&server_key).await.expect("PTTL");

    assert!(matches!(
        a.extend(Duration::from_secs(3600)).await,
        Err(Error::Lost { .. })
    ));
    assert!(matches!(a.release().await, Err(Error::Lost { .. })));

    // A stranger's token cannot release or extend it either.
    let backend = RedisBackend::from_url(server.url()).expect("backend");
    let stranger = pylock::raw::Token::generate().expect("token");
    assert!(
        !backend
            .release(&server_key, &stranger)
            .await
            .expect("release")
    );
    assert!(
        !backend
            .extend(&server_key, &stranger, Duration::from_secs(3600))
            .await
            .expect("extend")
    );

    let after: String = raw.get(&server_key).await.expect("GET");
    let ttl_after: i64 = raw.pttl(&server_key).await.expect("PTTL");
    assert_eq!(before, after, "B's token was replaced");
    assert!(
        ttl_after <= ttl_before && ttl_after > 0,
        "B's TTL went from {ttl_before} to {ttl_after} ms"
    );
    b.release().await.expect("B releases its own lock");
    let gone: Option<String> = raw.get(&server_key).await.expect("GET");
    assert_eq!(gone, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_scripts_are_loaded_again() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let locks = locks(server.url());
    let lock = locks.lock("noscript");
    let mut guard = lock.acquire().await.expect("acquire");
    let mut raw = raw_redis(server.url()).await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .expect("SCRIPT FLUSH");
    guard
        .extend(Duration::from_secs(20))
        .await
        .expect("extend after the flush");
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .expect("SCRIPT FLUSH");
    guard.release().await.expect("release after the flush");
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut raw)
        .await
        .expect("SCRIPT FLUSH");
    lock.acquire()
        .await
        .expect("acquire after the flush")
        .release()
        .await
        .expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_keep_increasing_when_the_lock_key_is_evicted() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::any()).await else {
        return;
    };
    let locks = locks(server.url()).key_prefix(format!("evict:{}:", std::process::id()));
    let lock = locks.lock("k");
    let first = lock.acquire().await.expect("acquire");
    let fence = first.fence().expect("fence");
    // The server drops the lock key (eviction, a FLUSH of that key, an operator's DEL).
    let mut raw = raw_redis(server.url()).await;
    let _: i64 = raw.del(first.server_key()).await.expect("DEL");
    first.abandon();
    let second = lock.acquire().await.expect("acquire after eviction");
    assert!(second.fence().expect("fence") > fence);
    second.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_subscriptions_end_when_nobody_waits() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let locks = locks(server.url());
    let lock = locks.lock("subs");
    let holder = lock.acquire().await.expect("holder");
    let waiter = tokio::spawn({
        let lock = lock.clone();
        async move { lock.acquire().await.expect("waiter").release().await }
    });
    let mut raw = raw_redis(server.url()).await;
    let channels = |raw: &mut redis::aio::MultiplexedConnection| {
        let mut raw = raw.clone();
        async move {
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("CHANNELS")
                .query_async(&mut raw)
                .await
                .expect("PUBSUB CHANNELS");
            channels
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while channels(&mut raw).await.is_empty() {
        assert!(Instant::now() < deadline, "the waiter never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.release().await.expect("release");
    waiter.await.expect("task").expect("waiter release");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = channels(&mut raw).await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still subscribed to {left:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A holder in a child process, driven through its stdin and stdout.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Holder {
    async fn start(url: &str, key: &str, expires: Duration) -> (Holder, u64) {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pylock-test-holder"))
            .args([url, key, &expires.as_millis().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the holder");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut holder = Holder {
            child,
            stdin,
            stdout,
        };
        let line = holder.line().await;
        let fence = line
            .strip_prefix("ACQUIRED ")
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("holder said {line:?}"));
        (holder, fence)
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("the holder answers")
            .expect("read")
            .expect("a line")
    }

    async fn ask(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .expect("write");
        self.line().await
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("pid").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_loses_its_lock_to_a_higher_fence_and_changes_nothing() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::any()).await else {
        return;
    };
    let key = format!("paused-{}", std::process::id());
    let ttl = Duration::from_millis(800);
    let (mut holder, old_fence) = Holder::start(server.url(), &key, ttl).await;

    // The holder stalls (GC pause, swapped out, VM migration) for longer than its TTL.
    holder.signal("-STOP");
    let locks = locks(server.url());
    let lock = locks.lock(key.as_str()).timeout(Duration::from_secs(10));
    let guard = lock.acquire().await.expect("taken over after the TTL");
    assert!(
        guard.fence().expect("fence") > old_fence,
        "the new holder's fence must be higher"
    );
    let mut raw = raw_redis(server.url()).await;
    let value_before: String = raw.get(guard.server_key()).await.expect("GET");
    let ttl_before: i64 = raw.pttl(guard.server_key()).await.expect("PTTL");

    // The old holder wakes up: its extend and release find the lock lost.
    holder.signal("-CONT");
    assert_eq!(holder.ask("extend 60000").await, "EXTEND lost");
    assert_eq!(holder.ask("release").await, "RELEASE lost");

    let value_after: String = raw.get(guard.server_key()).await.expect("GET");
    let ttl_after: i64 = raw.pttl(guard.server_key()).await.expect("PTTL");
    assert_eq!(
        value_before, value_after,
        "the new holder's token was touched"
    );
    assert!(
        ttl_after <= ttl_before,
        "the old holder extended the new lock"
    );
    guard
        .release()
        .await
        .expect("the new holder still holds it");
}

/// Acquires and releases `lock` once; its fence.
async fn fence_of(lock: &pylock::Lock) -> u64 {
    let guard = lock.acquire().await.expect("acquire");
    let fence = guard.fence().expect("fence");
    guard.release().await.expect("release");
    fence
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_tokens_keep_increasing_across_restarts_flushes_and_a_lost_counter() {
    let Some(mut server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let locks = locks(server.url());
    let lock = locks
        .lock("fenced")
        .expires(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    let mut last = 0;
    let mut next = |fence: u64, after: &str| {
        assert!(fence > last, "fence {fence} after {last}, after {after}");
        last = fence;
    };
    for _ in 0..20 {
        next(fence_of(&lock).await, "a release");
    }

    // The counter's key is not kept forever: it lives as long as the lock.
    let guard = lock.acquire().await.expect("acquire");
    next(guard.fence().expect("fence"), "a release");
    let mut raw = raw_redis(server.url()).await;
    let counter = pylock::redis::keys::fence_key(guard.server_key());
    let ttl: i64 = raw.pttl(&counter).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 5000, "the counter's TTL is {ttl} ms");
    guard.release().await.expect("release");

    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut raw)
        .await
        .expect("FLUSHALL");
    next(fence_of(&lock).await, "FLUSHALL");

    let _: i64 = raw.del(&counter).await.expect("DEL");
    next(fence_of(&lock).await, "the counter's loss");

    // A restart without persistence: the server comes back empty.
    server.restart().await;
    next(fence_of(&lock).await, "a restart");
    next(fence_of(&lock).await, "a release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_tools_touch_only_locks_and_names_cannot_reach_internal_keys() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::any()).await else {
        return;
    };
    let prefix = format!("ops:{}:", std::process::id());
    let locks = locks(server.url()).key_prefix(prefix.clone());
    let mut raw = raw_redis(server.url()).await;

    // Keys that are not locks of ours: another type, another value, no TTL.
    let _: i64 = raw
        .rpush(format!("{prefix}list"), "x")
        .await
        .expect("RPUSH");
    let _: () = raw
        .set(format!("{prefix}text"), "hello")
        .await
        .expect("SET");
    let token_like = "0123456789abcdef0123456789abcdef";
    let _: () = raw
        .set(format!("{prefix}forever"), token_like)
        .await
        .expect("SET");
    faults::operators_tools_refuse_what_is_not_a_lock(&locks, &["list", "text", "forever"]).await;
    for name in ["list", "text", "forever"] {
        let exists: i64 = raw.exists(format!("{prefix}{name}")).await.expect("EXISTS");
        assert_eq!(exists, 1, "{name} was left alone");
    }

    // With an empty prefix, no lock name addresses another lock's fencing counter.
    let bare = locks.clone().key_prefix("");
    let held = bare.lock("a").acquire().await.expect("acquire a");
    let counter = pylock::redis::keys::fence_key("a");
    for attempt in [
        bare.lock(counter.as_str())
            .timeout(Duration::ZERO)
            .acquire()
            .await
            .map(drop),
        bare.lock(counter.as_str()).force_release().await.map(drop),
        bare.lock(counter.as_str()).inspect().await.map(drop),
    ] {
        assert!(
            matches!(attempt, Err(Error::InvalidKey { .. })),
            "{attempt:?}"
        );
    }
    held.release().await.expect("release a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_on_one_server_with_a_replica() {
    let Some(primary) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let port = primary.port().to_string();
    let Some(_replica) = TestServer::start(
        Kind::Redis,
        Needs::args(&["--replicaof", "127.0.0.1", &port]),
    )
    .await
    else {
        return;
    };
    let url = format!("{}?wait_replicas=1&wait_timeout=2s", primary.url());
    let locks = locks(&url);
    // The replica needs a moment to sync; the wait loop retries until then.
    let mut guard = locks
        .lock("replicated")
        .timeout(Duration::from_secs(20))
        .acquire()
        .await
        .expect("acquire, acknowledged by the replica");
    guard
        .extend(Duration::from_secs(10))
        .await
        .expect("extend, acknowledged by the replica");
    guard.release().await.expect("release");
}
