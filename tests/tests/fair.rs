//! Fair locks (`Lock::fair`) on a real Redis (and etcd): first come, first served across
//! processes, a dead waiter's place given up after its patience, and the line surviving a
//! server restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pylock::Locks;
use pylock_tests::{Kind, Needs, TestServer, raw_etcd, raw_redis};

const TTL: Duration = Duration::from_secs(60);

/// Clients with their own connections, as separate processes would have.
fn processes(server: &TestServer, count: usize) -> Vec<Locks> {
    (0..count)
        .map(|_| {
            pylock::connect(server.url())
                .expect("connect")
                .expires(TTL)
                .timeout(Duration::from_secs(60))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_waiters_of_three_processes_are_served_in_the_order_they_came() {
    served_in_order(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_waiters_of_three_etcd_clients_are_served_in_the_order_they_came() {
    served_in_order(Kind::Etcd).await;
}

/// Thirty fair waiters of three clients, each in line after the one before, are served in
/// that order.
async fn served_in_order(kind: Kind) {
    let Some(server) = TestServer::start(kind, Needs::control()).await else {
        return;
    };
    let clients = processes(&server, 3);
    let holder = clients[0].lock("line").acquire().await.expect("holder");
    let served = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for i in 0..30 {
        let lock = clients[i % 3].lock("line").fair();
        let served = Arc::clone(&served);
        waiters.push(tokio::spawn(async move {
            let guard = lock.acquire().await.expect("a turn");
            served.lock().expect("order").push(i);
            guard.release().await.expect("release");
        }));
        // Each in line after the one before: its first attempt has put it there. (A fixed
        // pause instead let two waiters swap now and then on a loaded machine, where a first
        // attempt can take longer than the pause.)
        in_line_of(kind, &server, "line", i + 1).await;
    }
    holder.release().await.expect("release");
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    let served = served.lock().expect("order").clone();
    assert_eq!(served, (0..30).collect::<Vec<_>>(), "served out of order");
}

/// Waits until `count` fair waiters stand in the line of the lock `name`, as the server has it.
async fn in_line_of(kind: Kind, server: &TestServer, name: &str, count: usize) {
    let key = format!("pylock:{name}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut redis = match kind {
        Kind::Redis => Some(raw_redis(server.url()).await),
        _ => None,
    };
    let mut etcd = match kind {
        Kind::Etcd => Some(raw_etcd(server.url()).await),
        _ => None,
    };
    loop {
        let standing = if let Some(raw) = &mut redis {
            pylock_redis::scripts::waiters_in_line(&key)
                .query_async::<usize>(raw)
                .await
                .expect("ZCOUNT")
        } else if let Some(raw) = &mut etcd {
            let places = pylock::etcd::line_prefix(&key);
            let options = etcd_client::GetOptions::new()
                .with_prefix()
                .with_count_only();
            let found = raw.get(places, Some(options)).await.expect("places");
            usize::try_from(found.count()).expect("a count")
        } else {
            unreachable!("{kind:?} keeps no fair line")
        };
        if standing >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{standing} waiters in line after 10 s, not {count}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A waiter with the longest patience pylock allows (100 years) keeps its place: its deadline
/// still reads as a deadline and not as a place in the line, so the waiter behind it is
/// woken in turn (not at its next sign of life, half its patience later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_patient_waiter_keeps_its_place_and_the_line_moves_on() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let clients = processes(&server, 2);
    let holder = clients[0].lock("endless").acquire().await.expect("holder");
    let served = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for (i, patience) in [pylock::MAX_EXPIRES, Duration::from_secs(60)]
        .into_iter()
        .enumerate()
    {
        let lock = clients[i]
            .lock("endless")
            .fair_patience(patience)
            .timeout(Duration::from_secs(10));
        let served = Arc::clone(&served);
        waiters.push(tokio::spawn(async move {
            let guard = lock.acquire().await.expect("a turn within 10 s");
            served.lock().expect("order").push(i);
            guard.release().await.expect("release");
        }));
        in_line_of(Kind::Redis, &server, "endless", i + 1).await;
    }
    holder.release().await.expect("release");
    for waiter in waiters {
        waiter.await.expect("waiter");
    }
    assert_eq!(*served.lock().expect("order"), vec![0, 1]);
}

/// A fair holder's lock names the next in line, so that its release wakes that waiter without
/// reading the line. If that waiter leaves the line while the lock is held (here it is
/// cancelled), the one after it takes its place in the name, and is woken by the release at once:
/// not at its next sign of life, half its patience (30 s) later. Operators still see a lock
/// that names a waiter as a lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_next_in_line_leaves_the_one_after_it_is_woken_in_its_place() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let clients = processes(&server, 3);
    let patient = Duration::from_secs(60);
    let first = clients[0]
        .lock("named")
        .acquire()
        .await
        .expect("first holder");
    let (taken, is_taken) = tokio::sync::oneshot::channel();
    let (go, told_to_go) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn({
        let lock = clients[0].lock("named").fair_patience(patient);
        async move {
            let guard = lock.acquire().await.expect("the fair holder's turn");
            taken.send(()).expect("the test waits");
            told_to_go.await.expect("told to release");
            guard.release().await.expect("release");
        }
    });
    in_line_of(Kind::Redis, &server, "named", 1).await;
    let leaver = tokio::spawn({
        let lock = clients[1].lock("named").fair_patience(patient);
        async move { lock.acquire().await.map(drop) }
    });
    in_line_of(Kind::Redis, &server, "named", 2).await;
    let last = tokio::spawn({
        let lock = clients[2]
            .lock("named")
            .fair_patience(patient)
            .timeout(Duration::from_secs(20));
        async move { lock.acquire().await }
    });
    in_line_of(Kind::Redis, &server, "named", 3).await;

    first.release().await.expect("release");
    is_taken.await.expect("the fair holder took its turn");
    let mut raw = raw_redis(server.url()).await;
    let mut value = async || {
        redis::cmd("GET")
            .arg("pylock:named")
            .query_async::<String>(&mut raw)
            .await
            .expect("GET")
    };
    let naming_the_leaver = value().await;
    assert_eq!(
        naming_the_leaver.len(),
        32 + 1 + 32,
        "the holder's value names the next in line: {naming_the_leaver}"
    );
    assert!(
        clients[0]
            .lock("named")
            .inspect()
            .await
            .expect("inspect")
            .is_some(),
        "a lock that names a waiter is still a lock to operators"
    );

    leaver.abort();
    // It leaves the line in the background, once its acquire is dropped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while pylock::redis::scripts::waiters_in_line("pylock:named")
        .query_async::<usize>(&mut raw_redis(server.url()).await)
        .await
        .expect("ZCOUNT")
        > 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leaver is still in line"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let naming_the_last = value().await;
    assert_eq!(naming_the_last.len(), 32 + 1 + 32);
    assert_ne!(naming_the_last, naming_the_leaver, "the name moved on");

    go.send(()).expect("the holder waits");
    holder.await.expect("holder");
    // Woken by the release, in milliseconds; unwoken, it would try again only at its next
    // sign of life (30 s) or its last attempt at its timeout (20 s).
    tokio::time::timeout(Duration::from_secs(5), last)
        .await
        .expect("the one after the leaver was woken by the release")
        .expect("task")
        .expect("its turn")
        .release()
        .await
        .expect("release");
}

/// A waiter whose process died while first in line (here: its runtime was shut down, so it
/// could not leave the line) holds up the others for its patience, not for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_waiters_place_is_given_up_after_its_patience() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let patience = Duration::from_secs(1);
    let clients = processes(&server, 1);
    let holder = clients[0].lock("ghost").acquire().await.expect("holder");

    let doomed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = server.url().to_owned();
    let dead = std::thread::spawn(move || {
        let locks = pylock::connect(&url).expect("connect").expires(TTL);
        let lock = locks.lock("ghost").fair_patience(patience);
        doomed.block_on(async {
            // In line, first...
            tokio::spawn(async move { lock.acquire().await });
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        // ... then the process dies: its tasks and connections go, and nothing runs to take
        // it out of the line, as when a process is killed.
        doomed.shutdown_background();
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let living = tokio::spawn({
        let lock = clients[0]
            .lock("ghost")
            .fair_patience(patience)
            .timeout(Duration::from_secs(20));
        async move { lock.acquire().await }
    });
    dead.join().expect("the doomed thread");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut raw = raw_redis(server.url()).await;
    let in_line: i64 = pylock::redis::scripts::waiters_in_line("pylock:ghost")
        .query_async(&mut raw)
        .await
        .expect("ZCOUNT");
    assert_eq!(
        in_line, 2,
        "the dead waiter is still in line, before the living one"
    );
    holder.release().await.expect("release");
    living
        .await
        .expect("task")
        .expect("the waiter behind a dead one got its turn")
        .release()
        .await
        .expect("release");
}

/// The server restarts empty while fair waiters wait: the line is gone with the lock, the
/// waiters poll until the server is back, line up again, and all get their turn, one at a
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_waiters_get_their_turns_after_a_server_restart() {
    let Some(mut server) = TestServer::start(Kind::Redis, Needs::control()).await else {
        return;
    };
    let url = format!(
        "{}?connect_timeout=200ms&response_timeout=500ms",
        server.url()
    );
    let clients: Vec<Locks> = (0..2)
        .map(|_| {
            pylock::connect(&url)
                .expect("connect")
                .expires(TTL)
                .timeout(Duration::from_secs(60))
        })
        .collect();
    let holder = clients[0].lock("restart").acquire().await.expect("holder");
    let counter = Arc::new(AtomicU64::new(0));
    let mut waiters = Vec::new();
    for i in 0..20 {
        let lock = clients[i % 2].lock("restart").fair();
        let counter = Arc::clone(&counter);
        waiters.push(tokio::spawn(async move {
            let guard = lock.acquire().await?;
            let seen = counter.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            counter.store(seen + 1, Ordering::SeqCst);
            guard.release().await
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.restart().await;
    for waiter in waiters {
        waiter
            .await
            .expect("task")
            .expect("a fair waiter got its turn after the restart");
    }
    assert_eq!(counter.load(Ordering::SeqCst), 20, "two holders at once");
    // The first holder's lock went with the restart: its release says so.
    assert!(matches!(
        holder.release().await,
        Err(pylock::Error::Lost { .. })
    ));
}
