//! [`MemcacheBackend`]: the lock primitives in memcached's meta protocol.

use std::time::Duration;

use pylock_core::Result;
use pylock_core::raw::{Attempt, Capabilities, Holder, LockBackend, Token, async_trait};

use crate::config::MemcacheConfig;
use crate::connection::Connection;
use crate::errors::refused;
use crate::keys::encode;
use crate::protocol::{self, Request, Response};

/// memcached reads an expiry over 30 days as a Unix timestamp, not a duration.
pub(crate) const MAX_EXPIRY_SECS: u64 = 30 * 24 * 60 * 60;

/// The longest lock TTL this backend accepts: 30 days (beyond which memcached reads an expiry
/// as a Unix time) minus the second added for memcached's clock tick.
pub const MAX_TTL: Duration = Duration::from_secs(MAX_EXPIRY_SECS - 1);

/// Locks on one memcached server or a pool of them.
///
/// - acquire: `ms <key> <len> T<ttl> ME` (add: store only if absent) pipelined with
///   `mg <key> v t` in the same round trip, which on failure gives the holder's remaining TTL,
///   and recognises our own token if an earlier attempt's answer was lost;
/// - release: `mg <key> v c` (value and CAS id), then, if the value is our token,
///   `md <key> C<cas>`: deleted only if nobody changed the item in between. A plain `get` +
///   `delete` would be a race;
/// - extend: `mg <key> v c`, then `ms <key> ... T<ttl> C<cas>`: a new TTL only if the item is
///   still our unchanged token. A plain `touch` has no owner check.
///
/// memcached has no notifications (waiters poll with the core's jittered backoff) and no
/// atomic counter next to `add`, so there are no fencing tokens.
///
/// TTLs are whole seconds on the server, rounded up, plus one for memcached's clock tick (see
/// the [crate docs](crate)). Connections are made on first use
/// and again after a failure; nothing blocks the executor.
#[derive(Debug)]
pub struct MemcacheBackend {
    config: MemcacheConfig,
    servers: Vec<Connection>,
}

/// The expiry sent to memcached for a lock TTL: whole seconds rounded *up*, plus one, since
/// memcached counts time in ticks of its own one-second clock, so an item stored for `n`
/// seconds may disappear up to a second early. The lock then lives at least `ttl` (never
/// less, which the guard's `remaining()` relies on) and at most one second longer than
/// `ttl` rounded up.
pub(crate) fn ttl_secs(ttl: Duration) -> u64 {
    let secs = ttl.as_nanos().div_ceil(1_000_000_000);
    u64::try_from(secs).unwrap_or(u64::MAX).saturating_add(1)
}

impl MemcacheBackend {
    /// A backend for the servers of a `memcache://` URL. It connects on first use.
    ///
    /// # Errors
    ///
    /// As for [`MemcacheConfig::from_url`].
    pub fn from_url(url: &str) -> Result<Self> {
        Ok(Self::new(MemcacheConfig::from_url(url)?))
    }

    /// A backend for `config`. It connects on first use.
    pub fn new(config: MemcacheConfig) -> Self {
        let servers = config
            .servers
            .iter()
            .map(|addr| Connection::new(addr.clone(), config.timeouts))
            .collect();
        MemcacheBackend { config, servers }
    }

    /// The backend's settings.
    pub fn config(&self) -> &MemcacheConfig {
        &self.config
    }

    /// One round trip (`mn`) to the server that holds `key`, e.g. as a health check.
    ///
    /// # Errors
    ///
    /// [`pylock_core::Error::Unavailable`] when the server cannot be reached.
    pub async fn ping(&self, key: &str) -> Result<()> {
        self.call(&encode(key), &protocol::noop()).await.map(drop)
    }

