//! What every backend that speaks TLS shares: the files a URL names (`ca_file`, `cert_file`,
//! `key_file`), read once when the URL is parsed, and what a refused certificate means to a
//! caller (an error that says what to fix, not an outage to retry until the timeout).

use std::fmt;

use crate::error::{Error, Result};
use crate::url::{ConnectionUrl, Options};

/// The URL options that name TLS files.
pub const TLS_OPTIONS: &[&str] = &["ca_file", "cert_file", "key_file"];

/// The contents of a URL's `ca_file` (the CA that signed the server's certificate) and
/// `cert_file` + `key_file` (the client's certificate and key, for servers that ask for one).
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// The CA's certificate(s), PEM; `None`: the system's roots.
    pub ca: Option<Vec<u8>>,
    /// The client's certificate and private key, PEM.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl TlsFiles {
    /// Reads the files `options` name. `tls` says whether `url`'s scheme speaks TLS; on one
    /// that does not, naming a file is an error that points to `tls_schemes` (for example
    /// `"rediss://"`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a file that cannot be read, [`Error::InvalidUrl`] for TLS
    /// files on a plain URL or a certificate without its key (or the reverse).
    pub fn read(
        url: &ConnectionUrl,
        options: &Options,
        tls: bool,
        tls_schemes: &str,
    ) -> Result<Option<TlsFiles>> {
        if TLS_OPTIONS.iter().all(|name| options.get(name).is_none()) {
            return Ok(None);
        }
        if !tls {
            return Err(url.invalid(format!(
                "ca_file, cert_file and key_file are TLS options: use {tls_schemes}"
            )));
        }
        let read = |name: &str| -> Result<Option<Vec<u8>>> {
            options
                .get(name)
                .map(|path| {
                    std::fs::read(path).map_err(|e| {
                        Error::invalid_option(name, format!("cannot read {path:?}: {e}"))
                    })
                })
                .transpose()
        };
        let (ca, cert, key) = (read("ca_file")?, read("cert_file")?, read("key_file")?);
        let client = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(url.invalid("cert_file and key_file go together")),
        };
        Ok(Some(TlsFiles { ca, client }))
    }
}

/// Whether `error` (or one of its sources) says a TLS handshake failed on a certificate:
/// the server's is not trusted, does not name the host, or the server wanted the client's.
/// Retrying cannot fix that. Read from the messages (rustls's own words), so that it holds
/// whichever crate wraps the handshake.
pub fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    const SIGNS: &[&str] = &[
        "invalid peer certificate",
        "peer sent no certificates",
        "received fatal alert: BadCertificate",
        "received fatal alert: UnknownCA",
        "received fatal alert: CertificateRequired",
        "received fatal alert: CertificateUnknown",
        "CertificateRequired",
    ];
    let mut source = Some(error);
    while let Some(error) = source {
        let text = error.to_string();
        if SIGNS.iter().any(|sign| text.contains(sign)) {
            return true;
        }
        source = error.source();
    }
    false
}

/// The error for a certificate refused by `backend` at `server` while doing `context`: what
/// is wrong and which URL options fix it.
pub fn certificate_refused(
    backend: &'static str,
    server: &str,
    context: &str,
    source: Box<dyn std::error::Error + Send + Sync>,
) -> Error {
    Error::Backend {
        backend,
        context: format!(
            "TLS certificate refused at {server} ({context}): the server's certificate is not \
             signed by a trusted CA (give its CA with ?ca_file=/path/ca.pem), does not name the \
             host in the URL, or the server wants a client certificate \
             (?cert_file=...&key_file=...)"
        ),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> (ConnectionUrl, Options) {
        let url = ConnectionUrl::parse(url).unwrap();
        let options = url.options(TLS_OPTIONS).unwrap();
        (url, options)
    }

    #[test]
    fn files_are_read_at_parse_time_and_only_for_tls_urls() {
        let dir = std::env::temp_dir().join(format!("pylock-core-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, b"PEM").unwrap();
        let ca = ca.display().to_string();

        let (url, opts) = options("x://h");
        assert!(
            TlsFiles::read(&url, &opts, false, "xs://")
                .unwrap()
                .is_none()
        );
        let (url, opts) = options(&format!("x://h?ca_file={ca}"));
        let refused = TlsFiles::read(&url, &opts, false, "xs://").unwrap_err();
        assert!(refused.to_string().contains("use xs://"), "{refused}");
        let files = TlsFiles::read(&url, &opts, true, "xs://").unwrap().unwrap();
        assert_eq!(files.ca.as_deref(), Some(b"PEM".as_slice()));
        let (url, opts) = options(&format!("x://h?cert_file={ca}"));
        assert!(matches!(
            TlsFiles::read(&url, &opts, true, "xs://"),
            Err(Error::InvalidUrl { .. })
        ));
        let (url, opts) = options("x://h?ca_file=/nonexistent/ca.pem");
        assert!(matches!(
            TlsFiles::read(&url, &opts, true, "xs://"),
            Err(Error::InvalidOption { name, .. }) if name == "ca_file"
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn certificate_errors_are_recognised_through_their_sources() {
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let outer = Error::Unavailable {
            backend: "x",
            context: "connecting".to_owned(),
            source: Box::new(inner),
        };
        assert!(is_certificate_error(&outer));
        assert!(!is_certificate_error(&std::io::Error::other(
            "connection refused"
        )));
    }
}
