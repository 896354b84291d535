//! The Lua scripts: each runs atomically on the server, which is what makes acquire, release
//! and extend safe. Public so that they can be read, and benchmarked on their own. They are
//! sent by `EVALSHA`; the `redis` crate loads a script again when the server answers
//! `NOSCRIPT` (after `SCRIPT FLUSH` or a restart).
//!
//! Every script is framed by [`answering`]: its last argument is a tag of the call, and its
//! reply is `{tag, answer}`, where `answer` is what each script's documentation describes
//! (its `ARGV` do not include the tag). A connection matches replies to requests by their
//! order alone; if a request is lost on the way while the connection stays up (a faulty
//! proxy), every later reply answers the request before it, and an acquire could be handed
//! another acquire's success. The tag makes such a reply an error, never a lock.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use redis::{Script, Value};

/// `body` (a script that reads its own arguments from `ARGV` and returns its answer) framed
/// so that the caller's tag, its last argument, comes back with the answer: `{tag, answer}`
/// (`{tag}` alone when the answer is nil). The tag is taken out of `ARGV` first, so the body
/// sees only its own arguments.
pub fn answering(body: &str) -> String {
    format!(
        "local tag = table.remove(ARGV)\nlocal function answer()\n{body}\nend\nreturn {{tag, answer()}}\n"
    )
}

/// A tag for one call: unique among this process's calls, so a reply that carries another
/// call's tag is never taken for this one's.
pub(crate) fn next_tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The answer in a tagged reply `{tag, answer}` ([`answering`]; nil when
/// the reply is `{tag}` alone), or, if the reply is not tagged with `tag`, the reply as text
/// for the error.
pub(crate) fn untag(reply: Value, tag: &str) -> std::result::Result<Value, String> {
    match reply {
        Value::Array(mut values)
            if values.len() <= 2
                && matches!(values.first(), Some(Value::BulkString(echoed)) if echoed == tag.as_bytes()) =>
        {
            Ok(if values.len() == 2 {
                values.swap_remove(1)
            } else {
                Value::Nil
            })
        }
        other => Err(format!("{other:?}").chars().take(200).collect()),
    }
}

/// What a lock's value says, shared by every script that checks an owner: the owner's token,
/// then `+` if a waiter marked the lock (its release is announced), then, if a fair holder
/// took it with others in line, the token of the next in line, to whom the release is
/// announced without reading the line (a filler of `-` once that waiter left the line).
/// `held_by(holder, token)`: whether the value `holder` (`false` for no key) is `token`'s
/// lock, marked or not.
pub(crate) const HOLDER: &str = r"
local function held_by(holder, token)
  return holder == token or (holder and string.sub(holder, 1, #token + 1) == token .. '+')
end";

/// The fence of a new hold, shared by the acquire scripts: `give_fence(fence, ttl)` is the
/// counter plus one (`INCR`), or, for a counter that is gone, the server's clock in µs; the
/// counter gets the lock's TTL either way. Why that keeps fences increasing: [`ACQUIRE`].
const GIVE_FENCE: &str = r"
local function give_fence(fence, ttl)
  local given = redis.call('INCR', fence)
  if given == 1 then
    -- No counter: start from the clock, beyond every fence given before it was lost.
    local now = redis.call('TIME')
    given = tonumber(now[1]) * 1000000 + tonumber(now[2])
    redis.call('SET', fence, string.format('%d', given), 'PX', ttl)
  else
    redis.call('PEXPIRE', fence, ttl)
  end
  return given
end";

/// Acquire, for one lock or a batch of them (see [`crate::coalesce`](crate)). KEYS: the lock
/// and its fence counter, for each lock. ARGV: "1" to give fencing tokens, then the token,
/// the TTL in ms and "1" to mark the lock as waited for (others of the caller's process wait
/// for it), for each lock. Replies two integers per lock, in order: `1, fence` or
/// `0, pttl` (fence 0 when not fencing; pttl -1 for a key without TTL).
///
/// One atomic `SET NX PX`. On success, the fence is the lock's counter plus one (`INCR`),
/// and the counter gets the lock's TTL; a counter that is gone (a restart without
/// persistence, `FLUSHALL`, eviction, its TTL) starts again from the server's clock in
/// microseconds (`TIME`), not from 1. That keeps fences increasing: a counter started from
/// the clock grows by one per acquire, and acquires of one lock are more than a microsecond
/// apart (each needs a release between), so it never runs ahead of the clock, and a later
/// restart reads a later clock. The counter may expire, and does: no key outlives its lock
/// by more than the lock's TTL. What remains assumed: the server's clock does not go back
/// (and a promoted replica's clock is not behind its old master's by more than the failover
/// took). A counter left by an older pylock (a small number, no TTL) goes on from its value
/// and gets a TTL.
///
/// If the key already holds our token, an earlier attempt of this same acquire succeeded but
/// its reply was lost: the hold is ours, with a new TTL and its fence. Otherwise the reply
/// carries the holder's remaining TTL, so the waiter knows the longest it may have to wait,
/// in the same round trip.
///
/// A failed attempt also marks the lock as waited for, by appending `+` to the holder's token
/// (`APPEND` keeps the TTL): only then does its release publish a notice. A release wakes one
/// waiter per process; the one that gets the lock while others of its process still wait
/// sets it marked (the mark argument), so that the next release is announced too. Most
/// releases have no waiter, and `PUBLISH` (on a cluster, sent to every node) is a good part of
/// a release's cost. A waiter subscribes before the attempt that marks, so it hears the release.
///
/// Running it again for the same tokens gives the same answers, which is what lets a batch
/// that failed part-way (a key of another type) be retried lock by lock.
pub static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&answering(&format!(
        r"{HOLDER}{GIVE_FENCE}
local replies = {{}}
local fencing = ARGV[1] == '1'
for i = 1, #KEYS / 2 do
  local lock, fence = KEYS[2 * i - 1], KEYS[2 * i]
  local token, ttl, mark = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local value = token
  if mark == '1' then
    value = token .. '+'
  end
  if redis.call('SET', lock, value, 'NX', 'PX', ttl) then
    local given = 0
    if fencing then
      given = give_fence(fence, ttl)
    end
    replies[2 * i - 1], replies[2 * i] = 1, given
  else
    local holder = redis.call('GET', lock)
    if held_by(holder, token) then
      redis.call('PEXPIRE', lock, ttl)
      if fencing then
        redis.call('PEXPIRE', fence, ttl)
      end
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
"
    )))
});

