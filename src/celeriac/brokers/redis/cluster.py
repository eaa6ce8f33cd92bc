"""The Redis Cluster broker (``redis+cluster://``, ``rediss+cluster://``).

Capabilities: those of :class:`~.broker.RedisBroker` (the same scripts, leases,
delays, priorities, dead letters, rate limits, slots and unique claims; slots
are kept as :mod:`.cluster_slots` says).

Key → slot layout: every key of one queue carries the hash tag of that queue,
``<prefix>{<queue>}``, in front of the single-Redis name of
:mod:`.broker` (``{celery}celery``, ``{celery}celery\\x06\\x163``,
``{celery}_celeriac.delayed.celery``, ``{celery}_celeriac.leases.celery``,
``{celery}_celeriac.lease.<token>``, ``{celery}_celeriac.owner.<owner>``,
``{celery}_celeriac.returned``, ``{celery}_celeriac.seq``,
``{celery}_celeriac.wake.celery``, ``{celery}_celeriac.dead*``...). So one
queue lives in one slot, and every script runs on the master of that slot
with all its keys there (atomic as on one Redis), while different queues
spread over the shards. The scripts of :mod:`.scripts` are the single-Redis
ones: each is called with the queue's tagged prefix and that prefix as its one
declared key (which routes it). Keys that belong to no queue stay untagged and
spread by their own name: ``<prefix>_celeriac.queues``, kombu's bindings and
``<prefix>_celeriac.rate.<key>`` (one bucket, one key). A prefix that carries
its own hash tag (``{app}:``) puts everything in that one slot.

Differences from one Redis: a lease token is ``<token>@<queue>`` and a dead
letter id ``<id>@<queue>`` (they name their slot); ``receive`` on several queues
reads every queue's ready lists in one pipeline per master and then leases
priority-major as one Redis does (a ``RECEIVE`` per non-empty queue and step),
and waits for a wake-up on the first queue only, polling the others every
``polling_interval`` (0.1 s when None);
``expire_owner`` and listing every queue's dead letters visit every known queue.
Connection errors, redirections and ``CLUSTERDOWN`` read the slot map again and
retry by ``retry_policy`` (default: about 15 s, long enough for a failover).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

import redis

from ...messages import Message
from ..base import (
    BroadcastChannel,
    Broker,
    Capabilities,
    DeadLetter,
    Delivery,
    Publish,
    QueueStats,
)
from ..buckets import bucket_take
from . import scripts as redis_scripts
from .bookkeeping import SEP, read_dead_letters, read_delayed, store_dead_letter
from .broadcast import ClusterBroadcast
from .broker import _SCRIPTS, RedisBroker
from .client import Connection, run_script
from .cluster_client import cluster_connection, router_of
from .cluster_slots import SCRIPTS as SLOT_SCRIPTS
from .cluster_slots import ClusterSlots
from .durability import checked_wait, wait_command
from .publishing import ETA
from .replies import parse_receive

_CHUNK = 1000
_CLUSTER_SCRIPTS = {**_SCRIPTS, **SLOT_SCRIPTS}


def split_token(token: str) -> tuple[str, str]:
    """``(lease token, queue)`` of a cluster token or dead-letter id ``<id>@<queue>``."""
    inner, _, queue = token.partition("@")
    return inner, queue


class RedisClusterBroker(ClusterSlots, RedisBroker):
    """The Redis broker on a Redis Cluster: one hash slot per queue."""

    schemes: ClassVar[tuple[str, ...]] = ("redis+cluster", "rediss+cluster")
    capabilities: ClassVar[Capabilities] = RedisBroker.capabilities

    def __init__(self, url: str, *, lease_seconds: float = 30.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, lease_seconds=lease_seconds, options=options)
        self._seen: set[str] = set()

    # -- plumbing ----------------------------------------------------------------
    def _connection(self) -> Connection:
        conn = self._conn = cluster_connection(self.url, self.options, _CLUSTER_SCRIPTS,
                                               self._conn)
        return conn

    def queue_prefix(self, queue: str) -> str:
        """The prefix of every key of ``queue``: the global prefix plus its hash tag."""
        return f"{self.prefix}{{{queue}}}"

    def _qscript(self, queue: str, name: str, *args: Any) -> Any:
        """Run a script on the master of ``queue``'s slot, with the queue's prefix."""
        _, _, scripts, router = self._connection()
        prefix = self.queue_prefix(queue)
        return run_script(router, scripts[name], [prefix], [prefix, *args])

    def _list_key(self, queue: str, step: int) -> str:
        base = f"{self.queue_prefix(queue)}{queue}"
        return f"{base}{SEP}{step}" if step else base

    def _known_queues(self) -> list[str]:
        return sorted(set(self.queues()) | self._seen)

    # -- producing ----------------------------------------------------------------
    def publish(self, message: Message, queue: str, *, not_before: float | None = None,
                priority: int | None = None) -> None:
        wait = wait_command(self.options)
        if (queue not in self._declared or wait is not None
                or (not_before is not None and not_before > self.now())):
            self.publish_many([Publish(message, queue, not_before, priority)])
            return
        key, text = self.render_envelope(message, queue, priority)
        self.publish_rendered(key, queue, text)

    def declared(self, queue: str) -> bool:
        return queue in self._declared and wait_command(self.options) is None

    def publish_rendered(self, key: str, queue: str, text: str) -> None:
        """The ``PUBLISH`` script on the queue's slot (message and wake token together)."""
        self._retrying("publish", partial(self._qscript, queue, "publish", key, queue, text))

    def _send(self, staged: tuple[dict[str, list[str]], dict[str, dict[str, float]],
                                  dict[str, int], set[str]]) -> None:
        ready, delayed, counts, new_queues = staged
        commands = self._binding_commands(new_queues)
        blocks: dict[str, list[tuple[Any, ...]]] = {}
        queue_of = {self._list_key(q, step): q for q in counts for step in self.steps}
        for key, texts in ready.items():
            queue = queue_of[key]
            for i in range(0, len(texts), _CHUNK):
                blocks.setdefault(queue, []).append(("LPUSH", key, *texts[i:i + _CHUNK]))
        for name, members in delayed.items():
            queue = name[len(ETA):] if name.startswith(ETA) else name
            kind = "eta" if name.startswith(ETA) else "delayed"
            scored = [x for member, due in members.items() for x in (repr(due), member)]
            key = f"{self.queue_prefix(queue)}_celeriac.{kind}.{queue}"
            blocks.setdefault(queue, []).append(("ZADD", key, *scored))
        wait = wait_command(self.options)
        for queue, count in counts.items():
            wake = f"{self.queue_prefix(queue)}_celeriac.wake.{queue}"
            block = blocks.setdefault(queue, [])
            block += [("LPUSH", wake, *["1"] * min(count, redis_scripts.WAKE_CAP)),
                      ("LTRIM", wake, 0, redis_scripts.WAKE_CAP - 1)]
            if wait is not None:  # on the connection to this queue's master, after its writes
                block.append(wait)
        for block in blocks.values():
            commands += block
        replies = self._connection()[3].pipeline(commands)
        if wait is not None:
            checked_wait(self.options, [r for c, r in zip(commands, replies, strict=True)
                                        if c[0] == "WAIT"])

    def await_replicas(self) -> None:
        """Nothing more: on a cluster ``_send`` ends each master's writes with ``WAIT``."""

    # -- consuming ------------------------------------------------------------------
    def _receive_once(self, queues: list[str], owner: str,
                      limit: int) -> tuple[list[Delivery], float | None]:
        self._seen.update(queues)
        if len(queues) == 1:
            reply = self._qscript(queues[0], "receive",
                                  *self._receive_args(queues, owner, limit))
            return self._deliveries(reply, queues, owner)
        return self._receive_several(queues, owner, limit)

    def settle_and_receive(self, store: Any, results: Sequence[tuple[str, Mapping[str, Any]]],
                           expires: float | None, acks: Sequence[Delivery],
                           queues: Sequence[str], *, owner: str,
                           limit: int = 1) -> tuple[list[bool], int, list[Delivery]]:
        """Results and leases live in different slots: the interface's steps, in order."""
        return Broker.settle_and_receive(self, store, results, expires, acks, queues,
                                         owner=owner, limit=limit)

    def peek_revocations(self, store: Any) -> bool:
        """Task metas live in other slots than the queues: the worker reads them itself."""
        return False

    def _ack_and_receive_once(self, queues: list[str], owner: str, limit: int,
                              acks: list[Delivery]) -> tuple[int, list[Delivery], float | None]:
        """Tokens live in their own queues' slots: acknowledged per slot, then the lease."""
        done = self.ack(acks)
        return (done, *self._receive_once(queues, owner, limit))

    def _receive_several(self, queues: list[str], owner: str,
                         limit: int) -> tuple[list[Delivery], float | None]:
        """Priority first, then the queues' order, as one Redis serves them: one pipeline
        per master runs ``RECEIVE`` with limit 0 on each queue (lapsed leases back, due
        delayed messages promoted) and reads the ready lists' lengths; then ``RECEIVE``
        takes from the non-empty lists, step by step."""
        conn = self._connection()
        scripts, router = conn[2], router_of(conn)
        sha = scripts["receive"].sha
        commands: list[tuple[Any, ...]] = []
        for queue in queues:
            prefix = self.queue_prefix(queue)
            commands.append(("EVALSHA", sha, 1, prefix, prefix,
                             *self._receive_args([queue], owner, 0)))
            commands += [("LLEN", self._list_key(queue, step)) for step in self.steps]
        try:
            replies = router.pipeline(commands)
        except redis.exceptions.NoScriptError:  # a restarted master: load, send again
            router.load_script(scripts["receive"].script)
            replies = router.pipeline(commands)
        width = 1 + len(self.steps)
        hints = [float(replies[i][1]) for i in range(0, len(replies), width) if replies[i][1]]
        out: list[Delivery] = []
        for s_index, step in enumerate(self.steps):
            for q_index, queue in enumerate(queues):
                if len(out) >= limit:
                    return out, None
                if not int(replies[q_index * width + 1 + s_index]):
                    continue
                args = [owner, limit - len(out), self.lease_seconds, self._nonce, "", 1,
                        queue, step]  # "": no meta peek (metas live in other slots)
                got, _ = self._deliveries(self._qscript(queue, "receive", *args), [queue],
                                          owner)
                out += got
        return out, (min(hints) if hints and not out else None)

    def _wait_then_receive(self, queues: list[str], owner: str, limit: int,
                           remaining: float, hint: float | None
                           ) -> tuple[list[Delivery], float | None]:
        """``BLPOP`` the first queue's wake list, then ``RECEIVE``: pipelined on the
        connection to its master for one queue; for several, the others are polled
        every ``polling_interval`` (0.1 s when None)."""
        wait = min(max(remaining, 0.0), 5.0)
        if self.polling_interval is not None or len(queues) > 1:
            wait = min(wait, self.polling_interval or 0.1)
        if hint is not None:
            wait = min(wait, max(hint, 0.0) + 0.002)
        first = queues[0]
        prefix = self.queue_prefix(first)
        blpop = ("BLPOP", f"{prefix}_celeriac.wake.{first}", max(round(wait, 3), 0.001))
        _, _, scripts, router = self._connection()
        if len(queues) > 1:
            router.pipeline([blpop])
            return self._receive_several(queues, owner, limit)
        try:
            _, reply = router.pipeline([blpop, (
                "EVALSHA", scripts["receive"].sha, 1, prefix, prefix,
                *self._receive_args([first], owner, limit))])
        except redis.exceptions.NoScriptError:
            return self._receive_once(queues, owner, limit)
        return self._deliveries(reply, [first], owner)

    def _deliveries(self, reply: list[Any], queues: list[str],
                    owner: str) -> tuple[list[Delivery], float | None]:
        got, hint = parse_receive(reply, queues, owner, self.lease_seconds)
        return [_tagged(d) for d in got], hint

    def _by_queue(self, deliveries: Sequence[Delivery]) -> dict[str, list[tuple[int, str]]]:
        groups: dict[str, list[tuple[int, str]]] = {}
        for index, delivery in enumerate(deliveries):
            inner, queue = split_token(delivery.token)
            groups.setdefault(queue, []).append((index, inner))
        return groups

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        done = 0
        for queue, rows in self._by_queue(deliveries).items():
            for i in range(0, len(rows), _CHUNK):
                part = [tok for _, tok in rows[i:i + _CHUNK]]
                done += int(self._retrying("ack", partial(self._qscript, queue, "ack", *part)))
        return done

    def renew(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> list[bool]:
        extend = self.lease_seconds if seconds is None else float(seconds)
        out = [False] * len(deliveries)
        for queue, rows in self._by_queue(deliveries).items():
            for i in range(0, len(rows), _CHUNK):
                part = rows[i:i + _CHUNK]
                flags = self._retrying("renew", partial(
                    self._qscript, queue, "renew", extend, *[tok for _, tok in part]))
                for (index, _), flag in zip(part, flags, strict=True):
                    out[index] = bool(int(flag))
        return out

    def release(self, delivery: Delivery, *, not_before: float | None = None,
                failed: bool = False) -> bool:
        inner, queue = split_token(delivery.token)
        nb = "" if not_before is None else repr(float(not_before))
        return bool(self._retrying("release", lambda: self._qscript(
            queue, "release", inner, nb, uuid.uuid4().hex, int(failed))))

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        inner, queue = split_token(delivery.token)
        return bool(self._retrying("dead_letter", lambda: self._qscript(
            queue, "dead_letter", inner, reason, delivery.token)))

    def dead_letter_message(self, message: Message, queue: str, reason: str) -> str:
        prio = self.message_priority(message, None)
        text = json.dumps(self._envelope(message, queue, prio))
        dead_id = f"{uuid.uuid4().hex}@{queue}"
        self._retrying("dead_letter_message", partial(
            store_dead_letter, self.client, self.queue_prefix(queue), dead_id, queue,
            self._step(prio), reason, text))
        self._retrying("dead_letter_message", partial(
            self.client.sadd, self._key("_celeriac.queues"), queue))
        return dead_id

    def expire_owner(self, owner: str) -> int:
        return sum(int(self._retrying("expire_owner", partial(
            self._qscript, queue, "expire_owner", owner))) for queue in self._known_queues())

    # -- admin -------------------------------------------------------------------------
    def purge(self, queue: str) -> int:
        return int(self._retrying("purge", lambda: self._qscript(
            queue, "purge", queue, *self.steps)))

    def stats(self, queue: str) -> QueueStats:
        ready, delayed, leased, dead = self._retrying(
            "stats", lambda: self._qscript(queue, "stats", queue, *self.steps))
        return QueueStats(queue, ready=int(ready), delayed=int(delayed), leased=int(leased),
                          dead=int(dead))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        names = [queue] if queue is not None else self._known_queues()
        out: list[DeadLetter] = []
        for name in names:
            out += self._retrying("dead_letters", partial(
                read_dead_letters, self.client, self.queue_prefix(name), name, limit))
        return sorted(out, key=lambda d: d.dead_at)[:max(0, limit)]

    def retry_dead_letter(self, dead_id: str) -> bool:
        _, queue = split_token(dead_id)
        if not queue:
            return False
        return bool(self._retrying("retry_dead_letter",
                                   lambda: self._qscript(queue, "retry_dead", dead_id)))

    def purge_dead_letters(self, queue: str | None = None) -> int:
        names = [queue] if queue is not None else self._known_queues()
        return sum(int(self._retrying("purge_dead_letters", partial(
            self._qscript, name, "purge_dead", name))) for name in names)

    def take_token(self, key: str, rate: float, capacity: float = 1.0) -> float:
        bucket_take(1.0, 0.0, 0.0, rate, capacity)  # the same argument checks as elsewhere
        _, _, scripts, router = self._connection()
        bucket = self._key(f"_celeriac.rate.{key}")
        return float(self._retrying("take_token", lambda: run_script(
            router, scripts["take_token"], [bucket],
            [self.prefix, key, repr(float(rate)), repr(float(capacity))])))

    def delayed(self, queue: str, limit: int = 1000) -> list[tuple[float, Message]]:
        return self._retrying("delayed", lambda: read_delayed(
            self.client, self.queue_prefix(queue), queue, limit))

    def broadcast_channel(self) -> BroadcastChannel:
        conn = self._connection()
        channel = getattr(self, "_broadcast", None)
        if channel is None or channel.client is not conn[1]:
            channel = self._broadcast = ClusterBroadcast(conn[1], self.prefix)
        return channel



def _tagged(delivery: Delivery) -> Delivery:
    """The delivery with its token naming its queue (``<token>@<queue>``)."""
    token = f"{delivery.token}@{delivery.queue}"
    tag = token if delivery.tag == delivery.token else delivery.tag
    return replace(delivery, token=token, tag=tag)
