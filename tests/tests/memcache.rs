//! The memcache backend against real memcached (its conformance suite is in conformance.rs):
//! owner-checked release and extend read back from the server, command injection, restarts,
//! a dead server, and a pool of servers.

use std::sync::Arc;
use std::time::Duration;

use pylock::memcache::{MemcacheBackend, keys};
use pylock::{Error, Locks};
use pylock_tests::faults;
use pylock_tests::{Kind, Needs, Provider, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn locks(url: &str) -> Locks {
    Locks::new(Arc::new(MemcacheBackend::from_url(url).expect("backend")))
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// One raw text-protocol exchange with the server at `port`: sends `request`, returns the
/// first response line (and a data line for `VA`).
async fn raw(port: u16, request: &str) -> String {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("raw connect");
    let (reader, mut writer) = stream.into_split();
    writer.write_all(request.as_bytes()).await.expect("write");
    let mut reader = BufReader::new(reader);
    let mut line = String::new();
    reader.read_line(&mut line).await.expect("read");
    if line.starts_with("VA") {
        let mut data = String::new();
        reader.read_line(&mut data).await.expect("read data");
        line.push_str(&data);
    }
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_holders_release_and_extend_leave_the_new_lock_intact() {
    let Some(server) = TestServer::start(Kind::Memcached, Needs::any()).await else {
        return;
    };
    let locks = locks(server.url()).key_prefix(format!("late:{}:", std::process::id()));
    let lock = locks.lock("k");
    let mut a = lock
        .clone()
        .expires(Duration::from_millis(500))
        .acquire()
        .await
        .expect("A");
    let b = lock
        .clone()
        .expires(Duration::from_secs(60))
        .timeout(Duration::from_secs(10))
        .acquire()
        .await
        .expect("B, once A's lock expired");
    let key = keys::encode(b.server_key());
    let port = port_of(server.url());
    let before = raw(port, &format!("mg {key} v c t\r\n")).await;

    assert!(matches!(
        a.extend(Duration::from_secs(3600)).await,
        Err(Error::Lost { .. })
    ));
    assert!(matches!(a.release().await, Err(Error::Lost { .. })));

    // Same value, same CAS id (nothing was written), and no hour-long TTL.
    let after = raw(port, &format!("mg {key} v c t\r\n")).await;
    let ttl = |line: &str| -> i64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix('t'))
            .and_then(|t| t.parse().ok())
            .expect("ttl flag")
    };
    assert_eq!(
        before.replace(&format!("t{}", ttl(&before)), ""),
        after.replace(&format!("t{}", ttl(&after)), ""),
        "B's item was changed"
    );
    assert!(ttl(&after) <= 61, "A extended B's lock: {after}");
    b.release().await.expect("B still holds its lock");
    assert_eq!(raw(port, &format!("mg {key} v\r\n")).await, "EN\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_name_cannot_inject_a_command() {
    let Some(server) = TestServer::start(Kind::Memcached, Needs::control()).await else {
        return;
    };
    let port = port_of(server.url());
    assert_eq!(raw(port, "ms canary 3 T0\r\nyes\r\n").await, "HD\r\n");

    let locks = locks(server.url());
    for name in [
        "k\r\nflush_all",
        "k flush_all",
        "k\r\nmd canary",
        &"x".repeat(400),
    ] {
        let guard = locks.lock(name).acquire().await.expect("acquire");
        let stored = raw(
            port,
            &format!("mg {} v\r\n", keys::encode(guard.server_key())),
        )
        .await;
        assert!(stored.starts_with("VA 32"), "{name:?}: {stored:?}");
        guard.release().await.expect("release");
    }
    assert_eq!(raw(port, "mg canary v\r\n").await, "VA 3\r\nyes\r\n");
    assert_eq!(raw(port, "mg flush_all v\r\n").await, "EN\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_held_is_reported_and_new_acquires_work() {
    faults::a_restart_while_held_is_reported(Kind::Memcached).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_a_clear_error_within_the_timeout() {
    faults::a_dead_server_is_reported_in_time(Kind::Memcached, "memcache").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_puts_each_key_on_one_server() {
    let (Some(one), Some(two)) = (
        TestServer::start(Kind::Memcached, Needs::control()).await,
        TestServer::start(Kind::Memcached, Needs::control()).await,
    ) else {
        return;
    };
    let url = format!(
        "memcache://127.0.0.1:{},127.0.0.1:{}",
        one.port(),
        two.port()
    );
    let locks = locks(&url);
    let mut on_each = [0, 0];
    for i in 0..40 {
        let guard = locks
            .lock(format!("pooled-{i}"))
            .acquire()
            .await
            .expect("acquire");
        let key = keys::encode(guard.server_key());
        let mut found = Vec::new();
        for port in [one.port(), two.port()] {
            found.push(
                raw(port, &format!("mg {key} v\r\n"))
                    .await
                    .starts_with("VA"),
            );
        }
        assert_eq!(found.iter().filter(|f| **f).count(), 1, "{found:?}");
        on_each[usize::from(found[1])] += 1;
        guard.release().await.expect("release");
    }
    assert!(on_each[0] > 0 && on_each[1] > 0, "{on_each:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_not_memcached_is_a_clear_error_at_once() {
    let Some(redis) = TestServer::start(Kind::Redis, Needs::any()).await else {
        return;
    };
    if redis.port() == 0 {
        return; // an external server: its port is not known here
    }
    let locks = Locks::connect(&format!("memcache://127.0.0.1:{}", redis.port())).expect("url");
    let started = std::time::Instant::now();
    let result = locks
        .lock("wrong-server")
        .timeout(Duration::from_secs(20))
        .acquire()
        .await;
    match result {
        Err(error @ Error::Backend { .. }) => {
            assert!(
                error.to_string().contains("not memcached's protocol"),
                "{error}"
            );
        }
        other => panic!("expected a protocol error, got {other:?}"),
    }
    // Not retried as an outage until the timeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_tools_touch_only_locks() {
    let Some(server) = TestServer::start(Kind::Memcached, Needs::any()).await else {
        return;
    };
    let prefix = format!("ops:{}:", std::process::id());
    let locks = locks(server.url()).key_prefix(prefix.clone());
    let port = port_of(server.url());
    // Items that are not locks of ours: another value, no TTL.
    let text_key = keys::encode(&format!("{prefix}text"));
    let forever_key = keys::encode(&format!("{prefix}forever"));
    assert_eq!(
        raw(port, &format!("ms {text_key} 5 T60\r\nhello\r\n"))
            .await
            .trim(),
        "HD"
    );
    let token_like = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        raw(port, &format!("ms {forever_key} 32\r\n{token_like}\r\n"))
            .await
            .trim(),
        "HD"
    );
    faults::operators_tools_refuse_what_is_not_a_lock(&locks, &["text", "forever"]).await;
    for key in [&text_key, &forever_key] {
        let item = raw(port, &format!("mg {key} v\r\n")).await;
        assert!(item.starts_with("VA"), "{key} was left alone: {item}");
    }
}

/// Fills the server at `port` with `count` items the size of the lock's item (same key
/// length, same value length), so that memcached's LRU must make room in the lock's slab
/// class. Returns how many stores the server refused (out of memory, with `-M`).
async fn fill_like(port: u16, lock_key: &str, count: usize) -> usize {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (reader, mut writer) = stream.into_split();
    let width = lock_key.len();
    let writing = tokio::spawn(async move {
        let mut batch = String::new();
        for i in 0..count {
            let key = format!("{i:0width$}");
            batch.push_str(&format!("ms {key} 32 T0 q\r\n{}\r\n", "y".repeat(32)));
            if batch.len() > 64 * 1024 {
                writer.write_all(batch.as_bytes()).await.expect("fill");
                batch.clear();
            }
        }
        batch.push_str("mn\r\n");
        writer.write_all(batch.as_bytes()).await.expect("fill");
        writer
    });
    let mut lines = BufReader::new(reader).lines();
    let mut refused = 0;
    while let Some(line) = lines.next_line().await.expect("read") {
        if line == "MN" {
            break;
        }
        if line.starts_with("SERVER_ERROR") {
            refused += 1;
        }
    }
    drop(writing.await.expect("writer"));
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_can_take_a_held_lock_unless_memcached_runs_with_minus_m() {
    // The deployment rule in the README: memcached's LRU may drop a held lock when memory
    // runs out; with -M it refuses new items instead, and locks stay: a contender's failed
    // add and the holder's failed extend leave the lock in place (memcached's `ms` would
    // unlink it; see the protocol module).
    for (args, evicts) in [(&["-m", "2"][..], true), (&["-m", "2", "-M"][..], false)] {
        let Some(server) =
            TestServer::start(Kind::Memcached, Needs::args(args).from(Provider::Binary)).await
        else {
            return;
        };
        let (first, second) = (locks(server.url()), locks(server.url()));
        let lock = first.lock("evicted").expires(Duration::from_secs(60));
        let mut guard = lock.acquire().await.expect("acquire");
        let key = keys::encode(guard.server_key());
        let refused = fill_like(port_of(server.url()), &key, 120_000).await;

        let other = second
            .lock("evicted")
            .timeout(Duration::ZERO)
            .acquire()
            .await;
        if evicts {
            // The lock was evicted: a second client gets it, and the first learns at release.
            let taken = other.unwrap_or_else(|e| panic!("the evicted lock is free again: {e:?}"));
            let released = guard.release().await;
            assert!(matches!(released, Err(Error::Lost { .. })), "{released:?}");
            taken.release().await.expect("release");
        } else {
            assert!(refused > 0, "-M refuses stores when memory is full");
            assert!(
                matches!(other, Err(Error::Unavailable { .. })),
                "with -M a full server refuses the contender: {other:?}"
            );
            let extended = guard.extend(Duration::from_secs(60)).await;
            assert!(
                matches!(extended, Ok(()) | Err(Error::Unavailable { .. })),
                "{extended:?}"
            );
            guard.release().await.expect("the lock stayed ours");
        }
    }
}