    /// The server of `key`: a jump consistent hash (Lamping and Veach) of the key's FNV-1a
    /// hash, the same in every process with the same server list.
    fn server(&self, key: &str) -> &Connection {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in key.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let buckets = self.servers.len() as i64;
        let (mut bucket, mut next) = (-1i64, 0i64);
        while next < buckets {
            bucket = next;
            hash = hash.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
            next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((hash >> 33) + 1) as f64)) as i64;
        }
        &self.servers[usize::try_from(bucket).unwrap_or(0)]
    }

    /// Sends a request for the (encoded) key `key`. A connection that dropped under the call
    /// is replaced and the call tried once more: every operation here is safe to repeat (see
    /// the Redis backend for the reasoning; a repeated release reports a lost lock).
    async fn call(&self, key: &str, request: &Request) -> Result<Vec<Response>> {
        let server = self.server(key);
        let first = server.call(request).await;
        let responses = match first {
            Err(error) if error.is_transient() && !is_timeout(&error) => {
                tracing::debug!(%error, "pylock: memcached connection dropped, retrying once");
                server.call(request).await?
            }
            other => other?,
        };
        for response in &responses {
            if let Response::Error(line) = response {
                return Err(refused(server.addr(), line));
            }
        }
        Ok(responses)
    }

    /// The item's value and CAS id if it holds `token`.
    async fn owned_cas(&self, key: &str, token: &str) -> Result<Option<u64>> {
        let responses = self.call(key, &protocol::get_with_cas(key)).await?;
        Ok(match responses.first() {
            Some(Response::Value {
                data,
                cas: Some(cas),
                ..
            }) if data == token.as_bytes() => Some(*cas),
            _ => None,
        })
    }
}

/// The longest an item with `ttl` whole seconds left (memcached's `t` flag; -1 for none) may
/// still live: one more second, for memcached's clock tick.
fn remaining(ttl: Option<i64>) -> Option<Duration> {
    ttl.and_then(|t| u64::try_from(t).ok())
        .map(|t| Duration::from_secs(t + 1))
}

fn is_timeout(error: &pylock_core::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
}

#[async_trait]
impl LockBackend for MemcacheBackend {
    fn name(&self) -> &'static str {
        "memcache"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_ttl_granularity(Duration::from_secs(1))
            .with_max_ttl(Some(MAX_TTL))
            .with_inspection(true)
    }

    async fn try_acquire(&self, key: &str, token: &Token, ttl: Duration) -> Result<Attempt> {
        let key = encode(key);
        let token = token.to_hex();
        let responses = self
            .call(&key, &protocol::add_then_get(&key, &token, ttl_secs(ttl)))
            .await?;
        match responses.as_slice() {
            [Response::Stored, _] => Ok(Attempt::Acquired { fence: None }),
            [Response::NotStored, Response::Value { data, .. }] if data == token.as_bytes() => {
                // An earlier attempt of this acquire stored it and its answer was lost. The
                // hold is ours; give it the TTL of this attempt, as the guard will assume.
                match self.extend_encoded(&key, &token, ttl).await? {
                    true => Ok(Attempt::Acquired { fence: None }),
                    false => Ok(Attempt::Held { remaining: None }),
                }
            }
            [Response::NotStored, Response::Value { ttl, .. }] => Ok(Attempt::Held {
                remaining: remaining(*ttl),
            }),
            // Released between the add and the get: try again soon.
            [Response::NotStored, Response::Miss] => Ok(Attempt::Held {
                remaining: Some(Duration::ZERO),
            }),
            other => Err(unexpected(self, &key, other)),
        }
    }

    async fn release(&self, key: &str, token: &Token) -> Result<bool> {
        let key = encode(key);
        let Some(cas) = self.owned_cas(&key, &token.to_hex()).await? else {
            return Ok(false);
        };
        let responses = self.call(&key, &protocol::delete_if_cas(&key, cas)).await?;
        match responses.as_slice() {
            [Response::Stored] => Ok(true),
            // Changed (EX) or gone (NF) since we read it: not ours to delete any more.
            [Response::Exists | Response::NotFound] => Ok(false),
            other => Err(unexpected(self, &key, other)),
        }
    }

    async fn extend(&self, key: &str, token: &Token, ttl: Duration) -> Result<bool> {
        self.extend_encoded(&encode(key), &token.to_hex(), ttl)
            .await
    }

    async fn inspect(&self, key: &str) -> Result<Option<Holder>> {
        let key = encode(key);
        let responses = self.call(&key, &protocol::get_with_ttl(&key)).await?;
        match responses.as_slice() {
            [Response::Value { data, ttl, .. }] => {
                check_lock_shape(&key, data, *ttl)?;
                Ok(Some(Holder::new(remaining(*ttl), None)))
            }
            [Response::Miss] => Ok(None),
            other => Err(unexpected(self, &key, other)),
        }
    }

    async fn force_release(&self, key: &str) -> Result<bool> {
        let key = encode(key);
        let responses = self
            .call(&key, &protocol::get_with_cas_and_ttl(&key))
            .await?;
        let cas = match responses.as_slice() {
            [Response::Value { data, cas, ttl }] => {
                check_lock_shape(&key, data, *ttl)?;
                cas.ok_or_else(|| unexpected(self, &key, &responses))?
            }
            [Response::Miss] => return Ok(false),
            other => return Err(unexpected(self, &key, other)),
        };
        // Deleted only if the item is still the lock just checked: a new holder's lock, set
        // in between, is released by nobody but its owner.
        let responses = self.call(&key, &protocol::delete_if_cas(&key, cas)).await?;
        match responses.as_slice() {
            [Response::Stored] => Ok(true),
            [Response::NotFound | Response::Exists] => Ok(false),
            other => Err(unexpected(self, &key, other)),
        }
    }
}

