"""The Redis schedule store, used when the broker is Redis. Atomic steps are Lua scripts.

Key layout (``P`` is the prefix, default ``celeriac:beat:``)::

    P names                   SET   entry names
    P entry:<name>            HASH  name, definition (JSON), enabled (0/1), version,
                                    anchor_us, last_run_us, dropped_us, total_run_count,
                                    source, code_hash         -- times in UTC microseconds
    P generation              STR   bumped by every definition/enabled/membership change
    P fire:<name>:<fire_us>   HASH  entry, fire_us, task_id, payload (JSON), owner,
                                    claimed_us, state (claimed|sent), sent_us, manual
    P fires                   ZSET  "<name>\\n<fire_us>" scored by fire_us (listing, pruning)
    P claimed                 ZSET  same members, scored by claimed_us, while state=claimed
    P lease                   HASH  owner, expires_us           -- the leader lease

``claim`` checks the entry (enabled, version, cursor), creates the fire hash
(the unique key per fire time) and advances the cursor in one script. Every
round trip is retried on connection errors by :func:`celeriac.retry.call`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from ...schedules.entries import EntrySpec, StoredEntry
from ...schedules.store import FireRecord, ScheduleStore, from_us, to_us
from .client import get_client, is_cluster_url, retrying
from .durability import retry_policy_for

DEFAULT_PREFIX = "celeriac:beat:"
_T = TypeVar("_T")

_CURSOR_LUA = """
local function cursor_of(key)
  local e = redis.call('HMGET', key, 'anchor_us', 'last_run_us', 'dropped_us')
  local c = tonumber(e[1])
  if e[2] and tonumber(e[2]) > c then c = tonumber(e[2]) end
  if e[3] and tonumber(e[3]) > c then c = tonumber(e[3]) end
  return c
end
"""

PUT = """
-- KEYS: entry, names, generation. ARGV: name, expected ('' = insert), definition,
-- enabled, version, anchor_us, source, code_hash
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[2] == '' then
  if exists then return 0 end
  redis.call('HSET', KEYS[1], 'total_run_count', 0)
elseif (not exists) or redis.call('HGET', KEYS[1], 'version') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'definition', ARGV[3], 'enabled', ARGV[4],
           'version', ARGV[5], 'anchor_us', ARGV[6], 'source', ARGV[7], 'code_hash', ARGV[8])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"""

DELETE = """
-- KEYS: entry, names, generation. ARGV: name
if redis.call('DEL', KEYS[1]) == 0 then return 0 end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"""

CLAIM = _CURSOR_LUA + """
-- KEYS: entry, fire, fires, claimed. ARGV: version, fire_us, manual, task_id, payload,
-- owner, claimed_us, member, name
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if ARGV[3] ~= '1' then
  local e = redis.call('HMGET', KEYS[1], 'enabled', 'version')
  if e[1] ~= '1' or e[2] ~= ARGV[1] then return 0 end
  if tonumber(ARGV[2]) <= cursor_of(KEYS[1]) then return 0 end
  redis.call('HSET', KEYS[1], 'last_run_us', ARGV[2])
end
redis.call('HINCRBY', KEYS[1], 'total_run_count', 1)
redis.call('HSET', KEYS[2], 'entry', ARGV[9], 'fire_us', ARGV[2], 'task_id', ARGV[4],
           'payload', ARGV[5], 'owner', ARGV[6], 'claimed_us', ARGV[7], 'state', 'claimed',
           'manual', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[8])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
return 1
"""

DROP = _CURSOR_LUA + """
-- KEYS: entry. ARGV: version, instant_us
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) <= cursor_of(KEYS[1]) then return 0 end
redis.call('HSET', KEYS[1], 'dropped_us', ARGV[2])
return 1
"""

MARK_SENT = """
-- KEYS: fire, claimed. ARGV: sent_us, member
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sent', 'sent_us', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

TAKE_OVER = """
-- KEYS: fire, claimed. ARGV: owner, now_us, before_us, member, expected claimed_us
local f = redis.call('HMGET', KEYS[1], 'state', 'claimed_us')
if f[1] ~= 'claimed' or f[2] ~= ARGV[5] or tonumber(f[2]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'claimed_us', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
return 1
"""

