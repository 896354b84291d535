//! Redlock (`redlock://`) on real, independent Redis servers (the conformance suite on 3 and 5
//! nodes is in conformance.rs): a minority down, a majority down, and the node-restart rule.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pylock::redis::RedlockBackend;
use pylock::{Error, Locks};
use pylock_tests::{Kind, Needs, TestServer, raw_redis};

/// `count` servers of the test's own (they get stopped and restarted).
async fn nodes(count: usize) -> Option<Vec<TestServer>> {
    let mut nodes = Vec::new();
    for _ in 0..count {
        nodes.push(TestServer::start(Kind::Redis, Needs::control()).await?);
    }
    Some(nodes)
}

/// The `redlock://` URL of `nodes` with `options` (`""` or `"?a=b&..."`). The nodes were
/// started a moment ago, so the default restart guard would keep them from granting anything
/// for a minute: unless the options set it, it is off (the guard has its own tests).
fn url(nodes: &[TestServer], options: &str) -> String {
    let hosts: Vec<String> = nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port()))
        .collect();
    let options = match options {
        _ if options.contains("restart_guard=") => options.to_owned(),
        "" => "?restart_guard=0".to_owned(),
        _ => format!("{options}&restart_guard=0"),
    };
    format!("redlock://{}{options}", hosts.join(","))
}

fn locks(url: &str) -> Locks {
    Locks::new(Arc::new(RedlockBackend::from_url(url).expect("backend")))
}

