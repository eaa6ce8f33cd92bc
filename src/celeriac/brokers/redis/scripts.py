"""The Lua scripts of the Redis broker (key layout: see :mod:`celeriac.brokers.redis.broker`).

``RECEIVE``'s reply is parsed by :mod:`.replies`.

Every state change of a message that is not a plain publish is one of these
scripts, so each is atomic on the server. All scripts take the global key
prefix as ``ARGV[1]`` and build key names from it (a Redis Cluster deployment
must therefore put all keys in one slot with a hash-tag prefix such as
``{celeriac}``). Time is always the server's ``TIME``, never a client clock.

Scripts and their arguments (after the prefix):

``RECEIVE``  owner, limit, lease_seconds, nonce, meta_prefix, n, queue_1..queue_n,
    step_1..:
    return lapsed leases of the queues to their ready lists (lost + 1), move
    due delayed messages to theirs, then ``RPOP`` up to ``limit`` messages in
    priority-major order and lease each one (lease hash, expiry zset, owner
    set); a message whose envelope's sha1 is in ``_celeriac.eta.<queue>`` with
    a future time (a countdown published ready, for Celery workers) is moved
    to the delayed set instead, in the same atomic step. If fewer than
    ``limit`` were found, the queues' wake lists are cleared (stale tokens).
    With a ``meta_prefix`` (the result store's task meta key prefix, on this
    server: the worker's revocation check, see :mod:`.replies`), the first
    ``"id":"..."`` of each leased envelope is read and ``GET meta_prefix..id``
    returned with it, as a fourth element ``[id, meta or "", ...]``.
    Returns ``[now, hint, batch]``:
    ``batch`` is one string of records ``"queue_index token delivery_count
    lost_count size\n" + envelope`` (one bulk reply parses much faster than
    two per message); ``hint`` (when nothing was leased) is the seconds until
    the next delayed message is due or a lease lapses.
``PUBLISH``  list key, queue, envelope: ``LPUSH`` one ready message and its
    wake-up token (the Redis Cluster broker's single-message publish; the
    plain broker sends two plain ``LPUSH`` instead, see :mod:`.publishing`);
    returns 1.
``ACK``  token...: delete the leases still held; returns how many.
``RENEW``  seconds, token...: extend the leases still held; returns 1/0 each.
``RELEASE``  token, not_before or "", uid, failed (0/1): give a held message
    back, to the head of its ready list or into the delayed set, counting one
    lost delivery when ``failed``; returns 1/0.
``DEAD_LETTER``  token, reason, dead_id: move a held message to the
    dead-letter store; returns 1/0.
``EXPIRE_OWNER``  owner: make the owner's leases lapse now; returns how many
    were still live.
``RETRY_DEAD``  dead_id: push a dead letter back to its queue, counters reset.
``PURGE_DEAD``  queue or "": delete dead letters; returns how many.
``PURGE``  queue, step...: delete ready, delayed and lapsed-lease messages.
``STATS``  queue, step...: ``[ready, delayed, leased, dead]`` by server time.
"""

from __future__ import annotations

#: Most wake-up tokens kept per queue (consumers pop one per wake-up).
WAKE_CAP = 16