LEASE = """
-- KEYS: lease. ARGV: owner, now_us, expires_us
local cur = redis.call('HMGET', KEYS[1], 'owner', 'expires_us')
if cur[1] and cur[1] ~= ARGV[1] and tonumber(cur[2]) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires_us', ARGV[3])
return 1
"""

RELEASE = """
-- KEYS: lease. ARGV: owner
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisStore(ScheduleStore):
    """Schedule store in Redis (``redis://``, ``rediss://``, ``sentinel://``)."""

    def __init__(self, url: str, *, prefix: str = DEFAULT_PREFIX,
                 options: dict[str, Any] | None = None, app: Any = None) -> None:
        self.url, self.prefix, self._app = url, prefix, app
        self.retry_policy = retry_policy_for(url, options or {})
        # a cluster client reads the slot map when made: retried like a round trip
        self.client = self._redis("connect", lambda: get_client(url, options))
        self._scripts = {name: self.client.register_script(body) for name, body in (
            ("put", PUT), ("delete", DELETE), ("claim", CLAIM), ("drop", DROP),
            ("mark_sent", MARK_SENT), ("take_over", TAKE_OVER), ("lease", LEASE),
            ("release", RELEASE))}

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _redis(self, what: str, call: Callable[[], _T]) -> _T:
        """One Redis round trip, retried on connection errors (:mod:`celeriac.retry`)."""
        return retrying(self.url, f"beat {what}", call, self.retry_policy)

    def _run(self, script: str, keys: list[str], args: list[Any]) -> bool:
        return bool(self._redis(script, lambda: self._scripts[script](keys=keys, args=args)))

    @staticmethod
    def _member(entry: str, fire_us: int) -> str:
        return f"{entry}\n{fire_us}"

    # -- entries ---------------------------------------------------------------
    def _entry(self, raw: Any) -> StoredEntry | None:
        if not raw or b"definition" not in raw:
            return None
        h = {_text(k): _text(v) for k, v in raw.items()}
        spec = EntrySpec.from_definition(h["name"], json.loads(h["definition"]), app=self._app)
        return StoredEntry(
            spec=spec, enabled=h["enabled"] == "1", version=int(h["version"]),
            anchor=from_us(h["anchor_us"]),
            last_run_at=from_us(h["last_run_us"]) if "last_run_us" in h else None,
            total_run_count=int(h.get("total_run_count", 0)),
            dropped_through=from_us(h["dropped_us"]) if "dropped_us" in h else None,
            source=h["source"], code_hash=h.get("code_hash") or None)

    def list_entries(self) -> list[StoredEntry]:
        return self._redis("list_entries", self._list_entries)

    def _list_entries(self) -> list[StoredEntry]:
        names = sorted(_text(n) for n in self.client.smembers(self._key("names")))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self._key("entry", name))
        entries = [self._entry(raw) for raw in pipe.execute()]
        return [e for e in entries if e is not None]

    def get_entry(self, name: str) -> StoredEntry | None:
        return self._entry(self._redis("get_entry", lambda: self.client.hgetall(
            self._key("entry", name))))

    def generation(self) -> int:
        value = self._redis("generation", lambda: self.client.get(self._key("generation")))
        return int(value) if value else 0

    def put_entry(self, entry: StoredEntry, expected_version: int | None) -> bool:
        args = [entry.name, "" if expected_version is None else str(expected_version),
                json.dumps(entry.spec.definition(), sort_keys=True), int(entry.enabled),
                entry.version, to_us(entry.anchor), entry.source, entry.code_hash or ""]
        keys = [self._key("entry", entry.name), self._key("names"), self._key("generation")]
        return self._run("put", keys, args)

    def delete_entry(self, name: str) -> bool:
        keys = [self._key("entry", name), self._key("names"), self._key("generation")]
        return self._run("delete", keys, [name])

    # -- fires -----------------------------------------------------------------
    def claim_fire(self, record: FireRecord, version: int) -> bool:
        fire_us = to_us(record.fire_time)
        keys = [self._key("entry", record.entry), self._key("fire", record.entry, str(fire_us)),
                self._key("fires"), self._key("claimed")]
        args = [version, fire_us, "1" if record.manual else "0", record.task_id,
                json.dumps(record.payload), record.owner, to_us(record.claimed_at),
                self._member(record.entry, fire_us), record.entry]
        return self._run("claim", keys, args)

    def drop_through(self, name: str, version: int, instant: datetime) -> bool:
        return self._run("drop", [self._key("entry", name)], [version, to_us(instant)])

    def mark_sent(self, entry: str, fire_time: datetime, sent_at: datetime) -> None:
        fire_us = to_us(fire_time)
        self._run("mark_sent", [self._key("fire", entry, str(fire_us)), self._key("claimed")],
                  [to_us(sent_at), self._member(entry, fire_us)])

    def _fires(self, members: Any) -> list[FireRecord]:
        pipe = self.client.pipeline(transaction=False)
        for member in members:
            entry, _, fire_us = _text(member).rpartition("\n")
            pipe.hgetall(self._key("fire", entry, fire_us))
        records = []
        for raw in self._redis("fires", pipe.execute):
            if not raw:
                continue
            h = {_text(k): _text(v) for k, v in raw.items()}
            records.append(FireRecord(
                entry=h["entry"], fire_time=from_us(h["fire_us"]), task_id=h["task_id"],
                payload=json.loads(h["payload"]), owner=h["owner"],
                claimed_at=from_us(h["claimed_us"]), state=h["state"],
                sent_at=from_us(h["sent_us"]) if "sent_us" in h else None,
                manual=h.get("manual") == "1"))
        return records

    def stale_claims(self, claimed_before: datetime) -> list[FireRecord]:
        members = self._redis("stale_claims", lambda: self.client.zrangebyscore(
            self._key("claimed"), "-inf", f"({to_us(claimed_before)}"))
        stale = [f for f in self._fires(members) if f.state == "claimed"]
        return sorted(stale, key=lambda f: f.fire_time)

    def take_over(self, record: FireRecord, owner: str, now: datetime,
                  claimed_before: datetime) -> bool:
        fire_us = to_us(record.fire_time)
        keys = [self._key("fire", record.entry, str(fire_us)), self._key("claimed")]
        return self._run("take_over", keys, [owner, to_us(now), to_us(claimed_before),
                                             self._member(record.entry, fire_us),
                                             str(to_us(record.claimed_at))])

    def list_fires(self, entry: str | None = None) -> list[FireRecord]:
        records = self._fires(self._redis("list_fires", lambda: self.client.zrange(
            self._key("fires"), 0, -1)))
        return [r for r in records if entry in (None, r.entry)]

    def prune_fires(self, before: datetime) -> int:
        members = self._redis("prune_fires", lambda: self.client.zrangebyscore(
            self._key("fires"), "-inf", f"({to_us(before)}"))
        old = [f for f in self._fires(members) if f.state == "sent"]
        if not old:
            return 0
        pipe = self.client.pipeline(transaction=True)
        for record in old:
            fire_us = to_us(record.fire_time)
            pipe.delete(self._key("fire", record.entry, str(fire_us)))
            pipe.zrem(self._key("fires"), self._member(record.entry, fire_us))
        self._redis("prune_fires", pipe.execute)
        return len(old)

    # -- lease -------------------------------------------------------------------
    def acquire_lease(self, owner: str, now: datetime, ttl: float) -> bool:
        now_us = to_us(now)
        return self._run("lease", [self._key("lease")],
                         [owner, now_us, now_us + int(ttl * 1_000_000)])

    def release_lease(self, owner: str) -> None:
        self._run("release", [self._key("lease")], [owner])

    def lease_holder(self, now: datetime) -> str | None:
        owner, expires = self._redis("lease_holder", lambda: self.client.hmget(
            self._key("lease"), "owner", "expires_us"))
        if owner is None or expires is None or int(expires) <= to_us(now):
            return None
        return _text(owner)


def store_for_url(url: str, *, app: Any = None, options: Mapping[str, Any] | None = None,
                  prefix: str = DEFAULT_PREFIX) -> RedisStore:
    """The store on the Redis server of ``url`` (the engine registry's beat store).

    On a Redis Cluster the prefix becomes a hash tag (``{celeriac:beat:}``), so every
    key of the schedule lives in one slot and its scripts stay atomic."""
    if is_cluster_url(url) and "{" not in prefix:
        prefix = "{" + prefix + "}"
    return RedisStore(url, prefix=prefix, options=dict(options or {}), app=app)
