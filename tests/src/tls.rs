//! Test certificates made by `openssl`, and a redis-server and an etcd member that speak TLS
//! with them.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use pylock::{Error, Locks};

use crate::server::{Kind, Needs, Provider, TestServer, free_port};

/// A CA, a server certificate for 127.0.0.1 signed by it, a client certificate signed by it,
/// and a second CA that signed nothing here.
#[derive(Debug)]
pub struct Pki {
    /// The directory of the PEM files.
    pub dir: PathBuf,
}

impl Pki {
    /// Makes the files with `openssl` in a fresh directory named after `name`; `None` (a
    /// skip, see [`crate::skip`]) when openssl cannot.
    pub fn make(name: &str) -> Option<Pki> {
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
            crate::skip::skip("openssl could not make the test certificates");
            None
        }
    }

    /// The URL options of a client that trusts the test CA and presents the client
    /// certificate.
    pub fn mutual_query(&self) -> String {
        format!(
            "ca_file={}&cert_file={}&key_file={}",
            self.path("ca.pem"),
            self.path("client.pem"),
            self.path("client.key")
        )
    }

    /// The path of `file` (`ca.pem`, `server.pem`, `client.key`...).
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// A redis-server with a TLS port (and its plain port, which the fixture uses to see it is
/// up); `clients` is `no` or `yes` (mutual TLS).
pub async fn tls_server(pki: &Pki, clients: &str) -> Option<(TestServer, u16)> {
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

/// `rediss://127.0.0.1:<port>` with `query` added.
pub fn url(port: u16, query: &str) -> String {
    format!("rediss://127.0.0.1:{port}?connect_timeout=2s&{query}")
}

/// An etcd member that serves TLS on a port of its own (returned) with the server certificate,
/// and plain HTTP on its usual port, which the fixture uses to see it is up. With
/// `client_cert_auth`, it asks TLS clients for a certificate signed by the test CA.
pub async fn etcd_tls_server(pki: &Pki, client_cert_auth: bool) -> Option<(TestServer, u16)> {
    let port = free_port().expect("free port");
    let listen = format!("http://127.0.0.1:{{port}},https://127.0.0.1:{port}");
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let mut args = vec![
        "--listen-client-urls",
        &listen,
        "--cert-file",
        &cert,
        "--key-file",
        &key,
    ];
    if client_cert_auth {
        args.extend(["--client-cert-auth", "--trusted-ca-file", &ca]);
    }
    let server = TestServer::start(Kind::Etcd, Needs::args(&args).from(Provider::Binary)).await?;
    Some((server, port))
}

/// `etcds://127.0.0.1:<port>` with `query` added.
pub fn etcd_url(port: u16, query: &str) -> String {
    format!("etcds://127.0.0.1:{port}?connect_timeout=2s&{query}")
}

/// Acquires on `url` with a long timeout and expects a quick, typed TLS error that names the
/// fix: a certificate problem is not an outage to retry until the timeout.
pub async fn refused_at_once(url: &str) {
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
