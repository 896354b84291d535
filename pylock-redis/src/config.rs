//! `redis://`, `rediss://` and `redis+unix://` URLs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pylock_core::Result;
use pylock_core::raw::{ConnectionUrl, Timeouts, TlsFiles};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// The query options a Redis URL may carry.
pub const OPTIONS: &[&str] = &[
    "db",
    "connect_timeout",
    "response_timeout",
    "fencing",
    "wait_replicas",
    "wait_timeout",
    "ca_file",
    "cert_file",
    "key_file",
];

/// The query options a Redlock URL may carry.
pub const REDLOCK_OPTIONS: &[&str] = &[
    "db",
    "connect_timeout",
    "response_timeout",
    "node_timeout",
    "restart_guard",
];

/// How long a Redlock node may take to answer one attempt before it counts as failed.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(100);

/// How long a Redlock node grants nothing after it started, unless the URL says otherwise:
/// the mission's own example holds its locks for 60 s.
pub const DEFAULT_RESTART_GUARD: Duration = Duration::from_secs(60);

/// How long `WAIT` may wait for replicas when `wait_replicas` is set.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(100);

/// Default host and port, as in pylock 0.4: `redis://` means `redis://localhost:6379/0`.
pub const DEFAULT_HOST: &str = "localhost";
/// See [`DEFAULT_HOST`].
pub const DEFAULT_PORT: u16 = 6379;

/// Everything needed to reach one Redis server or one Redis Cluster, parsed from a URL.
///
/// ```text
/// redis://[user[:password]@][host][:port][/db][?option=value&...]
/// rediss://...                      (TLS, feature `tls`)
/// redis+unix:///path/to/redis.sock[?db=N&...]
/// redis+cluster://[user[:password]@]seed1:7000[,seed2:7001...][?option=value&...]
/// rediss+cluster://...              (a Cluster over TLS, feature `tls`)
/// ```
///
/// | option | default | meaning |
/// |---|---|---|
/// | `db` | `0` | database number (or `/N` as the path); not for clusters |
/// | `connect_timeout` | `1s` | longest wait for a connection (`250ms`, `2s`, `1.5`) |
/// | `response_timeout` | `1s` | longest wait for a reply |
/// | `fencing` | `true` | give fencing tokens (one small counter key per held lock, with its TTL) |
/// | `wait_replicas` | none | after each acquire and extend, `WAIT` for this many replicas |
/// | `wait_timeout` | `100ms` | how long that `WAIT` may take |
/// | `ca_file` | the system's roots | TLS: a PEM file of the CA(s) that signed the server's certificate (a private CA) |
/// | `cert_file`, `key_file` | none | TLS: a PEM client certificate and its key, for servers that ask for one (mutual TLS) |
///
/// TLS trusts the system's certificate store (and `SSL_CERT_FILE` / `SSL_CERT_DIR` when set)
/// unless `ca_file` names the CA to trust instead. The files are read when the URL is parsed,
/// so a missing or unreadable file is an error then, not at the first lock.
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) servers: Servers,
    /// The TLS files of the URL, read; the cluster client takes them apart from the seeds.
    #[cfg_attr(
        not(feature = "tls"),
        allow(dead_code, reason = "read by the TLS code only")
    )]
    pub(crate) tls: Option<TlsFiles>,
    pub(crate) timeouts: Timeouts,
    pub(crate) fencing: bool,
    pub(crate) wait: Option<WaitForReplicas>,
    /// Redlock nodes only: how long a node that lost its memory must not grant locks.
    pub(crate) restart_guard: Option<Duration>,
    redacted: String,
}

/// One server, or the seed nodes of a cluster.
#[derive(Clone)]
pub(crate) enum Servers {
    Single(Box<ConnectionInfo>),
    Cluster(Vec<ConnectionInfo>),
}

/// `WAIT` for replicas after writing a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitForReplicas {
    pub(crate) replicas: u64,
    pub(crate) timeout: Duration,
}

