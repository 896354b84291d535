//! The Lua scripts: each runs atomically on the server, which is what makes acquire, release
//! and extend safe. Public so that they can be read, and benchmarked on their own. They are
//! sent by `EVALSHA`; the `redis` crate loads a script again when the server answers
//! `NOSCRIPT` (after `SCRIPT FLUSH` or a restart).

use std::sync::LazyLock;

use redis::Script;

/// Acquire, for one lock or a batch of them (see [`crate::coalesce`](crate)). KEYS: the lock
/// and its fence counter, for each lock. ARGV: "1" to give fencing tokens, then the token and
/// the TTL in ms for each lock. Replies two integers per lock, in order: `1, fence` or
/// `0, pttl` (fence 0 when not fencing; pttl -1 for a key without TTL).
///
/// One atomic `SET NX PX`; on success the fence counter (a key without TTL, so it survives the
/// lock's expiry and eviction) is incremented. If the key already holds our token, an earlier
/// attempt of this same acquire succeeded but its reply was lost: the hold is ours, with a new
/// TTL and its fence. Otherwise the reply carries the holder's remaining TTL, so the waiter
/// knows the longest it may have to wait, in the same round trip.
///
/// A failed attempt also marks the lock as waited for, by appending `+` to the holder's token
/// (`APPEND` keeps the TTL): only then does its release publish a notice. Most releases have
/// no waiter, and `PUBLISH` (on a cluster, sent to every node) is a good part of a release's
/// cost. A waiter subscribes before the attempt that marks, so it hears the release.
///
/// Running it again for the
/// same tokens gives the same answers, which is what lets a batch that failed part-way (a key
/// of another type) be retried lock by lock.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local replies = {}
local fencing = ARGV[1] == '1'
for i = 1, #KEYS / 2 do
  local lock, fence, token, ttl = KEYS[2 * i - 1], KEYS[2 * i], ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('SET', lock, token, 'NX', 'PX', ttl) then
    replies[2 * i - 1], replies[2 * i] = 1, fencing and redis.call('INCR', fence) or 0
  else
    local holder = redis.call('GET', lock)
    if holder == token or holder == token .. '+' then
      redis.call('PEXPIRE', lock, ttl)
      replies[2 * i - 1], replies[2 * i] = 1, tonumber(redis.call('GET', fence) or '0')
    else
      if holder and #holder == #token then
        redis.call('APPEND', lock, '+')
      end
      replies[2 * i - 1], replies[2 * i] = 0, redis.call('PTTL', lock)
    end
  end
end
return replies
",
    )
});

/// Release, for one lock or a batch of them. KEYS: the locks. ARGV: the token and the notice
/// channel, for each lock. Replies per lock, in order: 1 if we held it, else 0.
///
/// Deletes a lock only if it still holds our token (pylock 0.4's unconditional `DEL` freed
/// the next holder's lock), marked or not, and announces the release on the lock's channel if
/// a waiter marked it. All reads come before any write, so a batch the server refuses (a key
/// of another type) has changed nothing and can be retried lock by lock.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local held = {}
for i = 1, #KEYS do
  local holder, token = redis.call('GET', KEYS[i]), ARGV[2 * i - 1]
  if holder == token then
    held[i] = 1
  elseif holder == token .. '+' then
    held[i] = 2
  else
    held[i] = 0
  end
end
for i = 1, #KEYS do
  if held[i] > 0 then
    redis.call('DEL', KEYS[i])
    if held[i] == 2 then
      redis.call('PUBLISH', ARGV[2 * i], '')
    end
    held[i] = 1
  end
end
return held
",
    )
});

/// Extend. KEYS: lock. ARGV: token, TTL in ms.
///
/// Sets a new TTL only if the lock still holds our token, marked or not. Replies 1 if we held
/// it.
pub static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or holder == ARGV[1] .. '+' then
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