/// Acquire on a Redlock node that guards against its own restarts. KEYS: the lock. ARGV:
/// token, TTL in ms, guard in ms, "1" to mark the lock as waited for. Replies `{1, 0}`
/// (acquired), `{0, pttl}` (held), or `{0, ms}` with a third element `1` while the node is
/// under its restart guard.
///
/// A node that restarted lost its locks (unless it persists every write), and until the
/// longest TTL in use has passed its vote could give a second client a majority while the
/// first still holds one: the Redlock restart rule. So a node grants nothing until `guard` ms
/// after it started (`uptime_in_seconds` of `INFO server`; the uptime, unlike a key, cannot
/// come back from an old snapshot). That uptime is a difference of whole-second clock
/// readings, up to a second more than the time really passed, so one second is taken off
/// it: the guard errs long, never short. It is read only when the lock is free (`INFO` and a
/// plain search in it cost about 1.8 us of server time); a held lock is answered as by
/// [`ACQUIRE`] for one lock, without fencing.
pub static REDLOCK_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&answering(&format!(
        r"{HOLDER}
local token = ARGV[1]
local holder = redis.call('GET', KEYS[1])
if not holder then
  local info = redis.call('INFO', 'server')
  local at = string.find(info, 'uptime_in_seconds:', 1, true)
  local uptime = at and tonumber(string.sub(info, at + 18, string.find(info, '\r', at, true) - 1))
  local uptime_ms = ((uptime or 0) - 1) * 1000
  local guarded = tonumber(ARGV[3]) - uptime_ms
  if guarded > 0 then
    return {{0, guarded, 1}}
  end
  if ARGV[4] == '1' then
    redis.call('SET', KEYS[1], token .. '+', 'PX', ARGV[2])
  else
    redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
  end
  return {{1, 0}}
end
if held_by(holder, token) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {{1, 0}}
end
if #holder == #token then
  redis.call('APPEND', KEYS[1], '+')
end
return {{0, redis.call('PTTL', KEYS[1])}}
"
    )))
});

