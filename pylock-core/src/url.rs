//! Connection URLs: one parser shared by every backend, because the `url` crate rejects the
//! multi-host form (`memcache://h1:11211,h2:11211`) that pools and Redlock need.
//!
//! Grammar: `scheme://[user[:password]@][host[:port][,host[:port]...]][/path][?k=v&...]`.
//! Hosts may be bracketed IPv6 literals (`[::1]:6379`). User, password, path and query are
//! percent-decoded. Each backend interprets the parts in its own `config` module.
//!
//! The user information ends at the *last* `@` of the URL, so a password may hold any
//! character unencoded (`/`, `?`, `#`, `@`, `:`), as people paste them; an `@` in a path or
//! option value must then be written `%40`. The same rule finds the password to hide in
//! messages, for any string, parseable or not (see [`redact_url`]).

use std::fmt;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};

/// A password taken from a URL. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Password(password.into())
    }

    /// The password itself, for handing to a driver. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One `host[:port]` of a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// A name, an IPv4 address, or an IPv6 address without brackets.
    pub host: String,
    /// The port, if the URL gave one.
    pub port: Option<u16>,
}

impl HostPort {
    /// `host:port`, bracketing IPv6 addresses, with `default_port` when none was given.
    pub fn to_socket_string(&self, default_port: u16) -> String {
        let port = self.port.unwrap_or(default_port);
        if self.host.contains(':') {
            format!("[{}]:{port}", self.host)
        } else {
            format!("{}:{port}", self.host)
        }
    }
}

/// A parsed connection URL.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUrl {
    scheme: String,
    username: Option<String>,
    password: Option<Password>,
    hosts: Vec<HostPort>,
    path: String,
    query: Vec<(String, String)>,
    redacted: String,
}

impl ConnectionUrl {
    /// Parses `url`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] (with the password redacted) when `url` has no `scheme://`, a bad
    /// host or port, a fragment, or bad percent-encoding.
    pub fn parse(url: &str) -> Result<Self> {
        let redacted = redact_url(url);
        let invalid = |reason: &str| Error::InvalidUrl {
            url: redacted.clone(),
            reason: reason.to_owned(),
        };

        let scheme = scheme_of(url).map_err(|reason| invalid(&reason))?;
        let rest = &url[scheme.len() + 3..];
        let (userinfo, rest) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        if rest.contains('#') {
            return Err(invalid("fragments (#...) are not allowed"));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((before, query)) => (before, Some(query)),
            None => (rest, None),
        };
        let (hostlist, path) = match before_query.find('/') {
            Some(slash) => before_query.split_at(slash),
            None => (before_query, ""),
        };

        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                let user = decode(user).map_err(|_| invalid("the user name is not valid UTF-8"))?;
                let password = password
                    .map(|p| decode(p).map(Password))
                    .transpose()
                    .map_err(|_| invalid("the password is not valid UTF-8"))?;
                ((!user.is_empty()).then_some(user), password)
            }
        };

        let hosts = if hostlist.is_empty() {
            Vec::new()
        } else {
            hostlist
                .split(',')
                .map(parse_host)
                .collect::<std::result::Result<Vec<_>, String>>()
                .map_err(|reason| invalid(&reason))?
        };

        let path = decode(path).map_err(|_| invalid("the path is not valid UTF-8"))?;
        let query = match query {
            None | Some("") => Vec::new(),
            Some(query) => query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    Ok((decode(k)?, decode(v)?))
                })
                .collect::<std::result::Result<Vec<_>, std::str::Utf8Error>>()
                .map_err(|_| invalid("a query option is not valid UTF-8"))?,
        };

        Ok(ConnectionUrl {
            scheme,
            username,
            password,
            hosts,
            path,
            query,
            redacted,
        })
    }

    /// The scheme, lowercased, e.g. `redis`.
    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    /// The user name, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The password, if any.
    pub fn password(&self) -> Option<&Password> {
        self.password.as_ref()
    }

    /// The hosts in the order given; empty when the URL has none (backends apply defaults).
    pub fn hosts(&self) -> &[HostPort] {
        &self.hosts
    }

    /// The percent-decoded path, with its leading `/`; empty when there is none.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// Parses `url`, which must be of `scheme` (a backend's config parsing its own URL).
    ///
    /// # Errors
    ///
    /// As for [`parse`](Self::parse); [`Error::InvalidUrl`] for another scheme.
    pub fn parse_as(url: &str, scheme: &str) -> Result<Self> {
        let url = Self::parse(url)?;
        if url.scheme() != scheme {
            return Err(url.invalid(format!("{}:// is not {scheme}://", url.scheme())));
        }
        Ok(url)
    }

    /// The hosts, each `host:port` (with `default_port`) at most once: a server listed twice
    /// would count twice in a pool or a quorum.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUrl`] naming the first host listed twice.
    pub fn unique_hosts(&self, default_port: u16) -> Result<&[HostPort]> {
        for (i, host) in self.hosts.iter().enumerate() {
            let address = host.to_socket_string(default_port);
            if self.hosts[..i]
                .iter()
                .any(|earlier| earlier.to_socket_string(default_port) == address)
            {
                return Err(self.invalid(format!("{address} is listed twice")));
            }
        }
        Ok(&self.hosts)
    }

    /// An error about this URL, with the password redacted.
    pub fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::InvalidUrl {
            url: self.redacted.clone(),
            reason: reason.into(),
        }
    }

    /// The query options, checked against the names the backend knows.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownOption`] for a name not in `known`, [`Error::InvalidUrl`] for a name
    /// given twice.
    pub fn options(&self, known: &[&str]) -> Result<Options> {
        for (i, (name, _)) in self.query.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(Error::UnknownOption {
                    scheme: self.scheme.clone(),
                    name: name.clone(),
                    known: known.iter().map(|k| (*k).to_owned()).collect(),
                });
            }
            if self.query[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(self.invalid(format!("option {name:?} is given twice")));
            }
        }
        Ok(Options {
            pairs: self.query.clone(),
        })
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionUrl")
            .field(&self.redacted)
            .finish()
    }
}

