//! `etcds://` against a real etcd member serving TLS, with certificates made by `openssl` at
//! test time (the conformance suite over mutual TLS is in conformance.rs): a wrong CA (or
//! none) failing at once with a typed error that says what to fix, a member that wants a
//! client certificate refusing a client without one, and a plain `etcd://` client on a TLS
//! port failing within its timeout instead of hanging.

use std::time::{Duration, Instant};

use pylock::{Error, Locks};
use pylock_tests::tls::{Pki, etcd_tls_server, etcd_url, refused_at_once};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_at_once_and_says_what_to_fix() {
    let Some(pki) = Pki::make("etcd-untrusted") else {
        return;
    };
    let Some((_server, port)) = etcd_tls_server(&pki, false).await else {
        return;
    };
    // Another CA, and the system's roots (which do not know the test CA).
    refused_at_once(&etcd_url(
        port,
        &format!("ca_file={}", pki.path("other-ca.pem")),
    ))
    .await;
    refused_at_once(&etcd_url(port, "")).await;
    // The right CA: served.
    let trusted = etcd_url(port, &format!("ca_file={}", pki.path("ca.pem")));
    let guard = Locks::connect(&trusted)
        .expect("url")
        .lock("tls")
        .acquire()
        .await
        .expect("acquire over TLS");
    assert!(guard.fence().is_some());
    guard.release().await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_wants_a_client_certificate_refuses_a_client_without_one() {
    let Some(pki) = Pki::make("etcd-mutual") else {
        return;
    };
    let Some((_server, port)) = etcd_tls_server(&pki, true).await else {
        return;
    };
    let with_cert = etcd_url(
        port,
        &format!(
            "ca_file={}&cert_file={}&key_file={}",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key")
        ),
    );
    let guard = Locks::connect(&with_cert)
        .expect("url")
        .lock("mtls")
        .acquire()
        .await
        .expect("acquire with a client certificate");
    guard.release().await.expect("release");

    refused_at_once(&etcd_url(port, &format!("ca_file={}", pki.path("ca.pem")))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_on_a_tls_port_fails_within_its_timeout() {
    let Some(pki) = Pki::make("etcd-plain") else {
        return;
    };
    let Some((_server, port)) = etcd_tls_server(&pki, false).await else {
        return;
    };
    let started = Instant::now();
    let result = Locks::connect(&format!("etcd://127.0.0.1:{port}?connect_timeout=1s"))
        .expect("url")
        .lock("plain")
        .timeout(Duration::from_secs(3))
        .acquire()
        .await;
    assert!(
        matches!(
            result,
            Err(Error::Unavailable { .. } | Error::Backend { .. })
        ),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
}