/// Whether `key` exists on the server of `node`.
async fn exists_on(node: &TestServer, key: &str) -> bool {
    let mut connection = raw_redis(node.url()).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut connection)
        .await
        .expect("EXISTS");
    exists
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_down_still_locks() {
    for (count, down) in [(3, 1), (5, 2)] {
        let Some(mut nodes) = nodes(count).await else {
            return;
        };
        let locks = locks(&url(&nodes, "?connect_timeout=200ms"));
        for node in nodes.iter_mut().take(down) {
            node.stop().await;
        }
        let lock = locks.lock("minority").timeout(Duration::from_secs(5));
        let guard = lock.acquire().await.expect("a majority is up");
        assert!(
            lock.try_acquire().await.expect("try").is_none(),
            "{count} nodes, {down} down: excluded"
        );
        guard.release().await.expect("release");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_majority_down_fails_in_time_and_leaves_no_partial_lock() {
    let Some(mut nodes) = nodes(3).await else {
        return;
    };
    let locks = locks(&url(&nodes, "?connect_timeout=200ms&node_timeout=100ms"));
    let lock = locks.lock("majority");
    let server_key = format!("{}majority", locks.settings().key_prefix);
    for node in nodes.iter_mut().take(2) {
        node.stop().await;
    }
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let result = lock.clone().timeout(timeout).acquire().await;
    let took = started.elapsed();
    match &result {
        Err(error @ Error::Unavailable { .. }) => {
            assert!(error.to_string().contains("of 3 nodes answered"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");
    // The one live node got the key on every attempt, and had it given back each time.
    assert!(
        !exists_on(&nodes[2], &server_key).await,
        "a partial lock was left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_empty_after_the_longest_ttl_lets_no_second_holder_in() {
    let Some(mut nodes) = nodes(3).await else {
        return;
    };
    let options = "?connect_timeout=200ms&node_timeout=100ms";
    let first = locks(&url(&nodes, options));
    let second = locks(&url(&nodes, options));
    let ttl = Duration::from_secs(2);

    // Node C is down: the first holder gets a bare majority, A and B.
    nodes[2].stop().await;
    let holder = first
        .lock("restart")
        .expires(ttl)
        .acquire()
        .await
        .expect("A and B");
    // Node A crashes and loses its copy of the lock.
    nodes[0].stop().await;
    nodes[2].start_again().await;

    // The restart rule: A stays down for longer than the longest TTL. Until then B and C are
    // the only live nodes and B is the holder's, so nobody else can gather a majority.
    let rejoin = Instant::now() + ttl + Duration::from_millis(500);
    while Instant::now() < rejoin {
        let attempt = second.lock("restart").try_acquire().await.expect("try");
        assert!(
            attempt.is_none() || holder.is_lost(),
            "a second holder got in while the first was valid"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        holder.is_lost(),
        "the first holder's validity is over by now"
    );
    nodes[0].start_again().await;
    // Now a second holder is legitimate: the first one's lock has expired everywhere.
    let next = second
        .lock("restart")
        .timeout(Duration::from_secs(5))
        .acquire()
        .await
        .expect("after the first lock expired");
    next.release().await.expect("release");
    holder.abandon();
}

/// A node that answers late (here: paused with `CLIENT PAUSE`) does not hold up an acquire or
/// a release that a majority already answered, and the calls that reach it late still run
/// there in order: its late acquire is undone by the release that followed, leaving no lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_minority_does_not_hold_up_the_majority_nor_keep_a_lock() {
    let Some(nodes) = nodes(3).await else {
        return;
    };
    // Time limits far above the pause: without the early answer the acquire would wait for
    // the paused node.
    let locks = locks(&url(&nodes, "?node_timeout=20s&response_timeout=20s"));
    let lock = locks.lock("slow-minority").timeout(Duration::ZERO);
    lock.acquire()
        .await
        .expect("connect and warm up")
        .release()
        .await
        .expect("warm-up release");

    // Long enough that a loaded CI machine (containers restarting in the other tests) still
    // answers the majority well within half of it: with 8 s, a CI run once took more than 4 s
    // to get the two other nodes' answers, while eleven containers started for this file.
    let pause = Duration::from_secs(16);
    let mut paused = raw_redis(nodes[2].url()).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("ALL")
        .query_async(&mut paused)
        .await
        .expect("CLIENT PAUSE");
    let paused_at = Instant::now();

    let guard = tokio::time::timeout(pause / 2, lock.acquire())
        .await
        .expect("the acquire waited for the paused node")
        .expect("acquired on the two other nodes");
    assert!(exists_on(&nodes[0], guard.server_key()).await);
    assert!(exists_on(&nodes[1], guard.server_key()).await);
    tokio::time::timeout(pause / 2, guard.release())
        .await
        .expect("the release waited for the paused node")
        .expect("released on the two other nodes");
    assert!(
        paused_at.elapsed() < pause,
        "the node was not paused all along; the test proves nothing"
    );

    // The pause ends: the paused node runs the acquire, then the release, in that order.
    tokio::time::sleep(pause.saturating_sub(paused_at.elapsed()) + Duration::from_millis(500))
        .await;
    assert!(
        !exists_on(&nodes[2], "pylock:slow-minority").await,
        "the late acquire on the slow node left a lock behind"
    );
}

/// The restart rule broken on purpose: node A crashes and comes back at once, empty, while
/// the first client holds the lock on A and B. With the guard off, a second client gets a
/// majority (A and C) while the first still holds the lock, as the rule warns. With it, A
/// (and C, also back empty) grant nothing until the guard has passed since they started, and
/// the second client gets the lock only after the first's lock expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restart_guard_keeps_a_second_holder_out_when_a_node_restarts_at_once() {
    let ttl = Duration::from_secs(2);
    for guarded in [false, true] {
        let Some(mut nodes) = nodes(3).await else {
            return;
        };
        let options = if guarded {
            "?connect_timeout=200ms&node_timeout=100ms&restart_guard=2s"
        } else {
            "?connect_timeout=200ms&node_timeout=100ms&restart_guard=0"
        };
        let first = locks(&url(&nodes, options));
        if guarded {
            // The nodes have just started: like a new deployment, they grant nothing until
            // the guard has passed (up to two seconds more: uptime counts whole seconds).
            let started = Instant::now();
            let early = first.lock("warm-up").try_acquire().await.expect("try");
            assert!(
                early.is_none(),
                "nodes that started {:?} ago granted a lock under a 2 s guard",
                started.elapsed()
            );
            first
                .lock("warm-up")
                .timeout(Duration::from_secs(10))
                .acquire()
                .await
                .expect("after the guard")
                .release()
                .await
                .expect("release");
        }

        nodes[2].stop().await;
        let holder = first
            .lock("restart")
            .expires(ttl)
            .timeout(Duration::from_secs(5))
            .acquire()
            .await
            .expect("A and B");
        // A crashes and comes back at once, empty; C comes back, empty too. The second
        // client is new to the nodes: it has seen neither the restart nor the old nodes.
        nodes[0].restart().await;
        nodes[2].start_again().await;
        let second = locks(&url(&nodes, options));

        let mut second_got_in = false;
        while !holder.is_lost() {
            if let Some(guard) = second.lock("restart").try_acquire().await.expect("try") {
                second_got_in = !holder.is_lost();
                guard.abandon();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if guarded {
            assert!(
                !second_got_in,
                "a second holder got in despite the restart guard"
            );
            // After the guard and the first lock's TTL, the lock is free for the second.
            let next = second
                .lock("restart")
                .timeout(Duration::from_secs(10))
                .acquire()
                .await
                .expect("after the guard and the first lock's TTL");
            next.release().await.expect("release");
        } else {
            assert!(
                second_got_in,
                "without the guard, a node restarted at once lets a second holder in"
            );
        }
        holder.abandon();
    }
}
