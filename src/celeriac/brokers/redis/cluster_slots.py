"""Slots and unique claims of the Redis Cluster broker (see :meth:`Broker.acquire_slot`).

Keys (beside the cluster broker's, see :mod:`.cluster`):

``<prefix>{slot:<name>}_celeriac.slot.<name>`` (hash)
    lease token (``<token>@<queue>``) -> task id, one field per holder.
``<prefix>{slot:<name>}_celeriac.slotv.<name>`` (string)
    the hash's version, bumped by every holder added.
``<prefix>_celeriac.slots`` (set)
    names of slots that have or had holders (``celeriac status``).
``<prefix>_celeriac.unique.<key>`` (string)
    a unique claim, as on one Redis (one key: one slot).

A holder counts only while its lease lives, as on one Redis; but its lease is on
its queue's master, the slot on the slot name's. So ``acquire_slot`` reads the
holders and their version, checks every holder's lease (and the caller's) on its
queue's master (``ZSCORE`` of the lease expiry, the lease hash, the master's
``TIME``, one pipeline per master), and then runs ``SLOT_ACQUIRE`` on the slot's
master: unless the version changed meanwhile (then it starts again), it drops
the holders found dead, counts the rest and adds the caller below the limit, in
one atomic step. A holder found live may die before that step: the caller is
refused, never admitted over the limit. A lapsed lease, an ack, a release or
``expire_owner`` frees the place with nothing to renew or clean, as on one Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..base import Delivery
from ..slotting import SlotHolder
from .client import run_script
from .slots import CLAIM, UNCLAIM

# KEYS: slot hash, version; ARGV: version read, limit, token, task id, dead token...
# -> 1 (holds a place), 0 (full), -1 (changed since read: read again)
SLOT_ACQUIRE = r"""
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[1] then return -1 end
for i = 5, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return 1 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('INCR', KEYS[2])
return 1
"""
SCRIPTS = {"slot_acquire": SLOT_ACQUIRE, "claim": CLAIM, "unclaim": UNCLAIM}
_ATTEMPTS = 100


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ClusterSlots:
    """Mixed into :class:`~celeriac.brokers.redis.cluster.RedisClusterBroker`."""

    prefix: str
    client: Any
    _retrying: Any

    if TYPE_CHECKING:
        def _connection(self) -> Any: ...

        def queue_prefix(self, queue: str) -> str: ...

    def _slot_keys(self, name: str) -> tuple[str, str]:
        tag = f"{self.prefix}{{slot:{name}}}"
        return f"{tag}_celeriac.slot.{name}", f"{tag}_celeriac.slotv.{name}"

    def _leases(self, tokens: list[str]) -> dict[str, tuple[float | None, str | None]]:
        """``token -> (lease expiry or None when not live, owner)``, read on the masters."""
        commands: list[tuple[Any, ...]] = []
        for token in tokens:
            inner, _, queue = token.partition("@")
            prefix = self.queue_prefix(queue)
            commands += [("ZSCORE", f"{prefix}_celeriac.leases.{queue}", inner),
                         ("HGET", f"{prefix}_celeriac.lease.{inner}", "o"), ("TIME",)]
        replies = self._connection()[3].pipeline(commands) if commands else []
        out: dict[str, tuple[float | None, str | None]] = {}
        for i, token in enumerate(tokens):
            score, owner, now = replies[3 * i:3 * i + 3]
            clock = int(now[0]) + int(now[1]) / 1e6
            live = owner is not None and score is not None and float(score) >= clock
            out[token] = (float(score) if live else None, _text(owner) if owner else None)
        return out

    def acquire_slot(self, name: str, limit: int, delivery: Delivery) -> bool:
        return bool(self._retrying("slots", lambda: self._acquire(name, int(limit), delivery)))

    def _acquire(self, name: str, limit: int, delivery: Delivery) -> bool:
        key, version_key = self._slot_keys(name)
        conn = self._connection()
        router, script = conn[3], conn[2]["slot_acquire"]
        for _ in range(_ATTEMPTS):
            fields, version = router.pipeline([("HKEYS", key), ("GET", version_key)])
            holders = [_text(f) for f in fields]
            leases = self._leases(sorted({*holders, delivery.token}))
            if leases[delivery.token][0] is None:
                return False
            dead = [t for t in holders if leases[t][0] is None]
            got = int(run_script(router, script, [key, version_key], [
                _text(version or b"0"), limit, delivery.token,
                delivery.message.task_id or "", *dead]))
            if got >= 0:
                if got:
                    router.execute("SADD", f"{self.prefix}_celeriac.slots", name)
                return bool(got)
        return False  # the slot changed under us every time: as busy as it gets

    def release_slot(self, name: str, delivery: Delivery) -> bool:
        key, _ = self._slot_keys(name)
        router = self._connection()[3]
        return bool(int(self._retrying("slots", lambda: router.execute(
            "HDEL", key, delivery.token))))

    def slot_holders(self, name: str | None = None) -> list[SlotHolder]:
        return list(self._retrying("slots", lambda: self._holders(name)))

    def _holders(self, name: str | None) -> list[SlotHolder]:
        router = self._connection()[3]
        names = ([name] if name is not None else sorted(
            _text(n) for n in router.execute("SMEMBERS", f"{self.prefix}_celeriac.slots")))
        out = []
        for slot in names:
            fields = router.execute("HGETALL", self._slot_keys(slot)[0])
            pairs = (fields.items() if isinstance(fields, dict)
                     else zip(fields[::2], fields[1::2], strict=True))
            tasks = {_text(k): _text(v) for k, v in pairs}
            for token, (expires, owner) in self._leases(sorted(tasks)).items():
                if expires is not None:
                    out.append(SlotHolder(slot, token, tasks[token] or None, owner, expires))
        return sorted(out, key=lambda h: (h.name, h.tag))

    def claim_unique(self, key: str, value: str, seconds: float) -> str | None:
        full = f"{self.prefix}_celeriac.unique.{key}"
        conn = self._connection()
        reply = self._retrying("slots", lambda: run_script(
            conn[3], conn[2]["claim"], [full],
            [full, value, max(1, int(float(seconds) * 1000))]))
        return _text(reply[0]) if reply else None

    def release_unique(self, key: str, value: str) -> bool:
        full = f"{self.prefix}_celeriac.unique.{key}"
        conn = self._connection()
        return bool(int(self._retrying("slots", lambda: run_script(
            conn[3], conn[2]["unclaim"], [full], [full, value]))))