/// Release, for one lock or a batch of them. KEYS: the lock and its fair line, for each
/// lock. ARGV: the token and the notice channel, for each lock. Replies per lock, in order:
/// 1 if we held it, else 0.
///
/// Deletes a lock only if it still holds our token (pylock 0.4's unconditional `DEL` freed
/// the next holder's lock), marked or not, and announces the release on the lock's channel if
/// a waiter marked it: the message is the token of the next fair waiter, so that only it
/// wakes, or empty (each process wakes one waiter). The next fair waiter is the one the lock's
/// value names after its mark (see [`FAIR_ACQUIRE`]), else the first in line. All reads come
/// before any write, so a batch the server refuses (a key of another type) has changed
/// nothing and can be retried lock by lock.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&answering(&format!(
        r"{HOLDER}{LINE}
local held, nexts = {{}}, {{}}
local locks = #KEYS / 2
for i = 1, locks do
  local holder, token = redis.call('GET', KEYS[2 * i - 1]), ARGV[2 * i - 1]
  if holder == token then
    held[i] = 1
  elseif held_by(holder, token) then
    held[i] = 2
    nexts[i] = string.sub(holder, #token + 2)
  else
    held[i] = 0
  end
end
for i = 1, locks do
  if held[i] > 0 then
    redis.call('DEL', KEYS[2 * i - 1])
    if held[i] == 2 then
      -- To the next fair waiter the value names, else to the first in line if there is a
      -- line, else to whoever listens.
      local next = nexts[i]
      if not string.find(next, '^%x+$') then
        next = first_in_line(KEYS[2 * i]) or ''
      end
      redis.call('PUBLISH', ARGV[2 * i], next)
    end
    held[i] = 1
  end
end
return held
"
    )))
});

/// Where a fair lock's line begins among the scores of its sorted set ([`line_key`]): 10^15,
/// a time in microseconds (September 2001), or in milliseconds some thirty thousand years
/// from now. Places are scored by arrival in microseconds, deadlines in milliseconds, so every
/// place scores above it and every deadline below it.
///
/// [`line_key`]: crate::keys::line_key
pub const PLACES_FROM: u64 = 1_000_000_000_000_000;

// The latest deadline a waiter can set (in the year 2096, with the longest patience pylock
// allows) scores below the first place; and places, from the clock in µs, are above it.
const _: () =
    assert!(4_000_000_000_000 + pylock_core::MAX_EXPIRES.as_millis() < PLACES_FROM as u128);
const _: () = assert!(PLACES_FROM < 1_700_000_000_000_000);

/// What the scripts that read a fair line share: `places_from` ([`PLACES_FROM`]), and
/// `first_in_line(line)`, the token of the first fair waiter in `line`, or nil. (The line is
/// read by `ZRANGEBYSCORE`, not `ZRANGE ... BYSCORE`, which needs Redis 6.2.)
const LINE: &str = r"
local places_from = '1000000000000000'
local function first_in_line(line)
  local first = redis.call('ZRANGEBYSCORE', line, places_from, '+inf', 'LIMIT', 0, 1)[1]
  return first and string.sub(first, 2)
end";

/// The command that counts the fair waiters in the line of the lock stored at `key` (for
/// tools and tests that watch a line): its places, `ZCOUNT`.
pub fn waiters_in_line(key: &str) -> redis::Cmd {
    let mut count = redis::cmd("ZCOUNT");
    count
        .arg(crate::keys::line_key(key))
        .arg(PLACES_FROM)
        .arg("+inf");
    count
}

