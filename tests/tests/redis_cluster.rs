//! pylock on a real Redis Cluster (`redis+cluster://`; its conformance run is in
//! conformance.rs): locks spread over every master, replica acknowledgement with
//! `wait_replicas`, and a master killed and replaced by its replica.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pylock::redis::RedisBackend;
use pylock::{Error, Locks};
use pylock_tests::TestCluster;
use pylock_tests::cluster::cli;

fn locks(url: &str) -> Locks {
    Locks::new(Arc::new(RedisBackend::from_url(url).expect("backend")))
}

async fn cluster(masters: usize, replicas: usize) -> Option<TestCluster> {
    tokio::task::spawn_blocking(move || TestCluster::start(masters, replicas))
        .await
        .expect("cluster fixture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_spread_over_every_master_with_their_counters_beside_them() {
    let Some(cluster) = cluster(3, 0).await else {
        return;
    };
    let locks = locks(&cluster.url());
    let mut masters = BTreeSet::new();
    for i in 0..30 {
        let guard = locks
            .lock(format!("spread-{i}"))
            .acquire()
            .await
            .expect("acquire");
        let master = cluster.master_of(guard.server_key());
        // The fencing counter lives on the same master (same hash slot).
        let counter = pylock::redis::keys::fence_key(guard.server_key());
        assert_eq!(cli(master, &["exists", &counter]).trim(), "1", "{counter}");
        masters.insert(master);
        guard.release().await.expect("release");
    }
    assert_eq!(masters.len(), 3, "locks on {masters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_refuses_an_unreplicated_lock_and_leaves_nothing_behind() {
    let Some(cluster) = cluster(3, 0).await else {
        return;
    };
    let url = format!("{}?wait_replicas=1&wait_timeout=100ms", cluster.url());
    let lock = locks(&url).lock("unreplicated").timeout(Duration::ZERO);
    match lock.acquire().await {
        Err(error @ Error::Unavailable { .. }) => {
            assert!(
                error.to_string().contains("replicas acknowledged"),
                "{error}"
            );
        }
        other => panic!("a lock no replica has must not be granted: {other:?}"),
    }
    let plain = locks(&cluster.url()).lock("unreplicated");
    assert_eq!(
        plain.inspect().await.expect("inspect"),
        None,
        "a lock was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_acknowledged_locks_survive() {
    let Some(mut cluster) = cluster(3, 1).await else {
        return;
    };
    let url = format!(
        "{}?wait_replicas=1&wait_timeout=500ms&connect_timeout=300ms&response_timeout=500ms",
        cluster.url()
    );
    let locks = locks(&url);
    let held = locks
        .lock("failover")
        .expires(Duration::from_secs(60))
        .acquire()
        .await
        .expect("acquire, acknowledged by a replica");
    let fence = held.fence().expect("fence");
    let master = cluster.master_of(held.server_key());
    let masters = cluster.masters().len();

    cluster.kill(master);
    let started = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_for_failover(master, masters);
        // The old master comes back as a replica of its successor: every shard has a
        // replica again, so `wait_replicas=1` can be met.
        cluster.restart(master);
        cluster.wait_until_healthy();
        cluster
    })
    .await
    .expect("wait for the failover");
    let healed_after = started.elapsed();

    // Once healed, acquires work again on every key, without a new client.
    for i in 0..10 {
        locks
            .lock(format!("after-failover-{i}"))
            .timeout(Duration::from_secs(20))
            .acquire()
            .await
            .expect("acquire after the failover")
            .release()
            .await
            .expect("release after the failover");
    }
    // The acknowledged lock survived on the promoted replica: nobody else gets it, its
    // fence still stands, and its holder can still release it.
    let other = locks.lock("failover").try_acquire().await.expect("try");
    assert!(other.is_none(), "the failover lost an acknowledged lock");
    let seen = locks.lock("failover").inspect().await.expect("inspect");
    assert_eq!(seen.and_then(|h| h.fence), Some(fence));
    held.release()
        .await
        .expect("the holder releases after the failover");
    eprintln!("the cluster healed {healed_after:?} after the master was killed");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_keep_increasing_when_a_master_restarts_empty() {
    let Some(mut cluster) = cluster(3, 0).await else {
        return;
    };
    let locks = locks(&cluster.url());
    let lock = locks
        .lock("fenced-on-a-cluster")
        .timeout(Duration::from_secs(30));
    let guard = lock.acquire().await.expect("acquire");
    let before = guard.fence().expect("fence");
    let master = cluster.master_of(guard.server_key());
    guard.release().await.expect("release");

    // Killed and started again at once, without persistence: the master comes back empty,
    // its counters gone, and still master of its slots.
    tokio::task::block_in_place(|| {
        cluster.restart(master);
        cluster.wait_until_healthy();
    });
    let guard = lock.acquire().await.expect("acquire after the restart");
    let after = guard.fence().expect("fence");
    assert!(after > before, "fence {after} after {before}");
    guard.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_notice_node_does_not_stretch_an_acquire_past_its_timeout() {
    let Some(cluster) = cluster(3, 0).await else {
        return;
    };
    let notice_node = cluster.first_seed();
    let holder = locks(&cluster.url());
    // A lock whose master is not the node the notices come from.
    let mut held = None;
    for i in 0..100 {
        let guard = holder
            .lock(format!("held-{i}"))
            .expires(Duration::from_secs(30))
            .acquire()
            .await
            .expect("acquire");
        if cluster.master_of(guard.server_key()) != notice_node {
            held = Some((format!("held-{i}"), guard));
            break;
        }
        guard.release().await.expect("release");
    }
    let (name, guard) = held.expect("a key on another master");

    let waiter = locks(&cluster.url());
    // The waiter's cluster connection is up before the pause; its notice connection is not.
    let _ = waiter.lock("warm-up").try_acquire().await;
    cluster.pause(notice_node);
    let timeout = Duration::from_millis(300);
    let attempts = (0..3).map(|_| {
        let lock = waiter.lock(name.as_str()).timeout(timeout);
        async move {
            let started = Instant::now();
            let result = lock.acquire().await;
            (result.map(drop), started.elapsed())
        }
    });
    let results = futures_util::future::join_all(attempts).await;
    cluster.resume(notice_node);
    for (result, took) in results {
        assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
        // One second of slack for this shared machine; the bug took seconds per waiter.
        assert!(
            took <= timeout + pylock::FINAL_ATTEMPT_GRACE + Duration::from_secs(1),
            "a {timeout:?} acquire took {took:?}"
        );
        eprintln!("a {timeout:?} acquire with the notice node paused took {took:?}");
    }

    // Once the node is back, a waiter hears the release.
    let next = waiter.lock(name.as_str()).timeout(Duration::from_secs(20));
    let (woken, ()) = tokio::join!(next.acquire(), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        guard.release().await.expect("release");
    });
    woken
        .expect("acquired after the release")
        .release()
        .await
        .expect("release");
}

/// The port of a replica of the master on `master`, from `CLUSTER NODES`.
fn replica_of(master: u16) -> Option<u16> {
    let nodes = cli(master, &["cluster", "nodes"]);
    let master_id = nodes
        .lines()
        .find(|line| line.contains("myself"))?
        .split_whitespace()
        .next()?
        .to_owned();
    nodes
        .lines()
        .find(|line| line.contains("slave") && line.contains(&master_id))?
        .split_whitespace()
        .nth(1)?
        .split(['@', ':'])
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_replicas_keeps_acquiring_across_a_failover() {
    let Some(cluster) = cluster(3, 1).await else {
        return;
    };
    let url = format!(
        "{}?wait_replicas=1&wait_timeout=500ms&connect_timeout=300ms&response_timeout=500ms",
        cluster.url()
    );
    let locks = locks(&url);
    let lock = locks.lock("steady").timeout(Duration::from_secs(20));
    let guard = lock.acquire().await.expect("acquire");
    let master = cluster.master_of(guard.server_key());
    guard.release().await.expect("release");
    let replica = replica_of(master).expect("the master has a replica");

    // Acquire and release in a loop while the replica takes over (a manual failover: the old
    // master stays up, demoted, and refuses WAIT).
    let looping = tokio::spawn(async move {
        let (mut fences, mut failures) = (Vec::new(), Vec::new());
        let until = Instant::now() + Duration::from_secs(6);
        for _ in 0..200_000 {
            if Instant::now() >= until {
                break;
            }
            match lock.acquire().await {
                Ok(guard) => {
                    fences.push(guard.fence().expect("fence"));
                    // A release that times out while clients are paused for the failover
                    // is left to the TTL (and the next acquire waits for it); a release the
                    // server refuses is a failure.
                    match guard.release().await {
                        Ok(()) | Err(Error::Unavailable { .. }) => {}
                        Err(error) => failures.push(format!("release: {error}")),
                    }
                }
                Err(error) => failures.push(format!(
                    "acquire: {error}: {:?}",
                    std::error::Error::source(&error).map(ToString::to_string)
                )),
            }
        }
        (fences, failures)
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let answer = cli(replica, &["cluster", "failover"]);
    assert!(answer.contains("OK"), "CLUSTER FAILOVER: {answer}");
    let (fences, failures) = looping.await.expect("the loop");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(fences.len() > 10, "only {} acquisitions", fences.len());
    for pair in fences.windows(2) {
        assert!(pair[1] > pair[0], "fence {} after {}", pair[1], pair[0]);
    }
    let promoted = tokio::task::spawn_blocking(move || {
        cluster.wait_until_healthy();
        cluster.masters().contains(&replica)
    })
    .await
    .expect("cluster");
    assert!(promoted, "the replica took over");
    eprintln!(
        "{} acquisitions across the failover, fences increasing",
        fences.len()
    );
}
