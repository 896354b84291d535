//! `etcd://` URLs.

use pylock_core::Result;
use pylock_core::raw::{ConnectionUrl, Timeouts, TlsFiles};

/// The query options an etcd URL may carry (the last three with `etcds://` only).
pub const OPTIONS: &[&str] = &[
    "connect_timeout",
    "response_timeout",
    "namespace",
    "ca_file",
    "cert_file",
    "key_file",
];

/// Default host and port: `etcd://` means `etcd://localhost:2379`.
pub const DEFAULT_HOST: &str = "localhost";
/// See [`DEFAULT_HOST`].
pub const DEFAULT_PORT: u16 = 2379;

/// The members, credentials, TLS files, timeouts and key namespace of an `etcd://` or
/// `etcds://` URL.
///
/// ```text
/// etcd://[user:password@][host[:port]][,host[:port]...][?connect_timeout=1s&response_timeout=1s&namespace=app/]
/// etcds://...[?ca_file=/path/ca.pem&cert_file=/path/client.pem&key_file=/path/client.key]
/// ```
///
/// `etcds://` speaks TLS to every member (feature `tls`): it trusts the CA in `ca_file`, or the
/// system's roots without it, and presents the client certificate of `cert_file` and
/// `key_file` to members that ask for one (etcd's `--client-cert-auth`). The files are read
/// when the URL is parsed, so a wrong path is an error at once.
///
/// Several members are endpoints of one cluster: the client balances over them and goes on
/// with the others when one fails. `namespace` is put before every key on the server (after
/// the lock's own prefix, `pylock:` by default), so that applications sharing a cluster keep
/// apart.
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) credentials: Option<(String, String)>,
    /// `Some` for `etcds://` (the files may all be absent).
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) timeouts: Timeouts,
    pub(crate) namespace: String,
    redacted: String,
}

impl EtcdConfig {
    /// Parses an `etcd://` or `etcds://` URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`](pylock_core::Error::InvalidUrl) for a malformed URL, a user
    /// without a password, a path, a member listed twice, TLS files on an `etcd://` URL, or
    /// `etcds://` without the `tls` feature;
    /// [`Error::UnknownOption`](pylock_core::Error::UnknownOption) /
    /// [`Error::InvalidOption`](pylock_core::Error::InvalidOption) for the query options (a
    /// TLS file that cannot be read among them).
    pub fn from_url(url: &str) -> Result<Self> {
        let url = ConnectionUrl::parse(url)?;
        let secure = match url.scheme() {
            "etcd" => false,
            "etcds" => true,
            other => return Err(url.invalid(format!("{other}:// is not etcd:// or etcds://"))),
        };
        if secure && !cfg!(feature = "tls") {
            return Err(url.invalid(
                "etcds:// (TLS) needs the `tls` feature of pylock-etcd (the `etcd-tls` feature of pylock)",
            ));
        }
        let options = url.options(OPTIONS)?;
        let tls = TlsFiles::read(&url, &options, secure, "etcds://")?
            .or_else(|| secure.then(TlsFiles::default));
        if !matches!(url.path(), "" | "/") {
            return Err(
                url.invalid("etcd:// takes no path; a key namespace is the `namespace` option")
            );
        }
        let credentials = match (url.username(), url.password()) {
            (None, None) => None,
            (Some(user), Some(password)) => Some((user.to_owned(), password.expose().to_owned())),
            _ => return Err(url.invalid("etcd's authentication needs a user and a password")),
        };
        let http = if secure { "https" } else { "http" };
        let endpoints = match url.unique_hosts(DEFAULT_PORT)? {
            [] => vec![format!("{http}://{DEFAULT_HOST}:{DEFAULT_PORT}")],
            hosts => hosts
                .iter()
                .map(|h| format!("{http}://{}", h.to_socket_string(DEFAULT_PORT)))
                .collect(),
        };
        Ok(EtcdConfig {
            endpoints,
            credentials,
            tls,
            timeouts: Timeouts::from_options(&options)?,
            namespace: options.get("namespace").unwrap_or_default().to_owned(),
            redacted: url.redacted().to_owned(),
        })
    }

    /// The members' client URLs (`http://host:port`, `https://` for `etcds://`), in URL order.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The connect and response timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// What every server key starts with.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }
}

impl std::fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("url", &self.redacted)
            .field("tls", &self.tls)
            .field("timeouts", &self.timeouts)
            .field("namespace", &self.namespace)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use pylock_core::Error;

    #[test]
    fn defaults_members_and_options() {
        let config = EtcdConfig::from_url("etcd://").unwrap();
        assert_eq!(config.endpoints(), ["http://localhost:2379"]);
        assert_eq!(config.timeouts(), Timeouts::default());
        assert_eq!(config.namespace(), "");
        let config = EtcdConfig::from_url(
            "etcd://root:s3cr%40t@h1,h2:2380,[::1]:2381?response_timeout=2s&namespace=app/",
        )
        .unwrap();
        assert_eq!(
            config.endpoints(),
            ["http://h1:2379", "http://h2:2380", "http://[::1]:2381"]
        );
        assert_eq!(
            config.credentials,
            Some(("root".to_owned(), "s3cr@t".to_owned()))
        );
        assert_eq!(config.timeouts().response, Duration::from_secs(2));
        assert_eq!(config.namespace(), "app/");
        assert!(!format!("{config:?}").contains("s3cr"));
    }

    #[test]
    fn etcds_speaks_tls_to_every_member() {
        let parsed = EtcdConfig::from_url("etcds://h1,h2:2380?ca_file=/etc/hostname");
        if cfg!(feature = "tls") {
            let config = parsed.unwrap();
            assert_eq!(config.endpoints(), ["https://h1:2379", "https://h2:2380"]);
            assert!(config.tls.as_ref().is_some_and(|tls| tls.ca.is_some()));
            let bare = EtcdConfig::from_url("etcds://h").unwrap();
            assert!(bare.tls.is_some_and(|tls| tls.ca.is_none()));
        } else {
            let error = parsed.unwrap_err();
            assert!(error.to_string().contains("`tls` feature"), "{error}");
        }
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        for bad in [
            "etcd://h/x",
            "etcd://h,h:2379",
            "etcd://user@h",
            "etcd://h?connect_timeout=0",
            "redis://h",
            "etcd://h?ca_file=/etc/hostname",
            "etcds://h?key_file=/etc/hostname",
            "etcds://h?ca_file=/nonexistent/ca.pem",
        ] {
            let result = EtcdConfig::from_url(bad);
            assert!(
                matches!(
                    result,
                    Err(Error::InvalidUrl { .. } | Error::InvalidOption { .. })
                ),
                "{bad}: {result:?}"
            );
        }
        assert!(matches!(
            EtcdConfig::from_url("etcd://h?lease=5"),
            Err(Error::UnknownOption { .. })
        ));
    }
}