/// A fair acquire attempt ([`LockBackend::try_acquire_fair`]). KEYS: the lock, its fence
/// counter, its line. ARGV: "1" to give fencing tokens, the token, the TTL in ms, the
/// patience in ms (at most [`MAX_EXPIRES`](pylock_core::MAX_EXPIRES), 100 years), the notice
/// channel. Replies as [`ACQUIRE`], and `{0, -3}` for a lock that is free but another
/// waiter's turn.
///
/// The line is one sorted set that holds two members per waiter: its place, `p` and the
/// token, scored by its arrival (the server's clock in µs, after everyone already in line),
/// and its deadline, `d` and the token, scored by the time in ms by which it must be heard
/// from again. Places score above [`PLACES_FROM`], deadlines below, so one range of scores
/// is the line in order and another the waiters that lapsed; a waiter joins and leaves with
/// one command for both.
///
/// A waiter first in line takes a free lock at once, marked if others wait behind it and
/// naming the next of them, so that its release is announced to that one without reading the
/// line (one command fewer per hand-off). Any other attempt joins the line or keeps its place
/// (its deadline moves on by the patience); if the lock is free, it drops the waiters whose
/// deadline passed and takes the lock only if it is then first in line. A lock found free
/// while another waiter is first is announced to that waiter (a lost wake-up, or a waiter
/// that left without a word, must not stop the line). The line vanishes twice the patience
/// after the last attempt.
///
/// [`LockBackend::try_acquire_fair`]: pylock_core::LockBackend::try_acquire_fair
pub static FAIR_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&answering(&format!(
        r"{HOLDER}{GIVE_FENCE}{LINE}
local lock, fence, line = KEYS[1], KEYS[2], KEYS[3]
local fencing, token, ttl = ARGV[1] == '1', ARGV[2], ARGV[3]
local patience, channel = tonumber(ARGV[4]), ARGV[5]
local place, deadline = 'p' .. token, 'd' .. token
-- The common case, a waiter woken for its turn: first in line, the lock free. It takes the
-- lock without a sign of life (it leaves the line) or a look for lapsed waiters (it is
-- first): half the server's work of the general path below.
local firsts = redis.call('ZRANGEBYSCORE', line, places_from, '+inf', 'LIMIT', 0, 2)
if firsts[1] == place then
  local value = token
  if firsts[2] then
    value = token .. '+' .. string.sub(firsts[2], 2)
  end
  if redis.call('SET', lock, value, 'NX', 'PX', ttl) then
    redis.call('ZREM', line, place, deadline)
    local given = 0
    if fencing then
      given = give_fence(fence, ttl)
    end
    return {{1, given}}
  end
end
local holder = redis.call('GET', lock)
if held_by(holder, token) then
  -- An earlier attempt of ours got it and its answer was lost.
  redis.call('PEXPIRE', lock, ttl)
  redis.call('ZREM', line, place, deadline)
  local given = 0
  if fencing then
    redis.call('PEXPIRE', fence, ttl)
    given = tonumber(redis.call('GET', fence) or '0')
  end
  return {{1, given}}
end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- A sign of life; a new deadline means new in line (a waiter joins and leaves with both).
if redis.call('ZADD', line, now_ms + patience, deadline) == 1 then
  -- After everyone already in line, even within the same microsecond.
  local arrival = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = redis.call('ZREVRANGEBYSCORE', line, '+inf', places_from, 'WITHSCORES', 'LIMIT', 0, 1)[2]
  if last and tonumber(last) >= arrival then
    arrival = tonumber(last) + 1
  end
  redis.call('ZADD', line, arrival, place)
end
redis.call('PEXPIRE', line, patience * 2)
if holder then
  if #holder == #token then
    redis.call('APPEND', lock, '+')
  end
  return {{0, redis.call('PTTL', lock)}}
end
-- Free: who is first, once the waiters not heard from within their patience are out.
local lapsed = redis.call('ZRANGEBYSCORE', line, '-inf', now_ms)
for _, gone in ipairs(lapsed) do
  redis.call('ZREM', line, gone, 'p' .. string.sub(gone, 2))
end
local first = first_in_line(line)
if first and first ~= token then
  redis.call('PUBLISH', channel, first)
  return {{0, -3}}
end
redis.call('ZREM', line, place, deadline)
local value = token
if redis.call('ZCARD', line) > 0 then
  value = token .. '+'
end
redis.call('SET', lock, value, 'PX', ttl)
local given = 0
if fencing then
  given = give_fence(fence, ttl)
end
return {{1, given}}
"
    )))
});

/// Leaving the line of a fair lock. KEYS: the lock, its line. ARGV: the token, the notice
/// channel. Takes the waiter's place and deadline out of the line and, if the lock is free,
/// announces it to the next in line (the one leaving may have been woken for it); if the
/// holder's value names the one leaving as the next, names the new first in line instead.
pub static LEAVE_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&answering(&format!(
        r"{LINE}
local token = ARGV[1]
redis.call('ZREM', KEYS[2], 'p' .. token, 'd' .. token)
local holder = redis.call('GET', KEYS[1])
if not holder then
  local first = first_in_line(KEYS[2])
  if first then
    redis.call('PUBLISH', ARGV[2], first)
  end
elseif #holder > #token and string.sub(holder, -#token - 1) == '+' .. token then
  -- The holder's value names the one leaving as the next in line: name the new first in
  -- line instead, or none (its release then looks at the line). In place, to keep the TTL.
  local first = first_in_line(KEYS[2])
  if not first or #first ~= #token then
    first = string.rep('-', #token)
  end
  redis.call('SETRANGE', KEYS[1], #holder - #token, first)
end
return 1
"
    )))
});