_PRELUDE = r"""
local P = ARGV[1]
local SEP = '\6\22'
local RETURNED = P .. '_celeriac.returned'
local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function list_key(q, step)
  if tonumber(step) == 0 then return P .. q end
  return P .. q .. SEP .. tostring(tonumber(step))
end
local function lease_key(tok) return P .. '_celeriac.lease.' .. tok end
local function leases_key(q) return P .. '_celeriac.leases.' .. q end
local function owner_key(o) return P .. '_celeriac.owner.' .. o end
local function delayed_key(q) return P .. '_celeriac.delayed.' .. q end
local function dead_key(id) return P .. '_celeriac.dead.' .. id end
local function deadq_key(q) return P .. '_celeriac.deadq.' .. q end
local function eta_key(q) return P .. '_celeriac.eta.' .. q end
local function wake(q)
  local k = P .. '_celeriac.wake.' .. q
  redis.call('LPUSH', k, '1')
  redis.call('LTRIM', k, 0, __WAKE_CAP__ - 1)
end
-- Call cmd([key,] ...) with the values in chunks (Lua's unpack has a stack limit).
local function batched(cmd, key, values)
  for i = 1, #values, 2000 do
    local last = math.min(i + 1999, #values)
    if key then
      redis.call(cmd, key, unpack(values, i, last))
    else
      redis.call(cmd, unpack(values, i, last))
    end
  end
end
local function drop_lease(tok, q, o)
  redis.call('DEL', lease_key(tok))
  redis.call('ZREM', leases_key(q), tok)
  redis.call('SREM', owner_key(o), tok)
end
-- Give a leased message back: remember its counters (keyed by the envelope)
-- and push it to the head of its ready list, or into the delayed set.
local function give_back(tok, lost, not_before, uid, signal)
  local r = redis.call('HMGET', lease_key(tok), 'm', 'q', 's', 'o', 'dc', 'lc', 'fd')
  if not r[1] then return 0 end
  drop_lease(tok, r[2], r[4])
  redis.call('HSET', RETURNED, r[1],
             r[5] .. ' ' .. tostring(tonumber(r[6]) + lost) .. ' ' .. r[7])
  redis.call('EXPIRE', RETURNED, 604800)  -- bounds what Celery consumers leave behind
  if not_before then
    local member = uid .. string.format('%02d', tonumber(r[3])) .. r[1]
    redis.call('ZADD', delayed_key(r[2]), not_before, member)
  else
    redis.call('RPUSH', list_key(r[2], r[3]), r[1])
  end
  if signal then wake(r[2]) end
  return 1
end
-- Move due delayed messages of queue q to the tail of their ready lists.
local function promote(q, now)
  local dz = delayed_key(q)
  local due = redis.call('ZRANGE', dz, '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)
  for _, m in ipairs(due) do
    redis.call('ZREM', dz, m)
    redis.call('LPUSH', list_key(q, string.sub(m, 33, 34)), string.sub(m, 35))
  end
end
""".replace("__WAKE_CAP__", str(WAKE_CAP))

RECEIVE = _PRELUDE + r"""
local owner, limit, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local nonce, peek, nq = ARGV[5], ARGV[6], tonumber(ARGV[7])
local queues, steps = {}, {}
for i = 1, nq do queues[i] = ARGV[7 + i] end
for i = 8 + nq, #ARGV do steps[#steps + 1] = ARGV[i] end
local now = now_s()
for _, q in ipairs(queues) do
  local lapsed = redis.call('ZRANGE', leases_key(q), '-inf', now, 'BYSCORE', 'LIMIT', 0, 1000)
  for _, tok in ipairs(lapsed) do give_back(tok, 1, nil, nil, false) end
  promote(q, now)
  -- a day past due, an entry's message was taken by a Celery worker: forget it
  redis.call('ZREMRANGEBYSCORE', eta_key(q), '-inf', now - 86400)
end
local out = {tostring(now), '', ''}
local parts, peeked = {}, {}
local got, parked = 0, 0
local has_returned = redis.call('EXISTS', RETURNED) == 1
local expires = now + lease
local okey = owner_key(owner)
for _, step in ipairs(steps) do
  for qi, q in ipairs(queues) do
    if got >= limit then break end
    local msgs = redis.call('RPOP', list_key(q, step), limit - got)
    if msgs and redis.call('EXISTS', eta_key(q)) == 1 then
      -- a countdown/eta message published ready (for Celery workers): park it if not due
      local kept = {}
      for _, m in ipairs(msgs) do
        local h = redis.sha1hex(m)
        local due = redis.call('ZSCORE', eta_key(q), h)
        if due then redis.call('ZREM', eta_key(q), h) end
        if due and tonumber(due) > now then
          redis.call('ZADD', delayed_key(q), due,
                     string.sub(h, 1, 32) .. string.format('%02d', tonumber(step)) .. m)
          parked = parked + 1
        else
          kept[#kept + 1] = m
        end
      end
      msgs = kept
      if #msgs == 0 then msgs = false end
    end
    if msgs then
      local base = redis.call('INCRBY', P .. '_celeriac.seq', #msgs) - #msgs
      local scored, toks = {}, {}
      for j, m in ipairs(msgs) do
        local tok = nonce .. tostring(base + j)
        local dc, lc, fd = 1, 0, tostring(now)
        if has_returned then
          local c = redis.call('HGET', RETURNED, m)
          if c then
            redis.call('HDEL', RETURNED, m)
            local a, b, f = string.match(c, '^(%d+) (%d+) (.*)$')
            dc, lc, fd = tonumber(a) + 1, tonumber(b), f
          end
        end
        redis.call('HSET', lease_key(tok), 'm', m, 'q', q, 's', step, 'o', owner,
                   'dc', dc, 'lc', lc, 'fd', fd)
        scored[#scored + 1], scored[#scored + 2] = expires, tok
        toks[#toks + 1] = tok
        parts[#parts + 1] = qi .. ' ' .. tok .. ' ' .. dc .. ' ' .. lc .. ' ' .. #m .. '\n'
        parts[#parts + 1] = m
        if peek ~= '' then
          local id = string.match(m, '"id":%s*"([^"\\]+)"')
          peeked[#peeked + 1] = id or ''
          peeked[#peeked + 1] = (id and redis.call('GET', peek .. id)) or ''
        end
      end
      batched('ZADD', leases_key(q), scored)
      batched('SADD', okey, toks)
      got = got + #msgs
    end
  end
end
out[3] = table.concat(parts)
if peek ~= '' then out[4] = peeked end
if got + parked < limit then
  -- every ready list of these queues is empty now: wake tokens left are stale
  for _, q in ipairs(queues) do redis.call('DEL', P .. '_celeriac.wake.' .. q) end
end
if got == 0 then
  local nxt = nil
  for _, q in ipairs(queues) do
    for _, z in ipairs({delayed_key(q), leases_key(q)}) do
      local head = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      if head[2] then
        local d = tonumber(head[2]) - now
        if nxt == nil or d < nxt then nxt = d end
      end
    end
  end
  if nxt ~= nil then out[2] = tostring(nxt) end
end
return out
"""