impl RedisConfig {
    /// Parses a `redis://`, `rediss://` or `redis+unix://` URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`](pylock_core::Error::InvalidUrl) for a malformed URL, several hosts, a bad database or a TLS URL
    /// without the `tls` feature; [`Error::UnknownOption`](pylock_core::Error::UnknownOption) / [`Error::InvalidOption`](pylock_core::Error::InvalidOption) for the
    /// query options.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = ConnectionUrl::parse(url)?;
        let options = url.options(OPTIONS)?;
        let tls = TlsFiles::read(
            &url,
            &options,
            url.scheme().starts_with("rediss"),
            "rediss:// or rediss+cluster://",
        )?;
        let servers = match url.scheme() {
            "redis" | "rediss" => {
                let (addr, path_db) = tcp_address(&url)?;
                let db = database(&url, path_db, options.u64("db")?)?;
                let info = with_tls(&url, connection_info(&url, addr, db)?, tls.as_ref())?;
                Servers::Single(Box::new(info))
            }
            "redis+unix" => {
                let db = database(&url, None, options.u64("db")?)?;
                Servers::Single(Box::new(connection_info(&url, unix_address(&url)?, db)?))
            }
            "redis+cluster" | "rediss+cluster" => {
                if !matches!(url.path(), "" | "/") || options.get("db").is_some() {
                    return Err(url.invalid("a Redis Cluster has only database 0"));
                }
                if url.hosts().is_empty() {
                    return Err(url.invalid(
                        "redis+cluster:// needs at least one seed node: redis+cluster://host:7000",
                    ));
                }
                let seeds = url
                    .hosts()
                    .iter()
                    .map(|h| {
                        let (host, port) = (h.host.clone(), h.port.unwrap_or(DEFAULT_PORT));
                        let addr = if url.scheme() == "rediss+cluster" {
                            tls_address(&url, host, port)?
                        } else {
                            ConnectionAddr::Tcp(host, port)
                        };
                        with_tls(&url, connection_info(&url, addr, 0)?, tls.as_ref())
                    })
                    .collect::<Result<Vec<_>>>()?;
                Servers::Cluster(seeds)
            }
            other => {
                return Err(url.invalid(format!(
                    "{other}:// is not a Redis scheme; use redis://, rediss://, redis+unix://, \
                     redis+cluster:// or rediss+cluster://"
                )));
            }
        };
        let wait = match options.u64("wait_replicas")? {
            Some(0) | None => {
                if options.get("wait_timeout").is_some() {
                    return Err(url.invalid("wait_timeout needs wait_replicas"));
                }
                None
            }
            Some(replicas) => Some(WaitForReplicas {
                replicas,
                timeout: options.timeout("wait_timeout", DEFAULT_WAIT_TIMEOUT)?,
            }),
        };
        Ok(RedisConfig {
            servers,
            tls,
            timeouts: Timeouts::from_options(&options)?,
            fencing: options.bool("fencing")?.unwrap_or(true),
            wait,
            restart_guard: None,
            redacted: url.redacted().to_owned(),
        })
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// The connect and response timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Whether fencing tokens are given.
    pub fn fencing(&self) -> bool {
        self.fencing
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.servers, Servers::Cluster(_))
    }

    /// The connection settings of the server, or of each seed node (they hold the password).
    pub(crate) fn connection_infos(&self) -> &[ConnectionInfo] {
        match &self.servers {
            Servers::Single(info) => std::slice::from_ref(&**info),
            Servers::Cluster(seeds) => seeds,
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted)
            .field("timeouts", &self.timeouts)
            .field("fencing", &self.fencing)
            .field("wait", &self.wait)
            .finish()
    }
}

/// The database from the path (`/N`) or the `db` option, not both; 0 by default.
fn database(url: &ConnectionUrl, from_path: Option<u64>, from_option: Option<u64>) -> Result<i64> {
    let db = match (from_path, from_option) {
        (Some(_), Some(_)) => {
            return Err(url.invalid("the database is given both as /N and as ?db=N"));
        }
        (Some(db), None) | (None, Some(db)) => db,
        (None, None) => 0,
    };
    i64::try_from(db).map_err(|_| url.invalid("the database number is too large"))
}

/// The database a URL's path gives (`/N`), if it gives one.
fn path_database(url: &ConnectionUrl) -> Result<Option<u64>> {
    match url.path().trim_start_matches('/') {
        "" => Ok(None),
        db => db
            .parse::<u64>()
            .map(Some)
            .map_err(|_| url.invalid(format!("the path must be a database number, not {db:?}"))),
    }
}

