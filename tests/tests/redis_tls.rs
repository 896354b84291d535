//! `rediss://` against a real TLS redis-server, with certificates made by `openssl` at test
//! time (the conformance suite over TLS, a single server and a Cluster, is in conformance.rs):
//! a wrong CA (or none) failing at once with a typed error that says what to fix, mutual TLS
//! with a client certificate, and TLS files that cannot be read refused when the URL is
//! parsed.

use std::path::Path;
use std::time::{Duration, Instant};

use pylock::{Error, Locks};
use pylock_tests::tls::{Pki, refused_at_once, tls_server, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_at_once_and_says_what_to_fix() {
    let Some(pki) = Pki::make("untrusted") else {
        return;
    };
    let Some((_server, port)) = tls_server(&pki, "no").await else {
        return;
    };
    // Another CA, and the system's roots (which do not know the test CA).
    refused_at_once(&url(port, &format!("ca_file={}", pki.path("other-ca.pem")))).await;
    refused_at_once(&url(port, "")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let Some(pki) = Pki::make("mutual") else {
        return;
    };
    let Some((_server, port)) = tls_server(&pki, "yes").await else {
        return;
    };
    let with_cert = url(port, &pki.mutual_query());
    let locks = Locks::connect(&with_cert).expect("url");
    let guard = locks
        .lock("mtls")
        .acquire()
        .await
        .expect("acquire with a client cert");
    guard.release().await.expect("release");

    // Without one, the server refuses the handshake: an error within the timeout, not a hang.
    let without = url(port, &format!("ca_file={}", pki.path("ca.pem")));
    let started = Instant::now();
    let result = Locks::connect(&without)
        .expect("url")
        .lock("mtls")
        .timeout(Duration::from_secs(3))
        .acquire()
        .await;
    assert!(result.is_err(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn tls_files_are_read_when_the_url_is_parsed() {
    let missing = Path::new("/nonexistent/ca.pem").display().to_string();
    let error = Locks::connect(&format!("rediss://127.0.0.1?ca_file={missing}"))
        .expect_err("a missing CA file is refused");
    assert!(
        matches!(&error, Error::InvalidOption { name, .. } if name == "ca_file"),
        "{error:?}"
    );
    let error = Locks::connect(&format!("redis://127.0.0.1?ca_file={missing}"))
        .expect_err("TLS files on a plain URL are refused");
    assert!(error.to_string().contains("TLS"), "{error}");
}
