//! The check every backend's "server down" test makes.

use std::time::{Duration, Instant};

use pylock::{Error, Lock};

use crate::server::TestServer;

/// Stops `server`, and checks that acquiring `lock` (timeout zero, then 2 s) fails with
/// [`Error::Unavailable`] naming `backend`, by about the timeout plus one connect attempt,
/// never hanging; then starts the server again and checks that the same lock, from the same
/// client, works.
pub async fn assert_outage_reported_and_survived(
    server: &mut TestServer,
    lock: &Lock,
    backend: &str,
    connect_timeout: Duration,
) {
    lock.acquire()
        .await
        .expect("warm up")
        .release()
        .await
        .expect("release");
    server.stop().await;
    for timeout in [Duration::ZERO, Duration::from_secs(2)] {
        let started = Instant::now();
        let result = lock.clone().timeout(timeout).acquire().await;
        let took = started.elapsed();
        match &result {
            Err(error @ Error::Unavailable { .. }) => {
                assert!(error.to_string().contains(backend), "{error}");
            }
            other => panic!("timeout {timeout:?}: {other:?}"),
        }
        // Generous slack for a busy machine; a hang would take far longer.
        assert!(
            took < timeout + connect_timeout * 2 + Duration::from_secs(2),
            "timeout {timeout:?} returned after {took:?}"
        );
    }
    server.start_again().await;
    lock.clone()
        .timeout(Duration::from_secs(10))
        .acquire()
        .await
        .expect("the same client works once the server is back")
        .release()
        .await
        .expect("release");
}