/// Connection settings for `addr`, with the URL's user and password.
fn connection_info(url: &ConnectionUrl, addr: ConnectionAddr, db: i64) -> Result<ConnectionInfo> {
    let mut redis = RedisConnectionInfo::default().set_db(db);
    if let Some(user) = url.username() {
        redis = redis.set_username(user);
    }
    if let Some(password) = url.password() {
        redis = redis.set_password(password.expose());
    }
    Ok(addr
        .into_connection_info()
        .map_err(|e| url.invalid(e.to_string()))?
        .set_redis_settings(redis))
}

fn tcp_address(url: &ConnectionUrl) -> Result<(ConnectionAddr, Option<u64>)> {
    let (host, port) = match url.hosts() {
        [] => (DEFAULT_HOST.to_owned(), DEFAULT_PORT),
        [one] => (one.host.clone(), one.port.unwrap_or(DEFAULT_PORT)),
        _ => {
            return Err(url.invalid(
                "redis:// takes one host; for several independent masters use redlock://, \
                 for a Redis Cluster redis+cluster://",
            ));
        }
    };
    let db = path_database(url)?;
    let addr = if url.scheme() == "rediss" {
        tls_address(url, host, port)?
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    Ok((addr, db))
}

/// The URL's TLS files in the `redis` crate's form.
#[cfg(feature = "tls")]
pub(crate) fn certificates(files: &TlsFiles) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: files
            .client
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: files.ca.clone(),
    }
}

/// `info` with the URL's TLS files, when it has any.
#[cfg(feature = "tls")]
fn with_tls(
    url: &ConnectionUrl,
    info: ConnectionInfo,
    tls: Option<&TlsFiles>,
) -> Result<ConnectionInfo> {
    let Some(tls) = tls else {
        return Ok(info);
    };
    redis::Client::build_with_tls(info, certificates(tls))
        .map(|client| client.get_connection_info().clone())
        .map_err(|e| url.invalid(format!("the TLS files: {e}")))
}

#[cfg(not(feature = "tls"))]
fn with_tls(
    _url: &ConnectionUrl,
    info: ConnectionInfo,
    _tls: Option<&TlsFiles>,
) -> Result<ConnectionInfo> {
    Ok(info)
}

#[cfg(feature = "tls")]
fn tls_address(_url: &ConnectionUrl, host: String, port: u16) -> Result<ConnectionAddr> {
    Ok(ConnectionAddr::TcpTls {
        host,
        port,
        insecure: false,
        tls_params: None,
    })
}

#[cfg(not(feature = "tls"))]
fn tls_address(url: &ConnectionUrl, _host: String, _port: u16) -> Result<ConnectionAddr> {
    Err(url.invalid(
        "rediss:// (TLS) needs the `tls` feature of pylock-redis (the `redis-tls` feature of pylock)",
    ))
}

fn unix_address(url: &ConnectionUrl) -> Result<ConnectionAddr> {
    if !url.hosts().is_empty() {
        return Err(url.invalid(
            "redis+unix:// takes a socket path, not a host: redis+unix:///run/redis.sock",
        ));
    }
    if url.path().is_empty() || url.path() == "/" {
        return Err(
            url.invalid("redis+unix:// needs the socket's path: redis+unix:///run/redis.sock")
        );
    }
    Ok(ConnectionAddr::Unix(PathBuf::from(url.path())))
}

/// The independent masters of a `redlock://` URL, each with the URL's user, password, database
/// and timeouts.
///
/// ```text
/// redlock://[user[:password]@]host1:6379,host2:6380,host3:6381[/db][?option=value&...]
/// ```
///
/// | option | default | meaning |
/// |---|---|---|
/// | `node_timeout` | `100ms` | longest wait for one node's answer to one attempt |
/// | `connect_timeout`, `response_timeout` | `1s` | as for `redis://` |
/// | `db` | `0` | database number on every node |
/// | `restart_guard` | `60s` | at least the longest TTL your clients use: a node grants nothing until this long after it started, so that one restarted at once with its locks lost cannot give a second client a majority; `0` turns it off (nodes that persist every write) |
///
/// At least three nodes: Redlock holds a lock on a majority of them. See
/// [`crate::redlock`] for `restart_guard`.
#[derive(Debug, Clone)]
pub struct RedlockConfig {
    pub(crate) nodes: Vec<RedisConfig>,
    pub(crate) node_timeout: Duration,
    redacted: String,
}

