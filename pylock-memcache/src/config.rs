//! `memcache://` URLs.

use pylock_core::Result;
use pylock_core::raw::{ConnectionUrl, Timeouts};

/// The query options a memcache URL may carry.
pub const OPTIONS: &[&str] = &Timeouts::OPTIONS;

/// Default host and port: `memcache://` means `memcache://localhost:11211`.
pub const DEFAULT_HOST: &str = "localhost";
/// See [`DEFAULT_HOST`].
pub const DEFAULT_PORT: u16 = 11211;

/// The servers and timeouts of a `memcache://` URL.
///
/// ```text
/// memcache://[host[:port]][,host[:port]...][?connect_timeout=1s&response_timeout=1s]
/// ```
///
/// With several servers, each lock key always goes to the same one (a jump consistent hash
/// of the key), so every client with the same server list agrees on where a lock lives.
#[derive(Debug, Clone)]
pub struct MemcacheConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) timeouts: Timeouts,
    redacted: String,
}

impl MemcacheConfig {
    /// Parses a `memcache://` URL.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`](pylock_core::Error::InvalidUrl) for a malformed URL, a user or password (memcached's text
    /// protocol has none), a path, or a repeated server; [`Error::UnknownOption`](pylock_core::Error::UnknownOption) /
    /// [`Error::InvalidOption`](pylock_core::Error::InvalidOption) for the query options.
    pub fn from_url(url: &str) -> Result<Self> {
        let url = ConnectionUrl::parse_as(url, "memcache")?;
        let options = url.options(OPTIONS)?;
        if url.username().is_some() || url.password().is_some() {
            return Err(url.invalid("memcache:// takes no user or password"));
        }
        if !matches!(url.path(), "" | "/") {
            return Err(url.invalid("memcache:// takes no path"));
        }
        let servers: Vec<String> = match url.unique_hosts(DEFAULT_PORT)? {
            [] => vec![format!("{DEFAULT_HOST}:{DEFAULT_PORT}")],
            hosts => hosts
                .iter()
                .map(|h| h.to_socket_string(DEFAULT_PORT))
                .collect(),
        };
        Ok(MemcacheConfig {
            servers,
            timeouts: Timeouts::from_options(&options)?,
            redacted: url.redacted().to_owned(),
        })
    }

    /// The servers, `host:port`, in URL order.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The connect and response timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The URL with its password replaced by `***` (memcache URLs have none, but every
    /// backend's config says it the same way).
    pub fn redacted_url(&self) -> &str {
        &self.redacted
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use pylock_core::Error;

    #[test]
    fn defaults_and_pools() {
        let config = MemcacheConfig::from_url("memcache://").unwrap();
        assert_eq!(config.servers(), &["localhost:11211".to_owned()]);
        assert_eq!(config.timeouts(), Timeouts::default());
        let config = MemcacheConfig::from_url(
            "memcache://h1:11211,h2,[::1]:11300?connect_timeout=200ms&response_timeout=2s",
        )
        .unwrap();
        assert_eq!(
            config.servers(),
            &[
                "h1:11211".to_owned(),
                "h2:11211".to_owned(),
                "[::1]:11300".to_owned()
            ]
        );
        assert_eq!(config.timeouts().connect, Duration::from_millis(200));
        assert_eq!(config.timeouts().response, Duration::from_secs(2));
    }

    #[test]
    fn bad_urls_are_typed_errors() {
        for bad in [
            "memcache://u:p@h",
            "memcache://h/x",
            "memcache://h,h",
            "memcache://h:0",
            "memcache://h,,g",
            "memcache://h?connect_timeout=0",
            "redis://h",
        ] {
            let result = MemcacheConfig::from_url(bad);
            assert!(
                matches!(
                    result,
                    Err(Error::InvalidUrl { .. } | Error::InvalidOption { .. })
                ),
                "{bad}: {result:?}"
            );
        }
        assert!(matches!(
            MemcacheConfig::from_url("memcache://h?binary=1"),
            Err(Error::UnknownOption { .. })
        ));
    }
}
