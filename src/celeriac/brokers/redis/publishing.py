"""Publishing to the Redis broker: ready lists, the delayed set, bindings, wake-up tokens.

Key layout: :mod:`.broker`. A batch is one plain pipeline (LPUSH / ZADD, kombu's
bindings for queues this instance has not declared yet, wake-up tokens). One
ready message to a queue this instance already declared (every ``delay()`` after
the first) is its ``LPUSH`` and the wake-up token's: one round trip, no script to
run (a plain ``delay()`` renders its text from a template, :mod:`celeriac.app.templates`,
and writes it packed once, :mod:`.pushing`).
A wake list over its cap means no consumer waits: the token is left out for 10 ms,
then pushed again with an ``LTRIM`` back to the cap (:meth:`RedisPublishing.publish_rendered`).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from bisect import bisect
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from ...messages import Message
from ..base import Publish
from . import scripts as redis_scripts
from .bookkeeping import SEP
from .durability import wait_command
from .pushing import QUIET_WAKE, Pusher

if TYPE_CHECKING:
    from .client import Connection

_CHUNK = 1000
_T = TypeVar("_T")
ETA = "\x00eta\x00"  # marks the staged _celeriac.eta.<queue> entries (never a queue name)


class RedisPublishing:
    """The producing half of :class:`~celeriac.brokers.redis.broker.RedisBroker`."""

    prefix: str
    steps: tuple[int, ...]
    delay_in_broker: bool
    _declared: set[str]
    #: wake list -> until when its token is left out (found over its cap: no one waits)
    _quiet_wake: dict[str, float]

    if TYPE_CHECKING:
        options: dict[str, Any]

        def _connection(self) -> Connection: ...

        def await_replicas(self) -> None: ...

        def _script(self, name: str, *args: Any) -> Any: ...

        def _retrying(self, what: str, call: Callable[[], _T]) -> _T: ...

        def now(self) -> float: ...

        def message_priority(self, message: Message, priority: int | None) -> int: ...

    def _step(self, priority: int) -> int:
        return self.steps[bisect(self.steps, priority) - 1]

    def _list_key(self, queue: str, step: int) -> str:
        return f"{self.prefix}{queue}{SEP}{step}" if step else f"{self.prefix}{queue}"

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def publish(self, message: Message, queue: str, *, not_before: float | None = None,
                priority: int | None = None) -> None:
        if queue not in self._declared or (not_before is not None and not_before > self.now()):
            self.publish_many([Publish(message, queue, not_before, priority)])
            return
        # fast path (a declared queue, ready now): one script call, one reply
        key, text = self.render_envelope(message, queue, priority)
        self.publish_rendered(key, queue, text)
        self.await_replicas()

    def declared(self, queue: str) -> bool:
        """True once this instance wrote the queue's bindings and no replica wait is asked
        for (:meth:`publish_rendered` may then be used for it alone)."""
        return queue in self._declared and wait_command(self.options) is None

    def pusher(self, key: str, queue: str) -> Pusher | None:
        """The packed publish to ready list ``key`` (from :meth:`render_envelope`) of a
        :meth:`declared` queue, None while it is not, and on Redis Cluster (its commands
        are routed by slot, :mod:`.cluster_client`), see :mod:`.pushing`."""
        if not self.declared(queue) or not isinstance(self._connection()[1], redis.Redis):
            return None
        return Pusher(self, key, queue)

    def render_envelope(self, message: Message, queue: str,
                        priority: int | None) -> tuple[str, str]:
        """``(list key, stored text)`` of a ready message (without the key prefix)."""
        prio = self.message_priority(message, priority)
        step = self._step(prio)
        return (f"{queue}{SEP}{step}" if step else queue,
                json.dumps(self._envelope(message, queue, prio)))

    def publish_rendered(self, key: str, queue: str, text: str) -> None:
        """LPUSH ``text`` (from :meth:`render_envelope`) to a :meth:`declared` queue, with
        a wake-up token in the same round trip (plain commands, no script to run).

        A wake list found over its cap has tokens nobody takes (no consumer waits):
        for :data:`QUIET_WAKE` seconds after that the token is left out (a plain
        ``LPUSH``), then pushed again with an ``LTRIM`` back to the cap.
        """
        wake = f"{self.prefix}_celeriac.wake.{queue}"
        quiet = self._quiet_wake.get(wake)
        now = time.monotonic() if quiet is not None else 0.0
        if quiet is not None and now < quiet:
            self._retrying("publish", partial(self._connection()[3].execute, "LPUSH",
                                              f"{self.prefix}{key}", text))
            return
        commands: list[tuple[Any, ...]] = [("LPUSH", f"{self.prefix}{key}", text),
                                           ("LPUSH", wake, "1")]
        if quiet is not None:
            commands.append(("LTRIM", wake, 0, redis_scripts.WAKE_CAP - 1))
        replies = self._retrying("publish", partial(self._connection()[3].pipeline, commands))
        if int(replies[1]) > redis_scripts.WAKE_CAP:
            self._quiet_wake[wake] = (now or time.monotonic()) + QUIET_WAKE
        elif quiet is not None:
            self._quiet_wake.pop(wake, None)

    def publish_many(self, items: Iterable[Publish]) -> None:
        batch = list(items)
        now = self.now()
        for start in range(0, len(batch), 10 * _CHUNK):
            chunk = batch[start:start + 10 * _CHUNK]
            staged = self._stage(chunk, now)
            self._retrying("publish", partial(self._send, staged))
            self._declared.update(staged[3])
        self.await_replicas()

    def _stage(self, batch: list[Publish], now: float) -> tuple[
            dict[str, list[str]], dict[str, dict[str, float]], dict[str, int], set[str]]:
        ready: dict[str, list[str]] = {}
        delayed: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for item in batch:
            prio = self.message_priority(item.message, item.priority)
            text = json.dumps(self._envelope(item.message, item.queue, prio))
            step = self._step(prio)
            due = float(item.not_before or 0.0)
            future = due > now
            parked = self.delay_in_broker or not item.message.headers.get("eta")  # Celery: now
            if future and parked:
                member = f"{uuid.uuid4().hex}{step:02d}{text}"
                delayed.setdefault(item.queue, {})[member] = due
            else:
                ready.setdefault(self._list_key(item.queue, step), []).append(text)
            if future and not parked:  # ready for Celery workers; RECEIVE
                eta = delayed.setdefault(ETA + item.queue, {})  # parks it for celeriac's
                eta[hashlib.sha1(text.encode()).hexdigest()] = due
            counts[item.queue] = counts.get(item.queue, 0) + 1
        return ready, delayed, counts, set(counts) - self._declared

    @staticmethod
    def _envelope(message: Message, queue: str, priority: int) -> dict[str, Any]:
        env = message.to_envelope(queue, priority)
        info = env["properties"]["delivery_info"]
        if isinstance(info, dict):  # a malformed one is kept for the worker to name
            info["routing_key"] = queue
        return env

    def _binding_commands(self, queues: Iterable[str]) -> list[tuple[Any, ...]]:
        """kombu's bindings and celeriac's queue set for queues not declared yet."""
        commands: list[tuple[Any, ...]] = []
        for queue in queues:
            member = f"{queue}{SEP}{SEP}{queue}"
            commands += [("SADD", self._key(f"_kombu.binding.{queue}"), member),
                         ("SADD", self._key(f"_kombu.binding_permanent.{queue}"), member),
                         ("SADD", self._key("_celeriac.queues"), queue)]
        return commands

    def _send(self, staged: tuple[dict[str, list[str]], dict[str, dict[str, float]],
                                  dict[str, int], set[str]]) -> None:
        ready, delayed, counts, new_queues = staged
        commands = self._binding_commands(new_queues)
        for key, texts in ready.items():
            for i in range(0, len(texts), _CHUNK):
                commands.append(("LPUSH", key, *texts[i:i + _CHUNK]))
        for queue, members in delayed.items():
            scored = [x for member, due in members.items() for x in (repr(due), member)]
            key = (f"_celeriac.eta.{queue[len(ETA):]}" if queue.startswith(ETA)
                   else f"_celeriac.delayed.{queue}")
            commands.append(("ZADD", self._key(key), *scored))
        for queue, count in counts.items():
            wake = self._key(f"_celeriac.wake.{queue}")
            commands += [("LPUSH", wake, *["1"] * min(count, redis_scripts.WAKE_CAP)),
                         ("LTRIM", wake, 0, redis_scripts.WAKE_CAP - 1)]
        self._connection()[3].pipeline(commands)
