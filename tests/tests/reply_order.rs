//! A reply is taken only by the request it answers. Through a fault proxy that loses a
//! request (the server never sees it) while the connection stays up, every later reply on that
//! connection would answer the request before it; a client that matched them up in order would
//! hand one acquire another's success: two holders. (Before each request carried a tag that
//! its reply echoes, Redis failed this in four runs out of five, memcached now and then; etcd
//! matches replies by HTTP/2 stream, and passed.)
//!
//! Redis reports the shift as an error (the connection is replaced); memcached's backend
//! retries the call on a new connection, so its callers usually see the right answer.

use std::time::Duration;

use pylock::Locks;
use pylock_tests::{Fault, FaultProxy, Kind, Needs, TestServer};

async fn a_lost_request_never_shifts_replies(kind: Kind, scheme: &str) {
    let Some(server) = TestServer::start(kind, Needs::any()).await else {
        return;
    };
    let proxy = FaultProxy::start(server.port()).await;
    let url = format!(
        "{scheme}://127.0.0.1:{}?connect_timeout=300ms&response_timeout=300ms",
        proxy.port()
    );
    let victim = Locks::connect(&url).expect("connect");
    let other = Locks::connect(server.url()).expect("connect");
    let held = other
        .lock("reply-order-taken")
        .expires(Duration::from_secs(60))
        .acquire()
        .await
        .expect("the other client holds it");

    for round in 0..12 {
        // A request the server never sees: the proxy drops it, and the connection stays.
        proxy.set(Fault::Silent);
        let lost = victim
            .lock(format!("reply-order-lost-{round}"))
            .timeout(Duration::ZERO)
            .acquire()
            .await;
        assert!(
            lost.is_err(),
            "round {round}: nothing answered, yet {lost:?}"
        );
        proxy.set(Fault::Pass);

        // Two requests in flight: one for the lock the other client holds, then one for a
        // free lock, whose answer is a success.
        let taken = victim
            .lock("reply-order-taken")
            .timeout(Duration::ZERO)
            .expires(Duration::from_secs(30));
        let free = victim
            .lock(format!("reply-order-free-{round}"))
            .timeout(Duration::ZERO)
            .expires(Duration::from_secs(30));
        let (taken, free) = tokio::join!(taken.acquire(), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            free.acquire().await
        });
        if let Ok(guard) = taken {
            guard.abandon();
            panic!(
                "round {round}: the victim was told it holds a lock the other client holds \
                 (free lock: {free:?})"
            );
        }
        eprintln!("round {round}: taken {taken:?}; free {free:?}");
        if let Ok(guard) = free {
            guard.release().await.ok();
        }
    }
    held.release()
        .await
        .expect("the other client's lock is still its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replies_never_shift() {
    a_lost_request_never_shifts_replies(Kind::Redis, "redis").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memcached_replies_never_shift() {
    a_lost_request_never_shifts_replies(Kind::Memcached, "memcache").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_replies_never_shift() {
    a_lost_request_never_shifts_replies(Kind::Etcd, "etcd").await;
}