# no prelude: this runs once per delay() on Redis Cluster and must stay small
PUBLISH = r"""
local P, q = ARGV[1], ARGV[3]
redis.call('LPUSH', P .. ARGV[2], ARGV[4])
local w = P .. '_celeriac.wake.' .. q
redis.call('LPUSH', w, '1')
redis.call('LTRIM', w, 0, __WAKE_CAP__ - 1)
return 1
""".replace("__WAKE_CAP__", str(WAKE_CAP))

ACK = _PRELUDE + r"""
local keys, by_queue, by_owner = {}, {}, {}
for i = 2, #ARGV do
  local tok = ARGV[i]
  local r = redis.call('HMGET', lease_key(tok), 'q', 'o')
  if r[1] then
    keys[#keys + 1] = lease_key(tok)
    by_queue[r[1]] = by_queue[r[1]] or {}
    table.insert(by_queue[r[1]], tok)
    by_owner[r[2]] = by_owner[r[2]] or {}
    table.insert(by_owner[r[2]], tok)
  end
end
if #keys > 0 then batched('DEL', nil, keys) end
for q, toks in pairs(by_queue) do batched('ZREM', leases_key(q), toks) end
for o, toks in pairs(by_owner) do batched('SREM', owner_key(o), toks) end
return #keys
"""

RENEW = _PRELUDE + r"""
local expires = now_s() + tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local q = redis.call('HGET', lease_key(ARGV[i]), 'q')
  if q then
    redis.call('ZADD', leases_key(q), expires, ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""

RELEASE = _PRELUDE + r"""
local not_before = nil
if ARGV[3] ~= '' then not_before = tonumber(ARGV[3]) end
return give_back(ARGV[2], tonumber(ARGV[5] or '0'), not_before, ARGV[4], true)
"""

DEAD_LETTER = _PRELUDE + r"""
local tok, reason, id = ARGV[2], ARGV[3], ARGV[4]
local r = redis.call('HMGET', lease_key(tok), 'm', 'q', 's', 'o', 'dc', 'lc', 'fd')
if not r[1] then return 0 end
drop_lease(tok, r[2], r[4])
local now = now_s()
redis.call('HSET', dead_key(id), 'm', r[1], 'q', r[2], 's', r[3], 'r', reason,
           'dc', r[5], 'lc', r[6], 'fd', r[7], 'at', tostring(now))
