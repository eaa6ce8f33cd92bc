"""The Redis broker's rate-limit token buckets (:meth:`Broker.take_token` on Redis).

One hash per bucket, ``<prefix>_celeriac.rate.<key>`` with fields ``t`` (tokens
at the last update) and ``u`` (that update's server time), read, refilled and
taken in one Lua script (atomic on the server, timed by the server's ``TIME``
so every host agrees). The hash expires once the bucket would be full again
(``capacity / rate`` seconds plus one), since a forgotten bucket is a full one.

``TAKE_TOKEN`` arguments: prefix, key, rate (tokens per second), capacity;
returns the wait in seconds as text (``"0"`` when a token was taken).
"""

from __future__ import annotations

TAKE_TOKEN = r"""
local bucket = ARGV[1] .. '_celeriac.rate.' .. ARGV[2]
local rate, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', bucket, 't', 'u')
local level = cap
if state[1] then
  level = math.min(cap, tonumber(state[1]) + math.max(0, now - tonumber(state[2])) * rate)
end
local wait = 0
if level >= 1 then level = level - 1 else wait = (1 - level) / rate end
redis.call('HSET', bucket, 't', string.format('%.17g', level), 'u', string.format('%.17g', now))
redis.call('PEXPIRE', bucket, math.ceil(cap / rate * 1000) + 1000)
return string.format('%.17g', wait)
"""

SCRIPTS = {"take_token": TAKE_TOKEN}
