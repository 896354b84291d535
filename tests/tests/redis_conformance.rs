//! The conformance suite against real Redis, through each way of getting a server.

use std::sync::Arc;

use pylock::LockBackend;
use pylock::redis::RedisBackend;
use pylock_core::conformance;
use pylock_tests::{Kind, Needs, Provider, TestServer};

async fn run_suite(needs: Needs) {
    let Some(server) = TestServer::start(Kind::Redis, needs).await else {
        return;
    };
    let backend: Arc<dyn LockBackend> =
        Arc::new(RedisBackend::from_url(server.url()).expect("backend"));
    let report = conformance::run_all(backend).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.passed.len(), conformance::CHECKS.len());
    eprintln!(
        "conformance: {} checks passed on redis via {}",
        report.passed.len(),
        server.provider()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_container() {
    run_suite(Needs::any().from(Provider::Container)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_local_binary() {
    run_suite(Needs::any().from(Provider::Binary)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_without_fencing() {
    let Some(server) = TestServer::start(Kind::Redis, Needs::any()).await else {
        return;
    };
    let url = format!("{}?fencing=false", server.url());
    let backend = RedisBackend::from_url(&url).expect("backend");
    assert!(!backend.capabilities().fencing);
    let report = conformance::run_all(Arc::new(backend)).await;
    assert_eq!(
        report.skipped,
        vec![(
            "fencing_tokens_increase",
            "the backend gives no fencing tokens"
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_a_unix_socket() {
    let socket = std::env::temp_dir().join(format!("pylock-test-{}.sock", std::process::id()));
    let socket_arg = socket.to_string_lossy().into_owned();
    // A socket file is only visible to a server on this host's file system: a local binary.
    let needs = Needs::args(&["--unixsocket", &socket_arg, "--unixsocketperm", "700"])
        .from(Provider::Binary);
    let Some(_server) = TestServer::start(Kind::Redis, needs).await else {
        return;
    };
    let url = format!("redis+unix://{socket_arg}?db=1");
    let backend: Arc<dyn LockBackend> = Arc::new(RedisBackend::from_url(&url).expect("backend"));
    let report = conformance::run_all(backend).await;
    assert_eq!(report.passed.len(), conformance::CHECKS.len());
}