redis.call('ZADD', P .. '_celeriac.dead', now, id)
redis.call('ZADD', deadq_key(r[2]), now, id)
return 1
"""

EXPIRE_OWNER = _PRELUDE + r"""
local now = now_s()
local n = 0
for _, tok in ipairs(redis.call('SMEMBERS', owner_key(ARGV[2]))) do
  local q = redis.call('HGET', lease_key(tok), 'q')
  if q then
    local score = redis.call('ZSCORE', leases_key(q), tok)
    if score and tonumber(score) >= now then n = n + 1 end
    redis.call('ZADD', leases_key(q), 0, tok)
    wake(q)
  end
end
return n
"""

RETRY_DEAD = _PRELUDE + r"""
local id = ARGV[2]
local r = redis.call('HMGET', dead_key(id), 'm', 'q', 's')
if not r[1] then return 0 end
redis.call('LPUSH', list_key(r[2], r[3]), r[1])
redis.call('HDEL', RETURNED, r[1])
redis.call('DEL', dead_key(id))
redis.call('ZREM', P .. '_celeriac.dead', id)
redis.call('ZREM', deadq_key(r[2]), id)
wake(r[2])
return 1
"""

PURGE_DEAD = _PRELUDE + r"""
local ids
if ARGV[2] ~= '' then
  ids = redis.call('ZRANGE', deadq_key(ARGV[2]), 0, -1)
else
  ids = redis.call('ZRANGE', P .. '_celeriac.dead', 0, -1)
end
for _, id in ipairs(ids) do
  local q = redis.call('HGET', dead_key(id), 'q')
  redis.call('DEL', dead_key(id))
  redis.call('ZREM', P .. '_celeriac.dead', id)
  if q then redis.call('ZREM', deadq_key(q), id) end
end
return #ids
"""

PURGE = _PRELUDE + r"""
local q = ARGV[2]
local now = now_s()
local n = 0
local has_returned = redis.call('EXISTS', RETURNED) == 1
for _, tok in ipairs(redis.call('ZRANGE', leases_key(q), '-inf', now, 'BYSCORE')) do
  local r = redis.call('HMGET', lease_key(tok), 'o', 'm')
  if r[2] then redis.call('HDEL', RETURNED, r[2]) end
  drop_lease(tok, q, r[1] or '')
  n = n + 1
end
for i = 3, #ARGV do
  local key = list_key(q, ARGV[i])
  if has_returned then
    for _, m in ipairs(redis.call('LRANGE', key, 0, -1)) do redis.call('HDEL', RETURNED, m) end
  end
  n = n + redis.call('LLEN', key)
  redis.call('DEL', key)
end
local dz = delayed_key(q)
if has_returned then
  for _, m in ipairs(redis.call('ZRANGE', dz, 0, -1)) do
    redis.call('HDEL', RETURNED, string.sub(m, 35))
  end
end
n = n + redis.call('ZCARD', dz)
redis.call('DEL', dz, eta_key(q))
return n
"""

STATS = _PRELUDE + r"""
local q = ARGV[2]
local now = now_s()
local ready = 0
for i = 3, #ARGV do ready = ready + redis.call('LLEN', list_key(q, ARGV[i])) end
local due = redis.call('ZCOUNT', delayed_key(q), '-inf', now)
local early = redis.call('ZCOUNT', eta_key(q), '(' .. now, '+inf')  -- ready, not yet due
local delayed = redis.call('ZCARD', delayed_key(q)) - due + early
ready = math.max(0, ready - early)
local lapsed = redis.call('ZCOUNT', leases_key(q), '-inf', now)
local leased = redis.call('ZCARD', leases_key(q)) - lapsed
return {ready + due + lapsed, delayed, leased, redis.call('ZCARD', deadq_key(q))}
"""

ALL = {
    "receive": RECEIVE, "publish": PUBLISH, "ack": ACK, "renew": RENEW, "release": RELEASE,
    "dead_letter": DEAD_LETTER, "expire_owner": EXPIRE_OWNER, "retry_dead": RETRY_DEAD,
    "purge_dead": PURGE_DEAD, "purge": PURGE, "stats": STATS,
}
