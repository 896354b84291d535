//! The Lua scripts: each runs atomically on the server, which is what makes acquire, release
//! and extend safe. Public so that they can be read, and benchmarked on their own. They are sent by `EVALSHA`; the `redis` crate loads a script again when the
//! server answers `NOSCRIPT` (after `SCRIPT FLUSH` or a restart).

use std::sync::LazyLock;

use redis::Script;

/// Acquire. KEYS: lock, fence counter. ARGV: token, TTL in ms, "1" to give a fencing token.
///
/// One atomic `SET NX PX`; on success the fence counter (a key without TTL, so it survives the
/// lock's expiry and eviction) is incremented. If the key already holds our token, an earlier
/// attempt of this same acquire succeeded but its reply was lost: the hold is ours, with a new
/// TTL and its fence. Otherwise the reply carries the holder's remaining TTL, so the waiter
/// knows the longest it may have to wait, in the same round trip. Replies `{1, fence}` or
/// `{0, pttl}` (fence 0 when not fencing; pttl -1 for a key without TTL).
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if ARGV[3] == '1' then
    return {1, redis.call('INCR', KEYS[2])}
  end
  return {1, 0}
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, redis.call('PTTL', KEYS[1])}
",
    )
});

/// Release. KEYS: lock. ARGV: token, notice channel.
///
/// Deletes the lock only if it still holds our token (pylock 0.4's unconditional `DEL` freed
/// the next holder's lock), then announces the release to waiters. Replies 1 if we held it.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], '')
  return 1
end
return 0
",
    )
});

/// Extend. KEYS: lock. ARGV: token, TTL in ms.
///
/// Sets a new TTL only if the lock still holds our token. Replies 1 if we held it.
pub static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Inspect. KEYS: lock, fence counter. Replies `{0}` for a free lock, or `{1, pttl, fence}`
/// (pttl -1 for a key without TTL; fence 0 when fencing is off). For operators only: the
/// answer may be stale when it arrives.
pub static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then
  return {0}
end
return {1, pttl, tonumber(redis.call('GET', KEYS[2]) or '0')}
",
    )
});

/// Forced release. KEYS: lock. ARGV: notice channel.
///
/// Deletes the lock whoever holds it (an operator's action) and wakes waiters. Replies 1 if
/// there was a lock.
pub static FORCE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('DEL', KEYS[1]) == 1 then
  redis.call('PUBLISH', ARGV[1], '')
  return 1
end
return 0
",
    )
});
