//! The main demo (`cargo run -p pylock --example contention`) as users run it: it must keep
//! its counter exact on real locks, across processes, and must catch a backend that is not a
//! lock.

use std::process::Command;

use pylock_tests::{Kind, Needs, TestServer};

fn demo(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_pylock-contention-demo"))
        .args(args)
        .env_remove("PYLOCK_URL")
        .output()
        .expect("run the demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

#[test]
fn the_default_memory_demo_keeps_its_counter_exact() {
    let (code, text) = demo(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        last_line(&text).starts_with("OK: 40 holds, 0 overlapping; counter = 40 (expected 40)"),
        "{text}"
    );
}

#[test]
fn the_demo_catches_a_backend_that_is_not_a_lock() {
    let (code, text) = demo(&["--url", "open://", "--hold-ms", "5"]);
    assert_eq!(code, 1, "open:// must be reported as a violation:\n{text}");
    assert!(last_line(&text).starts_with("VIOLATION"), "{text}");
}

#[test]
fn memory_cannot_span_processes() {
    let (code, text) = demo(&["--processes", "2"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("inside one process"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_on_redis_keep_the_counter_exact() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::any()).await else {
        return;
    };
    four_processes_on(server.url().to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_on_memcached_keep_the_counter_exact() {
    let Some(server) = TestServer::start(Kind::Memcached, Needs::any()).await else {
        return;
    };
    four_processes_on(server.url().to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_on_etcd_keep_the_counter_exact() {
    let Some(server) = TestServer::start(Kind::Etcd, Needs::any()).await else {
        return;
    };
    four_processes_on(server.url().to_owned()).await;
}

/// Runs the demo with 4 processes on `url` and checks the counter.
async fn four_processes_on(url: String) {
    let key = format!("demo-{}", std::process::id());
    let (code, text) = tokio::task::spawn_blocking(move || {
        demo(&[
            "--url",
            &url,
            "--processes",
            "4",
            "--workers",
            "2",
            "--rounds",
            "5",
            "--key",
            &key,
        ])
    })
    .await
    .expect("demo");
    assert_eq!(code, 0, "{text}");
    assert!(
        last_line(&text).starts_with("OK: 40 holds, 0 overlapping; counter = 40 (expected 40)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_on_redlock_keep_the_counter_exact() {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let Some(node) = TestServer::start(Kind::Redis, Needs::control()).await else {
            return;
        };
        nodes.push(node);
    }
    let hosts: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    // The nodes started a moment ago: the default restart guard would hold every lock for a
    // minute (the guard has its own tests in redlock.rs).
    four_processes_on(format!("redlock://{}?restart_guard=0", hosts.join(","))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_on_a_cluster_keep_the_counter_exact() {
    let Some(cluster) = tokio::task::spawn_blocking(|| pylock_tests::TestCluster::start(3, 0))
        .await
        .expect("cluster")
    else {
        return;
    };
    four_processes_on(cluster.url()).await;
}
