#!/usr/bin/env python3
"""Server CPU per lock cycle for candidate command sequences, next to the bare loop.

An experiment, not a benchmark of pylock itself (that is `pylock-bench`): it asks what
the server would spend per cycle if pylock's acquire or release were native commands instead
of scripts. Each round pipelines 64 acquires on 64 keys, then their 64 releases, on one
connection; the figure is the server's `used_cpu_user + used_cpu_sys` (`INFO cpu`) per
cycle, the median of three runs of ROUNDS rounds. The scripts are the parts of pylock-redis's
`ACQUIRE` (with fencing) and `RELEASE` that an uncontended cycle runs. The `DELIFEQ` rows run
only on a server that has the command (Valkey 9).

    pip install redis
    python3 scripts/experiments/server_cpu_per_cycle.py PORT [ROUNDS]

Only ever point it at a scratch server on loopback: it writes keys `pylock:k0..63`.
"""

import statistics
import sys

import redis

port = int(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 400
r = redis.Redis(host="127.0.0.1", port=port)
GIVE = r"""
local function give_fence(fence, ttl)
  local given = redis.call('INCR', fence)
  if given == 1 then
    local now = redis.call('TIME')
    given = tonumber(now[1]) * 1000000 + tonumber(now[2])
    redis.call('SET', fence, string.format('%d', given), 'PX', ttl)
  else
    redis.call('PEXPIRE', fence, ttl)
  end
  return given
end"""
ACQ = GIVE + r"""
local replies = {}
local fencing = ARGV[1] == '1'
for i = 1, #KEYS / 2 do
  local lock, fence = KEYS[2 * i - 1], KEYS[2 * i]
  local token, ttl, mark = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local value = token
  if mark == '1' then value = token .. '+' end
  if redis.call('SET', lock, value, 'NX', 'PX', ttl) then
    local given = 0
    if fencing then given = give_fence(fence, ttl) end
    replies[2 * i - 1], replies[2 * i] = 1, given
  else
    replies[2 * i - 1], replies[2 * i] = 0, redis.call('PTTL', lock)
  end
end
return replies"""
REL = r"""
local held = {}
local locks = #KEYS / 2
for i = 1, locks do
  local holder, token = redis.call('GET', KEYS[2 * i - 1]), ARGV[2 * i - 1]
  if holder == token then held[i] = 1 elseif holder == token .. '+' then held[i] = 2 else held[i] = 0 end
end
for i = 1, locks do
  if held[i] > 0 then
    redis.call('DEL', KEYS[2 * i - 1])
    if held[i] == 2 then
      local first = redis.call('ZRANGE', KEYS[2 * i], 0, 0)[1] or ''
      redis.call('PUBLISH', ARGV[2 * i], first)
    end
    held[i] = 1
  end
end
return held"""
acq = r.register_script(ACQ)
rel = r.register_script(REL)
N = 64
TOK = "0123456789abcdef0123456789abcdef"
keys = ["pylock:k%d" % i for i in range(N)]
fences = ["pylock:k%d:fence" % i for i in range(N)]


def cpu():
    i = r.info("cpu")
    return i["used_cpu_user"] + i["used_cpu_sys"]


# Each variant queues a round's acquires on `p` and its releases on `q`.


def bare(p, q):
    """The floor: `SET NX PX` and `DEL`, no owner check, no fence."""
    for k in keys:
        p.execute_command("SET", k, TOK, "NX", "PX", 10000)
    for k in keys:
        q.execute_command("DEL", k)


def scripted(p, q, batch=8):
    """pylock today: its acquire and release scripts, `batch` locks a call."""
    for b in range(0, N, batch):
        ks = []
        av = ["1"]
        for i in range(b, b + batch):
            ks += [keys[i], fences[i]]
            av += [TOK, 10000, "0"]
        acq(keys=ks, args=av, client=p)
    for b in range(0, N, batch):
        ks = []
        av = []
        for i in range(b, b + batch):
            ks += [keys[i], keys[i] + ":q"]
            av += [TOK, "ch"]
        rel(keys=ks, args=av, client=q)


def native_acq(p):
    """A native acquire with a fence: `SET NX PX GET`, `INCR` and `PEXPIRE` of the counter."""
    for i, k in enumerate(keys):
        p.execute_command("SET", k, TOK, "NX", "PX", 10000, "GET")
        p.execute_command("INCR", fences[i])
        p.execute_command("PEXPIRE", fences[i], 10000)


def native_script(p, q):
    """The native acquire and pylock's release script."""
    native_acq(p)
    for b in range(0, N, 8):
        ks = []
        av = []
        for i in range(b, b + 8):
            ks += [keys[i], keys[i] + ":q"]
            av += [TOK, "ch"]
        rel(keys=ks, args=av, client=q)


def native_delifeq(p, q):
    """The native acquire and a native owner-checked release (`DELIFEQ`)."""
    native_acq(p)
    for k in keys:
        q.execute_command("DELIFEQ", k, TOK)


def script_delifeq(p, q):
    """pylock's acquire script and `DELIFEQ`."""
    for b in range(0, N, 8):
        ks = []
        av = ["1"]
        for i in range(b, b + 8):
            ks += [keys[i], fences[i]]
            av += [TOK, 10000, "0"]
        acq(keys=ks, args=av, client=p)
    for k in keys:
        q.execute_command("DELIFEQ", k, TOK)


def set_incr_delifeq(p, q):
    """As native_delifeq, without the counter's TTL (`PEXPIRE`)."""
    for i, k in enumerate(keys):
        p.execute_command("SET", k, TOK, "NX", "PX", 10000, "GET")
        p.execute_command("INCR", fences[i])
    for k in keys:
        q.execute_command("DELIFEQ", k, TOK)


variants = {
    "bare": bare,
    "script8": scripted,
    "script1": lambda p, q: scripted(p, q, 1),
    "native+script": native_script,
}


def has_delifeq():
    try:
        r.execute_command("DELIFEQ", "pylock:probe", "x")
        return True
    except redis.ResponseError:
        return False


has = has_delifeq()
if has:
    variants.update(
        {
            "native+delifeq": native_delifeq,
            "script+delifeq": script_delifeq,
            "set+incr+delifeq": set_incr_delifeq,
        }
    )
res = {k: [] for k in variants}
for rep in range(3):
    for name, f in variants.items():
        c0 = cpu()
        for _ in range(rounds):
            p = r.pipeline(transaction=False)
            q = r.pipeline(transaction=False)
            f(p, q)
            p.execute()
            q.execute()
        res[name].append((cpu() - c0) * 1e6 / (rounds * N))
base = statistics.median(res["bare"])
for name, v in res.items():
    m = statistics.median(v)
    print(
        "%-18s %6.2f us/cycle  %.2f x bare   %s"
        % (name, m, m / base, " ".join("%.2f" % x for x in v))
    )
