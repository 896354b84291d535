//! `redis://`, `rediss://` and `redis+unix://` URLs.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use pylock_core::Result;
use pylock_core::url::ConnectionUrl;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo};

/// The query options a Redis URL may carry.
pub const OPTIONS: &[&str] = &["db", "connect_timeout", "response_timeout", "fencing"];

/// Default host and port, as in pylock 0.4: `redis://` means `redis://localhost:6379/0`.
pub const DEFAULT_HOST: &str = "localhost";
/// See [`DEFAULT_HOST`].
pub const DEFAULT_PORT: u16 = 6379;

/// How long connecting may take before a call fails with `Error::Unavailable`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may wait for its reply before a call fails with `Error::Unavailable`.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything needed to reach one Redis server, parsed from a URL.
///
/// ```text
/// redis://[user[:password]@][host][:port][/db][?option=value&...]
/// rediss://...                      (TLS, feature `tls`)
/// redis+unix:///path/to/redis.sock[?db=N&...]
/// ```
///
/// | option | default | meaning |
/// |---|---|---|
/// | `db` | `0` | database number (or `/N` as the path) |
/// | `connect_timeout` | `1s` | longest wait for a connection (`250ms`, `2s`, `1.5`) |
/// | `response_timeout` | `1s` | longest wait for a reply |
/// | `fencing` | `true` | give fencing tokens (keeps one small counter key per lock name) |
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) info: ConnectionInfo,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) fencing: bool,
    redacted: String,
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
        let (addr, path_db) = match url.scheme() {
            "redis" | "rediss" => tcp_address(&url)?,
            "redis+unix" => (unix_address(&url)?, None),
            other => {
                return Err(url.invalid(format!(
                    "{other}:// is not a Redis scheme; use redis://, rediss:// or redis+unix://"
                )));
            }
        };
        let db = match (path_db, options.u64("db")?) {
            (Some(_), Some(_)) => {
                return Err(url.invalid("the database is given both as /N and as ?db=N"));
            }
            (Some(db), None) | (None, Some(db)) => db,
            (None, None) => 0,
        };
        let db = i64::try_from(db).map_err(|_| url.invalid("the database number is too large"))?;

        let mut redis = RedisConnectionInfo::default().set_db(db);
        if let Some(user) = url.username() {
            redis = redis.set_username(user);
        }
        if let Some(password) = url.password() {
            redis = redis.set_password(password.expose());
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| url.invalid(e.to_string()))?
            .set_redis_settings(redis);

        Ok(RedisConfig {
            info,
            connect_timeout: options.timeout("connect_timeout", DEFAULT_CONNECT_TIMEOUT)?,
            response_timeout: options.timeout("response_timeout", DEFAULT_RESPONSE_TIMEOUT)?,
            fencing: options.bool("fencing")?.unwrap_or(true),
            redacted: url.redacted().to_owned(),
        })
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The response timeout.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// Whether fencing tokens are given.
    pub fn fencing(&self) -> bool {
        self.fencing
    }

    /// The connection settings for the `redis` crate (they hold the password).
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The longest a single command can take to fail while the server is unreachable: one
    /// connect attempt plus one reply.
    pub(crate) fn call_timeout(&self) -> Duration {
        self.connect_timeout + self.response_timeout
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("fencing", &self.fencing)
            .finish()
    }
}

fn tcp_address(url: &ConnectionUrl) -> Result<(ConnectionAddr, Option<u64>)> {
    let (host, port) = match url.hosts() {
        [] => (DEFAULT_HOST.to_owned(), DEFAULT_PORT),
        [one] => (one.host.clone(), one.port.unwrap_or(DEFAULT_PORT)),
        _ => {
            return Err(url.invalid(
                "redis:// takes one host; several independent masters are a Redlock setup",
            ));
        }
    };
    let db =
        match url.path().trim_start_matches('/') {
            "" => None,
            db => Some(db.parse::<u64>().map_err(|_| {
                url.invalid(format!("the path must be a database number, not {db:?}"))
            })?),
        };
    let addr = if url.scheme() == "rediss" {
        tls_address(url, host, port)?
    } else {
        ConnectionAddr::Tcp(host, port)
    };
    Ok((addr, db))
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
    Err(url.invalid("rediss:// (TLS) needs the `tls` feature of pylock-redis (or of pylock)"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use pylock_core::Error;

    fn tcp(config: &RedisConfig) -> (String, u16) {
        match config.info.addr() {
            ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_localhost_6379_db_0() {
        let config = RedisConfig::from_url("redis://").unwrap();
        assert_eq!(tcp(&config), ("localhost".to_owned(), 6379));
        assert_eq!(config.info.redis_settings().db(), 0);
        assert_eq!(config.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert!(config.fencing());
    }

    #[test]
    fn every_part_of_the_url_is_used() {
        let config = RedisConfig::from_url(
            "redis://app:s%40cret@127.0.0.1:6380/3?connect_timeout=250ms&response_timeout=2s&fencing=false",
        )
        .unwrap();
        assert_eq!(tcp(&config), ("127.0.0.1".to_owned(), 6380));
        let redis = config.info.redis_settings();
        assert_eq!(redis.db(), 3);
        assert_eq!(redis.username(), Some("app"));
        assert_eq!(redis.password(), Some("s@cret"));
        assert_eq!(config.connect_timeout(), Duration::from_millis(250));
        assert_eq!(config.response_timeout(), Duration::from_secs(2));
        assert!(!config.fencing());
        let config = RedisConfig::from_url("redis://[::1]?db=2").unwrap();
        assert_eq!(tcp(&config), ("::1".to_owned(), 6379));
        assert_eq!(config.info.redis_settings().db(), 2);
    }

    #[test]
    fn unix_sockets() {
        let config = RedisConfig::from_url("redis+unix:///run/redis.sock?db=1").unwrap();
        match config.info.addr() {
            ConnectionAddr::Unix(path) => assert_eq!(path, &PathBuf::from("/run/redis.sock")),
            other => panic!("{other:?}"),
        }
        assert_eq!(config.info.redis_settings().db(), 1);
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
            config.info.addr(),
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