impl fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// How long connecting to a server may take, unless a URL's `connect_timeout` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a request may wait for its answer, unless a URL's `response_timeout` says
/// otherwise.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What [`Timeouts::call`] adds to the connect and response timeouts: room for a reconnect
/// that was already under way when the call started.
pub const CALL_MARGIN: Duration = Duration::from_millis(100);

/// The two limits of every networked backend, from its URL's `connect_timeout` and
/// `response_timeout` options (1 s each by default), and the one bound they put on a call.
/// A backend keeps one of these and derives every limit of its own from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long connecting may take.
    pub connect: Duration,
    /// How long a request may wait for its answer.
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            response: DEFAULT_RESPONSE_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// The options they are read from; add them to a backend's list of known options.
    pub const OPTIONS: [&'static str; 2] = ["connect_timeout", "response_timeout"];

    /// Reads `connect_timeout` and `response_timeout`, each a timeout as
    /// [`Options::timeout`] takes it, defaulting to 1 s.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] as for [`Options::timeout`].
    pub fn from_options(options: &Options) -> Result<Self> {
        Ok(Timeouts {
            connect: options.timeout("connect_timeout", DEFAULT_CONNECT_TIMEOUT)?,
            response: options.timeout("response_timeout", DEFAULT_RESPONSE_TIMEOUT)?,
        })
    }

    /// The longest one call may take, answered or not: one connect attempt, one answer, and
    /// [`CALL_MARGIN`]. A server that is down fails a call within this.
    pub fn call(&self) -> Duration {
        self.connect
            .saturating_add(self.response)
            .saturating_add(CALL_MARGIN)
    }
}

/// The longest timeout a URL option may give: a day.
pub const MAX_OPTION_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The query options of a URL, already checked for unknown names. Typed getters parse them.
#[derive(Debug, Clone)]
pub struct Options {
    pairs: Vec<(String, String)>,
}

impl Options {
    /// The raw value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A duration: `250ms`, `2s`, `1.5s`, `3m`, or a bare number of seconds.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when the value does not parse.
    pub fn duration(&self, name: &str) -> Result<Option<Duration>> {
        self.get(name)
            .map(|raw| {
                parse_duration(raw).ok_or_else(|| {
                    Error::invalid_option(
                        name,
                        format!("{raw:?} is not a duration such as 250ms, 2s or 1.5"),
                    )
                })
            })
            .transpose()
    }

    /// A duration that must be longer than zero and at most [`MAX_OPTION_TIMEOUT`] (a
    /// timeout), or `default` when absent. The bound keeps every sum of timeouts that a
    /// backend computes far from overflowing.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when the value does not parse, is zero, or is too long.
    pub fn timeout(&self, name: &str, default: Duration) -> Result<Duration> {
        match self.duration(name)? {
            None => Ok(default),
            Some(d) if d.is_zero() => Err(Error::invalid_option(name, "must be longer than zero")),
            Some(d) if d > MAX_OPTION_TIMEOUT => Err(Error::invalid_option(
                name,
                format!("{d:?} is longer than the {MAX_OPTION_TIMEOUT:?} a timeout may be"),
            )),
            Some(d) => Ok(d),
        }
    }

