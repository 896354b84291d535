//! Test certificates made by `openssl`, and a redis-server that speaks TLS with them.

use std::path::PathBuf;
use std::process::Command;

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
