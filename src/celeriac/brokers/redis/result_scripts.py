"""The Lua scripts of the Redis result store: the chord join and the task-meta writes.

:data:`CHORD_ADD` records one chord header member and returns every member's
meta, ordered, to the call that completes the set (an empty size argument:
read Celery's ``.s`` key); :data:`WRITE_METAS` writes task metas as Celery does
(``SET[EX]`` + ``PUBLISH``) under the final-state rules (never over REVOKED; for
``set_unless_succeeded`` never over SUCCESS either), each check and its write one
atomic step. Every key a script touches is passed in ``KEYS``; key layouts are
described in :mod:`.results`.
"""

CHORD_ADD = r"""
local j, d, s, t, c, m = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local index, member, size, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if redis.call('GET', c) == 'done' then return false end
if redis.call('SADD', d, index) == 0 then return false end
redis.call('ZADD', j, tonumber(index), member)
redis.call('HSET', m, index, ARGV[5])
if ttl ~= '' then
  for _, k in ipairs({j, d, t, m}) do redis.call('EXPIRE', k, ttl) end
end
if size == nil then
  size = tonumber(redis.call('GET', s))
  if size == nil then return false end
elseif ttl ~= '' then
  redis.call('SET', s, size, 'EX', ttl)
else
  redis.call('SET', s, size)
end
local total = size + tonumber(redis.call('GET', t) or '0')
if redis.call('SCARD', d) < total then return false end
if ttl ~= '' then redis.call('SET', c, 'done', 'EX', ttl) else redis.call('SET', c, 'done') end
local out = {}
local scored = redis.call('ZRANGE', j, 0, -1, 'WITHSCORES')
for i = 2, #scored, 2 do out[#out + 1] = redis.call('HGET', m, scored[i]) end
return out
"""


#: Lua functions: ``write_metas(keys, first, count, ttl, base)`` writes ``count`` metas,
#: ``KEYS[first..]`` with ``ARGV[base + 2i - 1]`` (meta) and ``ARGV[base + 2i]`` (guard: 1
#: refuses the write over a stored REVOKED meta, 2 over a SUCCESS one, 3 over both, 0
#: none), as Celery writes them (SET[EX] + PUBLISH); ``ttl``: "" (no expiry), "ex:<s>"
#: or "px:<ms>". Returns 1/0 per meta (written / refused).
WRITE_FUNCTIONS = r"""
-- the stored status, when it is one a guard names (a malformed meta has none)
local function status_of(cur)
  if not (string.find(cur, 'REVOKED', 1, true) or string.find(cur, 'SUCCESS', 1, true)) then
    return nil
  end
  if #cur < 65536 then
    local ok, meta = pcall(cjson.decode, cur)
    if ok and type(meta) == 'table' then return meta['status'] end
    return nil
  end
  return string.match(cur, '^%s*{%s*"status"%s*:%s*"(%u+)"')  -- Celery writes it first
end
local function write_metas(first, count, ttl, base)
  -- the stored metas the guards need, in one read (a key written earlier in this batch:
  -- what was written, so a later guard of the same key sees it)
  local guarded, at = {}, {}
  for i = 1, count do
    if tonumber(ARGV[base + 2 * i]) > 0 then
      guarded[#guarded + 1] = KEYS[first + i - 1]
      at[i] = #guarded
    end
  end
  local stored = {}
  if #guarded > 0 then stored = redis.call('MGET', unpack(guarded)) end
  local now_written = {}
  local out = {}
  for i = 1, count do
    local key = KEYS[first + i - 1]
    local value, guard = ARGV[base + 2 * i - 1], tonumber(ARGV[base + 2 * i])
    local refuse = false
    if guard > 0 then
      local cur = now_written[key] or stored[at[i]]
      local status = cur and status_of(cur)
      refuse = (status == 'REVOKED' and guard % 2 == 1) or (status == 'SUCCESS' and guard >= 2)
    end
    if refuse then
      out[i] = 0
    else
      if ttl == '' then
        redis.call('SET', key, value)
      elseif string.sub(ttl, 1, 3) == 'ex:' then
        redis.call('SETEX', key, tonumber(string.sub(ttl, 4)), value)
      else
        redis.call('SET', key, value, 'PX', tonumber(string.sub(ttl, 4)))
      end
      redis.call('PUBLISH', key, value)
      now_written[key] = value
      out[i] = 1
    end
  end
  return out
end
"""

#: KEYS: task meta keys; ARGV[1]: the ttl; then per key its meta and guard (above).
WRITE_METAS = WRITE_FUNCTIONS + r"""
return write_metas(1, #KEYS, ARGV[1], 1)
"""

#: A worker's settled batch, results before acknowledgements in one atomic step (a
#: failed write ends the script before any acknowledgement). KEYS: the n task meta
#: keys, the m lease hashes of the acknowledgements, then z lease zsets and the owner
#: sets their leases are in (each once); ARGV: ttl, n, m, z, n x (meta, guard), then
#: the m lease tokens. Returns the n written flags followed by how many leases were
#: still held (and are deleted now). A lease hash, its zset entry and its owner set
#: entry are created and dropped together (``drop_lease``), and a token is never
#: reused: removing every token from each zset and owner set is what removing only
#: those still held does, in one call each instead of two per acknowledgement.
SETTLE = WRITE_FUNCTIONS + r"""
local n, m, z = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = write_metas(1, n, ARGV[1], 4)
local done = 0
if m > 0 then
  local tokens = {unpack(ARGV, 5 + 2 * n, 4 + 2 * n + m)}
  done = redis.call('DEL', unpack(KEYS, n + 1, n + m))
  if done > 0 then
    for j = n + m + 1, #KEYS do
      if j <= n + m + z then
        redis.call('ZREM', KEYS[j], unpack(tokens))
      else
        redis.call('SREM', KEYS[j], unpack(tokens))
      end
    end
  end
end
out[n + 1] = done
return out
"""