    /// An unsigned integer.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when the value does not parse.
    pub fn u64(&self, name: &str) -> Result<Option<u64>> {
        self.get(name)
            .map(|raw| {
                raw.parse().map_err(|_| {
                    Error::invalid_option(name, format!("{raw:?} is not a whole number"))
                })
            })
            .transpose()
    }

    /// A boolean: `true`/`false`, `yes`/`no`, `1`/`0`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when the value does not parse.
    pub fn bool(&self, name: &str) -> Result<Option<bool>> {
        self.get(name)
            .map(|raw| match raw {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" => Ok(false),
                _ => Err(Error::invalid_option(
                    name,
                    format!("{raw:?} is not true or false"),
                )),
            })
            .transpose()
    }
}

/// Replaces the password in `url` (if any) by `***`. Works on any string, so that messages
/// about malformed URLs stay clean too: the user information runs from after `scheme://` (or
/// `scheme:` when the slashes are missing) to the last `@`, and everything after its first `:`
/// is hidden; without the slashes, all of it is. It may hide more than the password (an `@`
/// later in the string), never less.
pub fn redact_url(url: &str) -> String {
    let Some(colon) = url.find(':') else {
        return url.to_owned();
    };
    let (start, slashes) = if url[colon..].starts_with("://") {
        (colon + 3, true)
    } else {
        (colon + 1, false)
    };
    let Some(at) = url[start..].rfind('@').map(|at| start + at) else {
        return url.to_owned();
    };
    match url[start..at].find(':') {
        Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[at..]),
        None if !slashes => format!("{}***{}", &url[..start], &url[at..]),
        None => url.to_owned(),
    }
}

/// The lowercased scheme of `url`, checked against RFC 3986's scheme grammar.
pub(crate) fn scheme_of(url: &str) -> std::result::Result<String, String> {
    // The scheme ends at the first `:`, which must start `://`. Looking for `://` anywhere
    // instead would take a password's `:` for the scheme's.
    let expected = || "expected scheme://..., e.g. memory:// or redis://localhost".to_owned();
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(expected());
    };
    if !rest.starts_with("//") {
        return Err(expected());
    }
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if valid {
        Ok(scheme.to_ascii_lowercase())
    } else if scheme.contains('@') {
        // Text before an `@` may be a secret.
        Err("the URL does not start with a valid scheme".to_owned())
    } else {
        Err(format!("{scheme:?} is not a valid URL scheme"))
    }
}

fn decode(raw: &str) -> std::result::Result<String, std::str::Utf8Error> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
}

fn parse_host(raw: &str) -> std::result::Result<HostPort, String> {
    let (host, port) = if let Some(bracketed) = raw.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in host {raw:?}"))?;
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
        {
            return Err(format!("{host:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("expected :port after ]{after}"))?,
            ),
        };
        (host, port)
    } else {
        let (host, port) = match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        };
        if host.is_empty() {
            return Err(format!("empty host in {raw:?}"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        {
            return Err(format!("{host:?} is not a host name or address"));
        }
        (host, port)
    };
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
            Ok(port) => Ok(port),
        })
        .transpose()?;
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

