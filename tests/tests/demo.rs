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
    let url = server.url().to_owned();
    let key = format!("demo-{}", std::process::id());
    let (code, text) = tokio::task::spawn_blocking(move || {
        demo(&[
            "--url",
            &url,
            "--processes",
            "4",
            "--workers",
            "4",
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
        last_line(&text).starts_with("OK: 80 holds, 0 overlapping; counter = 80 (expected 80)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_on_memcached_keep_the_counter_exact() {
    let Some(server) = TestServer::start(Kind::Memcached, Needs::any()).await else {
        return;
    };
    let url = server.url().to_owned();
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
