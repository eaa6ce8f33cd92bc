"""Slots and unique claims of the Redis broker (see :meth:`Broker.acquire_slot`).

Keys (after ``global_keyprefix``, beside the broker's, see its module docstring):

``_celeriac.slot.<name>`` (hash)
    lease token -> task id, one field per holder.
``_celeriac.slots`` (set)
    names of slots that have or had holders (``celeriac status``).
``_celeriac.unique.<key>`` (string)
    a unique claim's value, with the claim's expiry as the key's TTL.

A holder counts only while its lease (``_celeriac.lease.<token>``, scored in
``_celeriac.leases.<queue>`` by Redis server time) is live: the ``SLOT_ACQUIRE``
script drops the fields that fail that test, counts the rest and adds the new
holder in one atomic step, so a lapsed lease (a killed worker), an ack or a
release frees the place with nothing else to renew or clean.
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import Script

from ..base import Delivery
from ..slotting import SlotHolder

_LIVE = r"""
local P = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local function live(tok)
  local q = redis.call('HGET', P .. '_celeriac.lease.' .. tok, 'q')
  if not q then return nil end
  local s = redis.call('ZSCORE', P .. '_celeriac.leases.' .. q, tok)
  if s and tonumber(s) >= now then return tonumber(s) end
  return nil
end
local function prune(key)
  for _, tok in ipairs(redis.call('HKEYS', key)) do
    if not live(tok) then redis.call('HDEL', key, tok) end
  end
end
"""

# ARGV: prefix, name, limit, token, task id -> 1 / 0
ACQUIRE = _LIVE + r"""
local key = P .. '_celeriac.slot.' .. ARGV[2]
prune(key)
if redis.call('HEXISTS', key, ARGV[4]) == 1 then return 1 end
if redis.call('HLEN', key) >= tonumber(ARGV[3]) or not live(ARGV[4]) then return 0 end
redis.call('HSET', key, ARGV[4], ARGV[5])
redis.call('SADD', P .. '_celeriac.slots', ARGV[2])
return 1
"""

# ARGV: prefix, name or "" -> flat list of name, token, task id, owner, expiry
HOLDERS = _LIVE + r"""
local names
if ARGV[2] ~= '' then names = {ARGV[2]} else
  names = redis.call('SMEMBERS', P .. '_celeriac.slots') end
local out = {}
for _, name in ipairs(names) do
  local key = P .. '_celeriac.slot.' .. name
  prune(key)
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then redis.call('SREM', P .. '_celeriac.slots', name) end
  for i = 1, #fields, 2 do
    local owner = redis.call('HGET', P .. '_celeriac.lease.' .. fields[i], 'o') or ''
    out[#out + 1] = name
    out[#out + 1] = fields[i]
    out[#out + 1] = fields[i + 1]
    out[#out + 1] = owner
    out[#out + 1] = tostring(live(fields[i]) or 0)
  end
end
return out
"""

# ARGV: key, value, milliseconds -> {} when claimed, {value} when held
CLAIM = r"""
if redis.call('SET', ARGV[1], ARGV[2], 'NX', 'PX', ARGV[3]) then return {} end
local held = redis.call('GET', ARGV[1])
if held then return {held} end
redis.call('SET', ARGV[1], ARGV[2], 'PX', ARGV[3])
return {}
"""

# ARGV: key, value -> 1 / 0
UNCLAIM = r"""
if redis.call('GET', ARGV[1]) == ARGV[2] then return redis.call('DEL', ARGV[1]) end
return 0
"""


class RedisSlots:
    """Mixed into :class:`~celeriac.brokers.redis.broker.RedisBroker`."""

    prefix: str
    client: Any
    _retrying: Any

    def _slot_script(self, source: str, *args: Any) -> Any:
        client = self.client
        scripts: dict[tuple[int, str], Script] = self.__dict__.setdefault("_slot_scripts", {})
        script = scripts.get((id(client), source))
        if script is None:
            script = scripts[(id(client), source)] = Script(client, source)
        return self._retrying("slots", lambda: script(keys=[], args=list(args), client=client))

    def acquire_slot(self, name: str, limit: int, delivery: Delivery) -> bool:
        return bool(int(self._slot_script(ACQUIRE, self.prefix, name, int(limit),
                                          delivery.token, delivery.message.task_id or "")))

    def release_slot(self, name: str, delivery: Delivery) -> bool:
        key = f"{self.prefix}_celeriac.slot.{name}"
        return bool(self._retrying("slots", lambda: self.client.hdel(key, delivery.token)))

    def slot_holders(self, name: str | None = None) -> list[SlotHolder]:
        flat = self._slot_script(HOLDERS, self.prefix, name or "")
        text = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        out = [SlotHolder(text[i], text[i + 1], text[i + 2] or None, text[i + 3] or None,
                          float(text[i + 4]) or None) for i in range(0, len(text), 5)]
        return sorted(out, key=lambda h: (h.name, h.tag))

    def claim_unique(self, key: str, value: str, seconds: float) -> str | None:
        reply = self._slot_script(CLAIM, f"{self.prefix}_celeriac.unique.{key}", value,
                                  max(1, int(float(seconds) * 1000)))
        if not reply:
            return None
        held = reply[0]
        return held.decode() if isinstance(held, bytes) else str(held)

    def release_unique(self, key: str, value: str) -> bool:
        return bool(int(self._slot_script(UNCLAIM, f"{self.prefix}_celeriac.unique.{key}",
                                          value)))
