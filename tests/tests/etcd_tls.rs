//! `etcds://` against a real etcd member serving TLS, with certificates made by `openssl` at
//! test time (the conformance suite over mutual TLS is in conformance.rs): a wrong CA (or
//! none) failing at once with a typed error that says what to fix, a member that wants a
//! client certificate refusing a client without one, and a plain `etcd://` client on a TLS
//! port failing within its timeout instead of hanging.

use std::time::{Duration, Instant};

use pylock::{Error, Locks};
use pylock_tests::TestServer;
use pylock_tests::tls::{Pki, etcd_tls_server, etcd_url, refused_at_once};

/// Fresh certificates named after `name` and a member serving TLS with them (see
/// [`etcd_tls_server`]); `None` is a skip.
async fn member(name: &str, client_cert_auth: bool) -> Option<(Pki, TestServer, u16)> {
    let pki = Pki::make(name)?;
    let (server, port) = etcd_tls_server(&pki, client_cert_auth).await?;
    Some((pki, server, port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_at_once_and_says_what_to_fix() {
    let Some((pki, _server, port)) = member("etcd-untrusted", false).await else {
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
    let Some((pki, _server, port)) = member("etcd-mutual", true).await else {
        return;
    };
    let with_cert = etcd_url(port, &pki.mutual_query());
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
    let Some((_pki, _server, port)) = member("etcd-plain", false).await else {
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