/// Extend. KEYS: lock, its fence counter. ARGV: token, TTL in ms.
///
/// Sets a new TTL only if the lock still holds our token, marked or not, on the lock and on
/// its fence counter (so that `inspect` shows the fence for as long as the lock is held).
/// Replies 1 if we held it.
pub static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&answering(&format!(
        r"{HOLDER}
if held_by(redis.call('GET', KEYS[1]), ARGV[1]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"
    )))
});

/// Whether the value at a key is a lock of ours: a string of 32 lowercase hex digits (an
/// owner token), maybe marked by a `+` and maybe naming the next fair waiter ([`HOLDER`]),
/// with a TTL. Defines `not_held(key)`, which
/// replies nil for a lock, `{0}` for no key, and `{-1, what}` for a key that holds something
/// else: the operators' scripts return that answer as it is, and never touch such a key.
const SHAPE: &str = r"
local function shape(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    return 'none'
  elseif kind ~= 'string' then
    return 'a ' .. kind
  end
  local value = redis.call('GET', key)
  local token, mark, next = string.match(value, '^(%x+)(%+?)([%x-]*)$')
  if not token or #token ~= 32 or string.find(value, '%u')
      or (#next ~= 0 and (mark ~= '+' or #next ~= 32)) then
    return 'a string that is not an owner token'
  elseif redis.call('PTTL', key) < 0 then
    return 'a string without a TTL'
  end
  return 'lock'
end
local function not_held(key)
  local found = shape(key)
  if found == 'none' then
    return {0}
  elseif found ~= 'lock' then
    return {-1, found}
  end
  return nil
end
";

/// Inspect. KEYS: lock, fence counter. Replies `{0}` for a free lock, `{1, pttl, fence}` for
/// a held one (fence 0 when fencing is off or unknown), or `{-1, what}` for a key that holds
/// something else. For operators only: the answer may be stale when it arrives.
pub static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&answering(&format!(
        r"{SHAPE}
local refused = not_held(KEYS[1])
if refused then
  return refused
end
return {{1, redis.call('PTTL', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0')}}
"
    )))
});

/// Forced release. KEYS: lock, its fair line. ARGV: notice channel.
///
/// Deletes the lock whoever holds it (an operator's action) and wakes waiters, if the key
/// holds a lock of ours. Replies `{1}` if there was a lock, `{0}` if not, `{-1, what}` for a
/// key that holds something else, which is left alone.
pub static FORCE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&answering(&format!(
        r"{SHAPE}{LINE}
local refused = not_held(KEYS[1])
if refused then
  return refused
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], first_in_line(KEYS[2]) or '')
return {{1}}
"
    )))
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_split_the_line_where_the_rust_side_does() {
        assert!(LINE.contains(&format!("local places_from = '{PLACES_FROM}'")));
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_reply_is_taken_only_with_its_own_tag() {
        let answer = Value::Array(vec![Value::Int(1), Value::Int(42)]);
        assert_eq!(
            untag(Value::Array(vec![bulk("7"), answer.clone()]), "7"),
            Ok(answer.clone())
        );
        assert_eq!(untag(Value::Array(vec![bulk("7")]), "7"), Ok(Value::Nil));
        // Another call's reply (a success, say) is refused, as is anything untagged.
        assert!(untag(Value::Array(vec![bulk("8"), answer.clone()]), "7").is_err());
        assert!(untag(answer, "7").is_err());
        assert!(untag(Value::Int(1), "7").is_err());
        assert!(
            untag(
                Value::Array(vec![bulk("7"), Value::Int(1), Value::Int(2)]),
                "7"
            )
            .is_err()
        );
    }

    #[test]
    fn tags_differ_from_call_to_call() {
        assert_ne!(next_tag(), next_tag());
    }
}
