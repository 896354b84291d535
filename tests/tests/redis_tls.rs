//! `rediss://` against a real TLS redis-server, with certificates made by `openssl` at test
//! time: the conformance suite with the server's private CA trusted through the URL, a wrong
//! CA (or none) failing at once with a typed error that says what to fix, mutual TLS with a
//! client certificate, TLS files that cannot be read refused when the URL is parsed, and a
//! Redis Cluster over TLS (`rediss+cluster://`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pylock::redis::RedisBackend;
use pylock::{Error, LockBackend, Locks};
use pylock_core::conformance;
use pylock_tests::server::free_port;
use pylock_tests::{ClusterTls, Kind, Needs, Provider, TestCluster, TestServer};

/// A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it,
/// and a second CA that signed nothing here.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn make(name: &str) -> Option<Pki> {
        let dir = std::env::temp_dir().join(format!("pylock-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let openssl = |args: &[&str]| {
            Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .map(|out| out.status.success())
                .unwrap_or(false)
        };
        let made = openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=pylock test CA",
        ]) && openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=another CA",
        ]);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("ext");
        let made = made
            && ["server", "client"].iter().all(|who| {
                openssl(&[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    &format!("{who}.key"),
                    "-out",
                    &format!("{who}.csr"),
                    "-subj",
                    &format!("/CN={who}"),
                ]) && openssl(&[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{who}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &format!("{who}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    "server.ext",
                ])
            });
        if made {
            Some(Pki { dir })
        } else {
            pylock_tests::skip::skip("openssl could not make the test certificates");
            None
        }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// A redis-server with a TLS port (and its plain port, which the fixture uses to see it is
/// up); `clients` is `no` or `yes` (mutual TLS).
async fn tls_server(pki: &Pki, clients: &str) -> Option<(TestServer, u16)> {
    let port = free_port().expect("free port");
    let server = TestServer::start(
        Kind::Redis,
        Needs::args(&[
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &pki.path("server.pem"),
            "--tls-key-file",
            &pki.path("server.key"),
            "--tls-ca-cert-file",
            &pki.path("ca.pem"),
            "--tls-auth-clients",
            clients,
        ])
        .from(Provider::Binary),
    )
    .await?;
    Some((server, port))
}

fn url(port: u16, query: &str) -> String {
    format!("rediss://127.0.0.1:{port}?connect_timeout=2s&{query}")
}

/// Acquires with a long timeout and expects a quick, typed TLS error that names the fix.
async fn refused_at_once(url: &str) {
    let locks = Locks::connect(url).expect("the URL parses");
    let started = Instant::now();
    let result = locks
        .lock("k")
        .timeout(Duration::from_secs(20))
        .acquire()
        .await;
    let took = started.elapsed();
    match result {
        Err(error @ Error::Backend { .. }) => {
            let message = error.to_string();
            assert!(message.contains("TLS certificate"), "{message}");
            assert!(message.contains("ca_file"), "{message}");
        }
        other => panic!("{url}: expected a TLS certificate error, got {other:?}"),
    }
    assert!(
        took < Duration::from_secs(10),
        "{url}: retried for {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_over_tls_with_a_private_ca() {
    let Some(pki) = Pki::make("conformance") else {
        return;
    };
    let Some((_server, port)) = tls_server(&pki, "no").await else {
        return;
    };
    let url = url(port, &format!("ca_file={}", pki.path("ca.pem")));
    let backend: Arc<dyn LockBackend> = Arc::new(RedisBackend::from_url(&url).expect("backend"));
    let report = conformance::run_all(backend).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.passed.len(), conformance::CHECKS.len());
}

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
    let with_cert = url(
        port,
        &format!(
            "ca_file={}&cert_file={}&key_file={}",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key")
        ),
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_cluster_over_tls() {
    let Some(pki) = Pki::make("cluster") else {
        return;
    };
    let tls = ClusterTls {
        cert: pki.dir.join("server.pem"),
        key: pki.dir.join("server.key"),
        ca: pki.dir.join("ca.pem"),
    };
    let Some(cluster) = tokio::task::spawn_blocking(move || TestCluster::start_tls(3, 0, tls))
        .await
        .expect("cluster fixture")
    else {
        return;
    };
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let backend: Arc<dyn LockBackend> = Arc::new(RedisBackend::from_url(&url).expect("backend"));
    let report = conformance::run_all(backend).await;
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.passed.len(), conformance::CHECKS.len());
}
