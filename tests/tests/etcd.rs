//! The etcd backend against real etcd: what a consensus store gives that Redis cannot (a held
//! lock and its fence outlive a restart of the member on its data dir, the death of the leader
//! of a three-member cluster while the lock is held and others wait, its leader frozen, and a
//! restart of the whole cluster), a holder cut off by a partition told of its loss before the
//! next holder gets in, a dead member reported in time, a member whose name does not resolve
//! costing nothing, operators' tools that touch only locks, and the leases the backend reuses
//! between attempts (never one lease for two keys, never less life than the lock's TTL). The
//! conformance suite runs in conformance.rs.

use std::time::Duration;

use pylock::{Error, Lock, LockGuard, Locks};
use pylock_tests::etcd_cluster::EtcdCluster;
use pylock_tests::faults;
use pylock_tests::{Kind, Needs, TestServer, raw_etcd};

fn locks(url: &str) -> Locks {
    pylock::connect(url)
        .expect("url")
        .key_prefix(format!("etcd-test:{}:", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_and_its_fence_outlive_a_member_restart() {
    let Some(mut server) = TestServer::start(Kind::Etcd, Needs::control()).await else {
        return;
    };
    let locks = locks(server.url());
    let lock = locks.lock("restart").expires(Duration::from_secs(30));
    let mut fences = Vec::new();
    for _ in 0..3 {
        let guard = lock.acquire().await.expect("acquire");
        fences.push(guard.fence().expect("etcd gives fences"));
        guard.release().await.expect("release");
    }
    let held = lock.acquire().await.expect("acquire");
    let held_fence = held.fence().expect("fence");
    fences.push(held_fence);

    // Killed and started again on its data dir: the lock, its lease and the revision counter
    // are on disk, replicated through Raft (here, a cluster of one).
    server.restart().await;

    still_held_by_its_holder(&lock, held, "restart").await;

    let next = lock
        .clone()
        .timeout(Duration::from_secs(10))
        .acquire()
        .await
        .expect("acquire after the restart");
    fences.push(next.fence().expect("fence"));
    next.release().await.expect("release");
    for pair in fences.windows(2) {
        assert!(
            pair[1] > pair[0],
            "fence {} after {}: {fences:?}",
            pair[1],
            pair[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_is_a_clear_error_within_the_timeout() {
    faults::a_dead_server_is_reported_in_time(Kind::Etcd, "etcd").await;
}

/// A member list with a name that does not resolve (a typo, a decommissioned member whose DNS
/// record is gone), perhaps a member that is down, and a live member: requests sent to the
/// others never left, so they go to the live one and every call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_name_does_not_resolve_costs_a_caller_nothing() {
    let Some(server) = TestServer::start(Kind::Etcd, Needs::any()).await else {
        return;
    };
    // `.invalid` never resolves (RFC 2606); the resolver says so without asking the network.
    for url in [
        format!("{},no-such-member.invalid:2379", server.url()),
        server
            .url()
            .replace("etcd://", "etcd://no-such-member.invalid:2379,"),
        // With a member that is down too.
        server
            .url()
            .replace("etcd://", "etcd://no-such-member.invalid:2379,127.0.0.1:1,"),
    ] {
        let locks = locks(&url);
        for round in 0..20 {
            let lock = locks.lock(format!("dns-{round}"));
            let guard = lock
                .clone()
                .timeout(Duration::ZERO)
                .acquire()
                .await
                .unwrap_or_else(|e| panic!("{url}: acquire {round}: {e:#}"));
            assert!(
                lock.inspect().await.expect("inspect").is_some(),
                "{url}: held"
            );
            guard
                .release()
                .await
                .unwrap_or_else(|e| panic!("{url}: release {round}: {e:#}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_tools_touch_only_locks() {
    let Some(server) = TestServer::start(Kind::Etcd, Needs::any()).await else {
        return;
    };
    let locks = locks(server.url());
    let prefix = locks.settings().key_prefix.clone();
    let mut raw = raw_client(&server).await;
    // Not locks of ours: another value, and a token-like value on no lease.
    raw.put(format!("{prefix}text"), "hello", None)
        .await
        .expect("put");
    raw.put(
        format!("{prefix}forever"),
        "0123456789abcdef0123456789abcdef",
        None,
    )
    .await
    .expect("put");
    faults::operators_tools_refuse_what_is_not_a_lock(&locks, &["text", "forever"]).await;
    for name in ["text", "forever"] {
        let kept = raw.get(format!("{prefix}{name}"), None).await.expect("get");
        assert_eq!(kept.kvs().len(), 1, "{name} was left alone");
    }
}

/// A client of `server` of its own, to look at what the backend wrote.
async fn raw_client(server: &TestServer) -> etcd_client::Client {
    raw_etcd(server.url()).await
}

/// The lease `key` is on, and how many whole seconds it has left, as the server says.
async fn lease_of(raw: &mut etcd_client::Client, key: &str) -> (i64, i64) {
    let kvs = raw.get(key, None).await.expect("get");
    let lease = kvs
        .kvs()
        .first()
        .expect("the lock is on the server")
        .lease();
    let ttl = raw.lease_time_to_live(lease, None).await.expect("ttl");
    (lease, ttl.ttl())
}

/// A lock (10 s TTL) on a server of its own, taken once and released, so that its lease is
/// idle in the backend's pool; a client of its own; the lock's server key; that lease.
struct ReleasedOnce {
    _server: TestServer,
    lock: Lock,
    raw: etcd_client::Client,
    key: String,
    lease: i64,
}

async fn released_once(name: &str) -> Option<ReleasedOnce> {
    let server = TestServer::start(Kind::Etcd, Needs::any()).await?;
    let locks = locks(server.url());
    let key = format!("{}{name}", locks.settings().key_prefix);
    let lock = locks.lock(name).expires(Duration::from_secs(10));
    let mut raw = raw_client(&server).await;
    let first = lock.acquire().await.expect("acquire");
    let (lease, _) = lease_of(&mut raw, &key).await;
    first.release().await.expect("release");
    Some(ReleasedOnce {
        _server: server,
        lock,
        raw,
        key,
        lease,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_lease_lives_the_full_ttl_from_the_attempt_that_took_it() {
    // `_server` is bound, so the member lives to the end of the test.
    let Some(ReleasedOnce {
        _server,
        lock,
        mut raw,
        key,
        lease,
    }) = released_once("reuse").await
    else {
        return;
    };
    // The lease waits in the pool and ages: 3 of its 10 s go by.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let second = lock.acquire().await.expect("acquire");
    let (reused, left) = lease_of(&mut raw, &key).await;
    assert_eq!(
        reused, lease,
        "the idle lease was reused (else this test tests nothing)"
    );
    assert!(
        left >= 9,
        "the reused lease has {left} s left: it was not renewed by the attempt, so the lock \
         would end before the 10 s its holder counts on"
    );
    second.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_lease_revoked_behind_the_backends_back_costs_only_a_new_one() {
    let Some(ReleasedOnce {
        _server: server,
        lock,
        mut raw,
        key,
        lease,
    }) = released_once("revoked").await
    else {
        return;
    };
    raw.lease_revoke(lease).await.expect("revoke");

    let held = lock
        .acquire()
        .await
        .expect("acquire on a revoked idle lease");
    let (now_on, left) = lease_of(&mut raw, &key).await;
    assert_ne!(now_on, lease, "the lock sits on the revoked lease");
    assert!(left >= 9, "the new lease has {left} s left");
    // Another client (its own backend, its own pool) finds it held.
    let other = self::locks(server.url())
        .lock("revoked")
        .try_acquire()
        .await;
    assert!(matches!(other, Ok(None)), "a second holder: {other:?}");
    held.release().await.expect("release");
}

/// Many tasks of two clients take, extend and release three locks (some of them fair) while a
/// watcher reads every key of theirs in one snapshot, again and again: no two keys may share a
/// lease, or releasing one lock, or the lease of one running out, would take the other with
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_two_keys_ever_share_a_lease() {
    let Some(server) = TestServer::start(Kind::Etcd, Needs::any()).await else {
        return;
    };
    let clients = [locks(server.url()), locks(server.url())];
    let prefix = clients[0].settings().key_prefix.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for task in 0..8usize {
        let mut lock = clients[task % 2]
            .lock(format!("shared:{}", task % 3))
            .expires(Duration::from_secs(5))
            .timeout(Duration::from_secs(20));
        if task % 4 == 3 {
            lock = lock.fair();
        }
        let stop = std::sync::Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut cycles = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && cycles < 500 {
                let mut guard = lock.acquire().await.expect("acquire");
                if cycles.is_multiple_of(3) {
                    guard.extend(Duration::from_secs(6)).await.expect("extend");
                }
                guard.release().await.expect("release");
                cycles += 1;
            }
            cycles
        }));
    }
    let mut raw = raw_client(&server).await;
    let mut snapshots = 0;
    let mut keys_seen = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let all = raw
            .get(
                prefix.clone(),
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await
            .expect("snapshot");
        let mut leases = std::collections::HashMap::new();
        for kv in all.kvs() {
            keys_seen += 1;
            if let Some(other) = leases.insert(kv.lease(), kv.key_str().unwrap_or("?").to_owned()) {
                panic!(
                    "lease {} carries {other} and {}",
                    kv.lease(),
                    kv.key_str().unwrap_or("?")
                );
            }
        }
        snapshots += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut cycles = 0;
    for task in tasks {
        cycles += task.await.expect("task");
    }
    assert!(cycles > 50, "only {cycles} cycles: the load never ran");
    assert!(
        keys_seen > snapshots,
        "{keys_seen} keys in {snapshots} snapshots: the watcher saw too little to judge"
    );
}

/// After `what` (a restart, a failover): nobody else gets `lock` within 2 s, and its holder
/// still has it, extends it and releases it.
async fn still_held_by_its_holder(lock: &Lock, mut held: LockGuard, what: &str) {
    let intruder = lock.clone().timeout(Duration::from_secs(2)).acquire().await;
    assert!(
        matches!(intruder, Err(Error::Timeout { .. })),
        "a second holder got in after the {what}: {intruder:?}"
    );
    held.extend(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("the holder lost the lock in the {what}: {e}"));
    held.release()
        .await
        .unwrap_or_else(|e| panic!("release after the {what}: {e}"));
}

/// The lock `name` on `cluster` (30 s TTL, 60 s timeout), held after one hold before, and the
/// fences of both holds.
async fn held_after_one_hold(cluster: &EtcdCluster, name: &str) -> (Lock, LockGuard, Vec<u64>) {
    let lock = locks(&cluster.url())
        .lock(name)
        .expires(Duration::from_secs(30))
        .timeout(Duration::from_secs(60));
    let before = lock.acquire().await.expect("acquire");
    let mut fences = vec![before.fence().expect("fence")];
    before.release().await.expect("release");
    let held = lock.acquire().await.expect("acquire");
    fences.push(held.fence().expect("fence"));
    (lock, held, fences)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dies_while_a_lock_is_held_and_others_wait() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let (lock, held, mut fences) = held_after_one_hold(&cluster, "failover").await;
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let lock = lock.clone();
            tokio::spawn(async move {
                let guard = lock
                    .acquire()
                    .await
                    .expect("a waiter is served after the failover");
                let fence = guard.fence().expect("fence");
                tokio::time::sleep(Duration::from_millis(50)).await;
                guard.release().await.expect("release");
                fence
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let leader = cluster.leader().await;
    cluster.kill(leader);
    let successor = cluster.leader().await;
    assert_ne!(successor, leader, "a new leader was elected");

    // The lock survived the election: nobody else gets it, its holder still has it.
    still_held_by_its_holder(&lock, held, "failover").await;
    for waiter in waiters {
        fences.push(waiter.await.expect("waiter"));
    }
    let after = lock.acquire().await.expect("acquire");
    fences.push(after.fence().expect("fence"));
    after.release().await.expect("release");
    // Before the failover, the two waiters in whichever order they came, then the last.
    let waited = [fences[2].min(fences[3]), fences[2].max(fences[3])];
    let in_order = [fences[0], fences[1], waited[0], waited[1], fences[4]];
    assert!(
        in_order.windows(2).all(|pair| pair[1] > pair[0]),
        "fences must increase across the failover: {fences:?}"
    );
}

/// A holder cut off from etcd (its connections stalled, as in a partition) until its lease
/// runs out: it learns it lost the lock no later than the next holder gets it, and the next
/// holder's fence is higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_holder_learns_of_its_loss_before_the_next_holder_gets_in() {
    let Some(server) = TestServer::start(Kind::Etcd, Needs::any()).await else {
        return;
    };
    let proxy = pylock_tests::FaultProxy::start(server.port()).await;
    let cut_off = locks(&format!(
        "etcd://127.0.0.1:{}?connect_timeout=300ms&response_timeout=300ms",
        proxy.port()
    ));
    let direct = locks(server.url());
    let ttl = Duration::from_secs(3);
    let held = cut_off
        .lock("partition")
        .expires(ttl)
        .auto_renew()
        .acquire()
        .await
        .expect("acquire");
    let old_fence = held.fence().expect("fence");

    proxy.set(pylock_tests::Fault::Stall);
    let started = tokio::time::Instant::now();
    let next = tokio::spawn(async move {
        let guard = direct
            .lock("partition")
            .timeout(Duration::from_secs(30))
            .acquire()
            .await
            .expect("the next holder gets the lock once the lease ran out");
        (tokio::time::Instant::now(), guard)
    });
    let reason = held.lost().await;
    let lost_at = tokio::time::Instant::now();
    let (next_at, next_guard) = next.await.expect("task");
    assert!(
        lost_at <= next_at,
        "the cut-off holder learned of its loss ({:?}, {reason:?}) after the next holder got in ({:?})",
        lost_at - started,
        next_at - started
    );
    let new_fence = next_guard.fence().expect("fence");
    assert!(new_fence > old_fence, "fence {new_fence} after {old_fence}");
    next_guard.release().await.expect("release");
    proxy.set(pylock_tests::Fault::Pass);
    drop(held);
}

/// Every member of a three-member cluster killed at once and started again on its data: the
/// held lock is still held, and fences go on from where they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fences_and_a_held_lock_survive_a_full_cluster_restart() {
    let Some(mut cluster) = EtcdCluster::start(3).await else {
        return;
    };
    let (lock, held, mut fences) = held_after_one_hold(&cluster, "full-restart").await;

    cluster.restart_all().await;

    still_held_by_its_holder(&lock, held, "restart").await;
    let next = lock.acquire().await.expect("acquire after the restart");
    fences.push(next.fence().expect("fence"));
    next.release().await.expect("release");
    assert!(
        fences.windows(2).all(|pair| pair[1] > pair[0]),
        "fences must increase across the restart: {fences:?}"
    );
}

/// The leader of a three-member cluster frozen (SIGSTOP) while a lock is held: the others elect
/// a new leader, nobody else gets the lock, its holder keeps it (a call that happens to go to
/// the frozen member fails as unavailable and is tried again, as the wait loop does), and
/// fences keep increasing once the member is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_lets_no_second_holder_in() {
    let Some(cluster) = EtcdCluster::start(3).await else {
        return;
    };
    // Two members answer for three while the tests around this one load the machine: give a
    // call 3 s rather than 1 s, well inside the lock's 30 s.
    let locks = locks(&format!("{}?response_timeout=3s", cluster.url()));
    let lock = locks
        .lock("frozen")
        .expires(Duration::from_secs(30))
        .timeout(Duration::from_secs(30));
    let mut held = lock.acquire().await.expect("acquire");
    let held_fence = held.fence().expect("fence");

    let leader = cluster.leader().await;
    cluster.pause(leader);
    let successor = cluster.leader().await;
    assert_ne!(successor, leader, "a new leader was elected");

    let intruder = lock.clone().timeout(Duration::from_secs(3)).acquire().await;
    assert!(
        intruder.is_err(),
        "a second holder got in while the leader was frozen: fence {:?}",
        intruder.map(|guard| guard.fence())
    );
    let mut extended = Err(Error::Lost { key: String::new() });
    for _ in 0..10 {
        extended = held.extend(Duration::from_secs(30)).await;
        if !matches!(&extended, Err(error) if error.is_transient()) {
            break;
        }
    }
    extended.expect("the holder still holds it while the old leader is frozen");

    cluster.resume(leader);
    // A member that was frozen answers slowly while it catches up; release once all serve.
    cluster.wait_until_all_serve().await;
    held.release().await.expect("release");
    let next = lock.acquire().await.expect("acquire after the resume");
    let next_fence = next.fence().expect("fence");
    next.release().await.expect("release");
    assert!(
        next_fence > held_fence,
        "fence {next_fence} after {held_fence}"
    );
}