/// Operators' tools act only on items that are locks of ours: an owner token (32 lowercase
/// hex digits) with a TTL.
fn check_lock_shape(key: &str, data: &[u8], ttl: Option<i64>) -> Result<()> {
    let token = data.len() == 32
        && data
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    let found = if !token {
        "an item that is not an owner token"
    } else if ttl.is_none_or(|t| t < 0) {
        "an item without a TTL"
    } else {
        return Ok(());
    };
    Err(pylock_core::Error::NotALock {
        key: key.to_owned(),
        found: found.to_owned(),
    })
}

impl MemcacheBackend {
    async fn extend_encoded(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let Some(cas) = self.owned_cas(key, token).await? else {
            return Ok(false);
        };
        let responses = self
            .call(key, &protocol::set_if_cas(key, token, ttl_secs(ttl), cas))
            .await?;
        // The second response answers the `mg` that carries the request's tag.
        match responses.as_slice() {
            [Response::Stored, _] => Ok(true),
            [
                Response::Exists | Response::NotFound | Response::NotStored,
                _,
            ] => Ok(false),
            other => Err(unexpected(self, key, other)),
        }
    }
}

fn unexpected(backend: &MemcacheBackend, key: &str, responses: &[Response]) -> pylock_core::Error {
    crate::errors::protocol(
        backend.server(key).addr(),
        crate::protocol::ProtocolError(format!("{responses:?}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_and_add_a_tick() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(1)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(1001)), 3);
        assert_eq!(ttl_secs(MAX_TTL), MAX_EXPIRY_SECS);
    }

    #[test]
    fn a_key_always_goes_to_the_same_server() {
        let backend = MemcacheBackend::from_url("memcache://a:1,b:2,c:3,d:4").unwrap();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let key = format!("pylock:{i}");
            let server = backend.server(&key).addr().to_owned();
            assert_eq!(backend.server(&key).addr(), server, "stable");
            seen.insert(server);
        }
        assert_eq!(seen.len(), 4, "keys spread over every server");
        // The same list in another process picks the same server.
        let again = MemcacheBackend::from_url("memcache://a:1,b:2,c:3,d:4").unwrap();
        assert_eq!(
            again.server("pylock:7").addr(),
            backend.server("pylock:7").addr()
        );
    }
}