fn parse_duration(raw: &str) -> Option<Duration> {
    let (number, unit_secs) = if let Some(n) = raw.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = raw.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = raw.strip_suffix('m') {
        (n, 60.0)
    } else {
        (raw, 1.0)
    };
    let value: f64 = number.parse().ok()?;
    Duration::try_from_secs_f64(value * unit_secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_listed_twice_is_refused_with_or_without_its_default_port() {
        let url = ConnectionUrl::parse("x://a,b:2,[::1]").unwrap();
        assert_eq!(url.unique_hosts(1).unwrap().len(), 3);
        for twice in ["x://a:1,a", "x://a,b,a", "x://[::1]:7,[::1]:7"] {
            let url = ConnectionUrl::parse(twice).unwrap();
            match url.unique_hosts(1) {
                Err(Error::InvalidUrl { reason, .. }) => {
                    assert!(reason.ends_with("is listed twice"), "{twice}: {reason}");
                }
                other => panic!("{twice}: {other:?}"),
            }
        }
    }

    #[test]
    fn timeouts_default_to_a_second_each_and_bound_a_call() {
        let none = ConnectionUrl::parse("x://").unwrap();
        let timeouts = Timeouts::from_options(&none.options(&Timeouts::OPTIONS).unwrap()).unwrap();
        assert_eq!(timeouts, Timeouts::default());
        assert_eq!(timeouts.call(), Duration::from_millis(2100));
        let given = ConnectionUrl::parse("x://?connect_timeout=250ms&response_timeout=2").unwrap();
        let timeouts = Timeouts::from_options(&given.options(&Timeouts::OPTIONS).unwrap()).unwrap();
        assert_eq!(
            (timeouts.connect, timeouts.response),
            (Duration::from_millis(250), Duration::from_secs(2))
        );
        let zero = ConnectionUrl::parse("x://?response_timeout=0").unwrap();
        assert!(matches!(
            Timeouts::from_options(&zero.options(&Timeouts::OPTIONS).unwrap()),
            Err(Error::InvalidOption { .. })
        ));
    }

    #[test]
    fn parses_every_part() {
        let url = ConnectionUrl::parse("Redis://al%40ice:p%3Ass@h1:1,[::1]:2,h3/0?timeout=2s&x=")
            .unwrap();
        assert_eq!(url.scheme(), "redis");
        assert_eq!(url.username(), Some("al@ice"));
        assert_eq!(url.password().unwrap().expose(), "p:ss");
        assert_eq!(
            url.hosts(),
            &[
                HostPort {
                    host: "h1".into(),
                    port: Some(1)
                },
                HostPort {
                    host: "::1".into(),
                    port: Some(2)
                },
                HostPort {
                    host: "h3".into(),
                    port: None
                },
            ]
        );
        assert_eq!(url.hosts()[1].to_socket_string(9), "[::1]:2");
        assert_eq!(url.hosts()[2].to_socket_string(9), "h3:9");
        assert_eq!(url.path(), "/0");
        let options = url.options(&["timeout", "x"]).unwrap();
        assert_eq!(
            options.duration("timeout").unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(options.get("x"), Some(""));
    }

    #[test]
    fn empty_authority_and_unix_paths() {
        let url = ConnectionUrl::parse("memory://").unwrap();
        assert!(url.hosts().is_empty());
        assert_eq!(url.path(), "");
        let url = ConnectionUrl::parse("redis+unix:///run/redis.sock?db=2").unwrap();
        assert!(url.hosts().is_empty());
        assert_eq!(url.path(), "/run/redis.sock");
        assert_eq!(url.options(&["db"]).unwrap().u64("db").unwrap(), Some(2));
    }

    #[test]
    fn malformed_urls_are_typed_errors() {
        for bad in [
            "localhost:6379",
            "://x",
            "1redis://x",
            "redis://h:port",
            "redis://h:0",
            "redis://h:70000",
            "redis://[::1",
            "redis://[zz]:1",
            "redis://h1,,h2",
            "redis://ho st",
            "redis://h#frag",
            "redis://h/%ff",
        ] {
            match ConnectionUrl::parse(bad) {
                Err(Error::InvalidUrl { .. }) => {}
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_and_repeated_options_are_refused() {
        let url = ConnectionUrl::parse("memory://?colour=red").unwrap();
        match url.options(&["timeout"]) {
            Err(Error::UnknownOption { name, known, .. }) => {
                assert_eq!(name, "colour");
                assert_eq!(known, vec!["timeout".to_owned()]);
            }
            other => panic!("{other:?}"),
        }
        let url = ConnectionUrl::parse("memory://?timeout=1&timeout=2").unwrap();
        assert!(matches!(
            url.options(&["timeout"]),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn bad_option_values_are_typed_errors() {
        let url = ConnectionUrl::parse("x://?t=soon&n=-1&b=maybe").unwrap();
        let options = url.options(&["t", "n", "b"]).unwrap();
        assert!(matches!(
            options.duration("t"),
            Err(Error::InvalidOption { .. })
        ));
        assert!(matches!(options.u64("n"), Err(Error::InvalidOption { .. })));
        assert!(matches!(
            options.bool("b"),
            Err(Error::InvalidOption { .. })
        ));
        assert_eq!(options.duration("absent").unwrap(), None);
        let url = ConnectionUrl::parse("x://?t=0&u=2s").unwrap();
        let options = url.options(&["t", "u"]).unwrap();
        assert!(matches!(
            options.timeout("t", Duration::from_secs(1)),
            Err(Error::InvalidOption { .. })
        ));
        assert_eq!(
            options.timeout("u", Duration::from_secs(1)).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(
            options.timeout("v", Duration::from_secs(1)).unwrap(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration("1e400"), None);
    }

    #[test]
    fn passwords_never_show() {
        let raw = "redis://user:hunter2@host:6379/0";
        let url = ConnectionUrl::parse(raw).unwrap();
        for shown in [
            format!("{url:?}"),
            url.to_string(),
            format!("{:?}", url.password()),
            url.invalid("x").to_string(),
            format!("{:?}", url.invalid("x")),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(url.redacted(), "redis://user:***@host:6379/0");
        // Even URLs that do not parse are redacted in their error.
        let err = ConnectionUrl::parse("redis://:hunter2@ho st").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(redact_url("redis://:p@h"), "redis://:***@h");
        assert_eq!(redact_url("redis://u@h/x@y"), "redis://u@h/x@y");
        assert_eq!(redact_url("no scheme"), "no scheme");
    }

    mod never_panics_nor_leaks {
        use proptest::prelude::*;

        use super::super::*;

        /// Every character that has a meaning in a URL, and some that have none.
        const RESERVED: &str = ":/?#[]@!$&'()*+,;=% \"<>\\^`{|}~\t\n";

        fn password() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    proptest::sample::select(RESERVED.chars().collect::<Vec<_>>()),
                    any::<char>(),
                ],
                0..12,
            )
            .prop_map(|chars| format!("Zq{}Xj", chars.into_iter().collect::<String>()))
        }

        fn shown(url: &str) -> Vec<String> {
            let mut shown = vec![redact_url(url)];
            match ConnectionUrl::parse(url) {
                Ok(parsed) => {
                    shown.push(format!("{parsed:?}"));
                    shown.push(parsed.to_string());
                    shown.push(parsed.invalid("x").to_string());
                    shown.push(format!("{:?}", parsed.options(&[])));
                }
                Err(error) => {
                    shown.push(error.to_string());
                    shown.push(format!("{error:?}"));
                }
            }
            shown
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn any_string_parses_or_is_refused(url in ".{0,80}") {
                let _ = shown(&url);
            }

            #[test]
            fn a_password_never_shows(
                scheme in "(redis|rediss|memcache|redlock|x)",
                slashes in any::<bool>(),
                user in "[a-z]{0,4}",
                password in password(),
                rest in ".{0,30}",
            ) {
                let separator = if slashes { "://" } else { ":" };
                let url = format!("{scheme}{separator}{user}:{password}@{rest}");
                for text in shown(&url) {
                    prop_assert!(!text.contains(&password), "{url:?} showed as {text:?}");
                }
            }

            #[test]
            fn option_values_parse_or_are_refused(value in ".{0,24}") {
                let url = format!("x://h?v={}", value.replace(['&', '#', '@'], ""));
                if let Ok(parsed) = ConnectionUrl::parse(&url) {
                    let options = parsed.options(&["v"]).expect("known");
                    let _ = options.duration("v");
                    let _ = options.timeout("v", Duration::from_secs(1));
                    let _ = options.u64("v");
                    let _ = options.bool("v");
                }
            }

            #[test]
            fn timeouts_are_bounded(seconds in any::<f64>()) {
                let url = format!("x://h?t={seconds}");
                let parsed = ConnectionUrl::parse(&url).expect("parse");
                if let Ok(timeout) = parsed.options(&["t"]).expect("known").timeout("t", Duration::from_secs(1)) {
                    prop_assert!(timeout > Duration::ZERO && timeout <= MAX_OPTION_TIMEOUT);
                }
            }
        }

        #[test]
        fn passwords_with_reserved_characters_are_parsed_and_hidden() {
            let url = ConnectionUrl::parse("redis://app:Se/cr?e#t@Pw@host:6379/2").expect("parse");
            assert_eq!(url.password().map(Password::expose), Some("Se/cr?e#t@Pw"));
            assert_eq!(url.hosts()[0].host, "host");
            assert_eq!(url.path(), "/2");
            assert_eq!(url.to_string(), "redis://app:***@host:6379/2");
            assert_eq!(redact_url("redis:app:pw@h"), "redis:app:***@h");
            assert_eq!(redact_url("app:pw@h"), "app:***@h");
        }
    }
}