impl RedlockConfig {
    /// Parses a `redlock://` URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`](pylock_core::Error::InvalidUrl) for a malformed URL, fewer than
    /// three or repeated nodes; [`Error::UnknownOption`](pylock_core::Error::UnknownOption) /
    /// [`Error::InvalidOption`](pylock_core::Error::InvalidOption) for the options.
    pub fn from_url(url: &str) -> Result<Self> {
        let parsed = ConnectionUrl::parse_as(url, "redlock")?;
        let options = parsed.options(REDLOCK_OPTIONS)?;
        let hosts = parsed.hosts();
        if hosts.len() < 3 {
            return Err(parsed.invalid(
                "Redlock needs at least three independent masters (a majority must survive a \
                 failure); for one server use redis://",
            ));
        }
        let db = database(&parsed, path_database(&parsed)?, options.u64("db")?)?;
        let timeouts = Timeouts::from_options(&options)?;
        let restart_guard = match options.duration("restart_guard")? {
            Some(off) if off.is_zero() => None,
            _ => Some(options.timeout("restart_guard", DEFAULT_RESTART_GUARD)?),
        };
        let mut nodes = Vec::with_capacity(hosts.len());
        for host in parsed.unique_hosts(DEFAULT_PORT)? {
            let addr = ConnectionAddr::Tcp(host.host.clone(), host.port.unwrap_or(DEFAULT_PORT));
            nodes.push(RedisConfig {
                servers: Servers::Single(Box::new(connection_info(&parsed, addr, db)?)),
                tls: None,
                timeouts,
                // No fencing: no counter can be kept consistent across independent masters.
                fencing: false,
                wait: None,
                restart_guard,
                redacted: format!("redlock node {}", host.to_socket_string(DEFAULT_PORT)),
            });
        }
        Ok(RedlockConfig {
            nodes,
            node_timeout: options.timeout("node_timeout", DEFAULT_NODE_TIMEOUT)?,
            redacted: parsed.redacted().to_owned(),
        })
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// How many nodes there are.
    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    /// How many nodes must agree: a majority.
    pub fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// The per-node timeout of one attempt.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pylock_core::Error;

    fn tcp(config: &RedisConfig) -> (String, u16) {
        match config.connection_infos()[0].addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_localhost_6379_db_0() {
        let config = RedisConfig::from_url("redis://").unwrap();
        assert_eq!(tcp(&config), ("localhost".to_owned(), 6379));
        assert_eq!(config.connection_infos()[0].redis_settings().db(), 0);
        assert_eq!(config.timeouts(), Timeouts::default());
        assert!(config.fencing());
    }

    #[test]
    fn every_part_of_the_url_is_used() {
        let config = RedisConfig::from_url(
            "redis://app:s%40cret@127.0.0.1:6380/3?connect_timeout=250ms&response_timeout=2s&fencing=false",
        )
        .unwrap();
        assert_eq!(tcp(&config), ("127.0.0.1".to_owned(), 6380));
        let redis = config.connection_infos()[0].redis_settings();
        assert_eq!(redis.db(), 3);
        assert_eq!(redis.username(), Some("app"));
        assert_eq!(redis.password(), Some("s@cret"));
        assert_eq!(config.timeouts().connect, Duration::from_millis(250));
        assert_eq!(config.timeouts().response, Duration::from_secs(2));
        assert!(!config.fencing());
        let config = RedisConfig::from_url("redis://[::1]?db=2").unwrap();
        assert_eq!(tcp(&config), ("::1".to_owned(), 6379));
        assert_eq!(config.connection_infos()[0].redis_settings().db(), 2);
    }

    #[test]
    fn unix_sockets() {
        let config = RedisConfig::from_url("redis+unix:///run/redis.sock?db=1").unwrap();
        match config.connection_infos()[0].addr() {
            ConnectionAddr::Unix(path) => assert_eq!(path, &PathBuf::from("/run/redis.sock")),
            other => panic!("{other:?}"),
        }
        assert_eq!(config.connection_infos()[0].redis_settings().db(), 1);
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        for bad in [
            "redis://h1,h2",
            "redis://h/x",
            "redis://h/1?db=2",
            "redis://h:99999",
            "redis+unix://host/x.sock",
            "redis+unix://",
            "memcache://h",
            "redis://h?connect_timeout=0",
        ] {
            let result = RedisConfig::from_url(bad);
            assert!(
                matches!(
                    result,
                    Err(Error::InvalidUrl { .. } | Error::InvalidOption { .. })
                ),
                "{bad}: {result:?}"
            );
        }
        assert!(matches!(
            RedisConfig::from_url("redis://h?pool_size=3"),
            Err(Error::UnknownOption { .. })
        ));
        assert!(matches!(
            RedisConfig::from_url("redis://h?fencing=maybe"),
            Err(Error::InvalidOption { .. })
        ));
    }

    #[test]
    fn clusters_and_replica_waits() {
        let config = RedisConfig::from_url(
            "redis+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001?wait_replicas=1&wait_timeout=50ms",
        )
        .unwrap();
        assert!(config.is_cluster());
        assert_eq!(config.connection_infos().len(), 2);
        assert_eq!(
            config.connection_infos()[1].redis_settings().password(),
            Some("p")
        );
        assert_eq!(
            config.wait,
            Some(WaitForReplicas {
                replicas: 1,
                timeout: Duration::from_millis(50)
            })
        );
        for bad in [
            "redis+cluster://",
            "redis+cluster://h:7000/1",
            "redis+cluster://h:7000?db=1",
            "redis://h?wait_timeout=1s",
        ] {
            assert!(
                matches!(RedisConfig::from_url(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
        assert!(!RedisConfig::from_url("redis://h").unwrap().is_cluster());
    }

    #[test]
    fn redlock_urls() {
        let config =
            RedlockConfig::from_url("redlock://:pw@h1:6379,h2:6380,h3/2?node_timeout=20ms")
                .unwrap();
        assert_eq!((config.nodes(), config.quorum()), (3, 2));
        assert_eq!(config.node_timeout(), Duration::from_millis(20));
        for node in &config.nodes {
            assert!(!node.fencing());
            assert_eq!(node.connection_infos()[0].redis_settings().db(), 2);
            assert_eq!(
                node.connection_infos()[0].redis_settings().password(),
                Some("pw")
            );
        }
        assert_eq!(
            RedlockConfig::from_url("redlock://a,b,c,d,e")
                .unwrap()
                .quorum(),
            3
        );
        for bad in [
            "redlock://h1,h2",
            "redlock://h1,h1,h2",
            "redlock://a,b,c/x",
            "redis://a,b,c",
        ] {
            assert!(
                matches!(RedlockConfig::from_url(bad), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            RedlockConfig::from_url("redlock://a,b,c?fencing=true"),
            Err(Error::UnknownOption { .. })
        ));
        assert!(!format!("{config:?}").contains("pw"));
        // The restart guard is on unless turned off; a guard is a timeout, bounded.
        let guard = |url: &str| RedlockConfig::from_url(url).map(|c| c.nodes[0].restart_guard);
        assert_eq!(
            guard("redlock://a,b,c").unwrap(),
            Some(DEFAULT_RESTART_GUARD)
        );
        assert_eq!(
            guard("redlock://a,b,c?restart_guard=90s").unwrap(),
            Some(Duration::from_secs(90))
        );
        assert_eq!(guard("redlock://a,b,c?restart_guard=0").unwrap(), None);
        for bad in ["?restart_guard=soon", "?restart_guard=2000000"] {
            assert!(
                matches!(
                    guard(&format!("redlock://a,b,c{bad}")),
                    Err(Error::InvalidOption { .. })
                ),
                "{bad}"
            );
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_needs_the_feature() {
        let error = RedisConfig::from_url("rediss://h").unwrap_err();
        assert!(error.to_string().contains("`tls` feature"), "{error}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_urls() {
        let config = RedisConfig::from_url("rediss://h:6390").unwrap();
        assert!(matches!(
            config.connection_infos()[0].addr(),
            ConnectionAddr::TcpTls { port: 6390, .. }
        ));
    }

    #[test]
    fn the_password_never_shows() {
        let config = RedisConfig::from_url("redis://u:hunter2@h/0").unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.redacted_url(), "redis://u:***@h/0");
        let error = RedisConfig::from_url("redis://u:hunter2@h/x").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
    }
}
