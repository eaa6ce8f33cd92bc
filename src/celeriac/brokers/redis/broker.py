"""The Redis broker (``redis://``, ``rediss://``, ``sentinel://``), wire-compatible with Celery.

Capabilities: native delay yes (sorted set), priorities yes (0 first, kombu's steps 0/3/6/9), lease
renewal yes, push wake-up yes for celeriac producers (see *Waiting*), multi-host yes.

Key layout (each key behind ``global_keyprefix``, as in kombu; ``S`` = kombu's ``\\x06\\x16``):

``<queue>``, ``<queue>S3``, ``<queue>S6``, ``<queue>S9`` (lists)
    ready messages as kombu's JSON envelope, LPUSHed by producers (ours and
    Celery's) and taken from the right end: FIFO. Priority p goes to step
    ``steps[bisect(steps, p) - 1]`` (steps 0, 3, 6, 9; step 0 is the bare
    name; lower steps are served first).
``_kombu.binding.<queue>``, ``_kombu.binding_permanent.<queue>`` (sets)
    member ``<queue>SS<queue>``: kombu 5.7's bindings of the default
    exchange, written once per queue and broker instance.
``_celeriac.queues`` (set)
    names of the queues published to.
``_celeriac.delayed.<queue>`` (zset)
    messages not yet due: member = 32-hex uid + 2-digit step + envelope,
    score = due time (epoch seconds). By default (``delay_in_broker=False``,
    safe for fleets that include Celery workers, which never read this set) a
    countdown/eta message is LPUSHed to its ready list at once with its ``eta``
    header, as Celery does, and ``_celeriac.eta.<queue>`` (zset: sha1 of the
    envelope -> due time) lets ``RECEIVE`` park it here atomically instead of
    leasing it early. ``delay_in_broker=True`` ZADDs it here directly.
``_celeriac.lease.<token>`` (hash)
    one leased message: ``m`` envelope, ``q`` queue, ``s`` step, ``o``
    owner, ``dc`` delivery count, ``lc`` lost count, ``fd`` first delivery.
``_celeriac.leases.<queue>`` (zset)
    token -> lease expiry, by Redis server time.
``_celeriac.owner.<owner>`` (set)
    tokens an owner holds (for ``expire_owner``).
``_celeriac.seq`` (string)
    lease counter; a token is a per-instance nonce plus the counter, so it
    is never reused, and the token is the fence.
``_celeriac.returned`` (hash)
    envelope -> ``"dc lc first"`` for messages given back (lapsed or
    released), so their counters survive the trip through a kombu-format
    ready list. An entry whose message a *Celery* worker consumes is not
    removed; the hash expires a week after the last give-back, which bounds
    that leak (only mixed fleets have it; an expired entry only resets counts).
``_celeriac.wake.<queue>`` (list)
    at most 16 wake-up tokens pushed by celeriac publishers.
``_celeriac.rate.<key>`` (hash)
    a rate-limit token bucket (``t`` tokens, ``u`` server time), see :mod:`.tokens`.
``_celeriac.dead`` (zset), ``_celeriac.deadq.<queue>`` (zset), ``_celeriac.dead.<id>`` (hash)
    dead letters by time, all and per queue; the hash holds ``m q s r dc lc
    fd at`` (``r`` = reason).

Celery's ``unacked``, ``unacked_index`` and ``unacked_mutex`` are not used: leases
renewed by heartbeats replace the visibility timeout (that option is ignored).

Lua scripts: :mod:`.scripts` (every state change but a plain publish, fenced by
the lease token) and :mod:`.tokens` (``TAKE_TOKEN``, ``_celeriac.rate.<key>``).
Publishing is a plain pipeline (LPUSH / ZADD, bindings, wake token; see
:mod:`.publishing`), one round trip. The scripts build key names from the
prefix (on Redis Cluster, :mod:`.cluster`, one with the queue's hash tag).

Crash analysis: a message leaves a ready list only inside the ``RECEIVE``
script, which records the lease in the same atomic step; a consumer killed
at any point leaves the message either ready or leased, and a lapsed lease
goes back to the head of its ready list at the next ``receive`` of any
consumer of that queue (lost count + 1, ``redelivered``). Redelivered
messages get ``properties.delivery_info.redelivered = true`` in the message
handed out; the stored envelope is never rewritten. With AOF on, Redis
replays every script, so accepted messages survive a Redis crash too.

Waiting: when nothing is ready, ``receive`` BLPOPs the queues' wake lists
(celeriac publishers push a token with every publish) with the next
``RECEIVE`` pipelined behind it on the same connection, so Redis leases a new
message the moment the BLPOP returns, in the same round trip. The wait is bounded
by the next delayed due time or lease expiry, by 5 s, and by ``polling_interval``
(default 0.1 s, the latency of a Celery producer's messages; ``None`` stops polling).

Failures: ``receive`` swallows connection errors (from the third in a row it reports
an outage, :class:`celeriac.retry.Streak`), backs off (up to 1 s) and retries until
its timeout, then returns ``[]``; other calls retry by ``retry_policy`` through
:func:`celeriac.retry.call`, then raise :class:`~celeriac.exceptions.OperationalError`
naming the URL (one attempt inside a producer's publish, which owns the policy and
the deadline). Scripts are reloaded after ``NOSCRIPT``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, TypeVar

import redis

from ...messages import Message
from ...retry import RetryPolicy, Streak, attempt_error
from ..base import (
    BroadcastChannel,
    Broker,
    Capabilities,
    DeadLetter,
    Delivery,
    QueueStats,
)
from ..buckets import bucket_take
from . import scripts as redis_scripts
from .bookkeeping import queue_names, read_dead_letters, read_delayed, store_dead_letter
from .broadcast import RedisBroadcast
from .client import (
    RETRYABLE_ERRORS,
    Connection,
    connection,
    evalsha,
    retrying,
    run_pipeline,
    run_script,
    where_of,
)
from .durability import ReplicaWaits, retry_policy_for
from .publishing import RedisPublishing
from .replies import parse_receive
from .result_scripts import SETTLE
from .settling import RedisSettling
from .slots import RedisSlots
from .tokens import SCRIPTS as TOKEN_SCRIPTS

#: how ``receive`` waits between attempts while Redis is unreachable (back within ~1 s)
RECEIVE_BACKOFF = RetryPolicy(max_retries=None, interval_start=0.05, interval_step=0.2,
                              interval_max=1.0)
DEFAULT_STEPS = (0, 3, 6, 9)
_CHUNK = 1000
#: seconds a lease that found nothing lets the next receive skip straight to the wait
JUST_LOOKED = 0.05
_T = TypeVar("_T")
_SCRIPTS = {**redis_scripts.ALL, **TOKEN_SCRIPTS, "settle": SETTLE}


class RedisBroker(ReplicaWaits, RedisPublishing, RedisSettling, RedisSlots, Broker):
    """Celery-compatible Redis broker with leases, delays and dead letters."""

    schemes: ClassVar[tuple[str, ...]] = ("redis", "rediss", "sentinel")
    capabilities: ClassVar[Capabilities] = Capabilities(
        native_delay=True, priorities=True, lease_renewal=True, push_wakeup=True,
        multi_host=True, ready_times=False,  # ready lists hold kombu's envelope, no time
    )

    def __init__(self, url: str, *, lease_seconds: float = 30.0,
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, lease_seconds=lease_seconds, options=options)
        self.prefix = str(self.options.get("global_keyprefix") or "")
        self.steps = tuple(sorted({int(s) for s in self.options.get("priority_steps")
                                   or DEFAULT_STEPS} | {0}))
        interval = self.options.get("polling_interval", 0.1)
        self.polling_interval = None if interval is None else float(interval)
        self.retry_policy = retry_policy_for(url, self.options)
        self.delay_in_broker = bool(self.options.get("delay_in_broker", False))
        self._nonce = uuid.uuid4().hex[:8] + ":"
        self._declared: set[str] = set()
        self._quiet_wake: dict[str, float] = {}
        #: (pid, client, scripts, direct connection), replaced as a whole so threads
        #: never see a half-built connection; rebuilt after a fork
        self._conn: Connection | None = None
        #: the result store's task meta key prefix ``RECEIVE`` reads (see
        #: :meth:`peek_revocations`); "" reads nothing
        self._peek = ""
        #: thread id -> (queues, owner, monotonic time, hint) of its last lease that found
        #: nothing (``settle_and_receive``): a receive right after it waits at once
        self._empty: dict[int, tuple[tuple[str, ...], str, float, float | None]] = {}

    # -- plumbing ----------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        """This process's client (a new one after a fork)."""
        return self._connection()[1]

    def _connection(self) -> Connection:
        conn = self._conn = connection(self.url, self.options, _SCRIPTS, self._conn)
        return conn

    def _script(self, name: str, *args: Any) -> Any:
        """Run a script on this thread's raw connection (see :class:`Direct`)."""
        _, _, scripts, direct = self._connection()
        return run_script(direct, scripts[name], [], [self.prefix, *args])

    def _retrying(self, what: str, call: Callable[[], _T]) -> _T:
        return retrying(self.url, what, call, self.retry_policy)

    # -- consuming ------------------------------------------------------------------
    def receive(self, queues: Sequence[str], *, owner: str, limit: int = 1,
                timeout: float = 1.0) -> list[Delivery]:
        return self.ack_and_receive((), queues, owner=owner, limit=limit, timeout=timeout)[1]

    def ack_and_receive(self, acks: Sequence[Delivery], queues: Sequence[str], *, owner: str,
                        limit: int = 1, timeout: float = 1.0) -> tuple[int, list[Delivery]]:
        """``ACK`` and ``RECEIVE`` pipelined: one round trip (acks that cannot get through
        before ``timeout`` raise, so the caller keeps them for its next turn)."""
        acks = list(acks)
        done = self.ack(acks[:-_CHUNK]) if len(acks) > _CHUNK else 0
        pending = acks[-_CHUNK:]
        queues = list(dict.fromkeys(queues))
        if not queues:
            done += self.ack(pending) if pending else 0
            time.sleep(max(0.0, timeout))
            return done, []
        deadline = time.monotonic() + max(0.0, timeout)
        pauses, hint, waited = RECEIVE_BACKOFF.intervals(), None, False
        if not pending and timeout > 0:  # nothing ready a moment ago: wait, then lease
            waited, hint = self._looked_just_now(queues, owner)
        limit = max(1, int(limit))
        streak = Streak(where_of(self.url), "receive")  # reports an outage
        while True:
            try:
                if waited:  # the wait and the next attempt share one round trip
                    got, hint = self._wait_then_receive(queues, owner, limit,
                                                        deadline - time.monotonic(), hint)
                elif pending:
                    acked, got, hint = self._ack_and_receive_once(queues, owner, limit, pending)
                    done, pending = done + acked, []
                else:
                    got, hint = self._receive_once(queues, owner, limit)
                streak.ok()
                if got:
                    return done, got
                waited, pauses = True, RECEIVE_BACKOFF.intervals()
            except RETRYABLE_ERRORS as exc:
                streak.failed(exc)
                if pending and deadline - time.monotonic() <= 0:
                    # the acks did not get through: the caller keeps them for its next
                    # turn; an outage, which the process's watch reports (no traceback)
                    raise attempt_error(where_of(self.url), "ack", exc) from exc
                waited = False
                time.sleep(min(next(pauses), max(0.0, deadline - time.monotonic())))
            if deadline - time.monotonic() <= 0 and not pending:
                return done, []

    def _found_nothing(self, queues: Sequence[str], owner: str, hint: float | None) -> None:
        self._empty[threading.get_ident()] = (tuple(queues), owner, time.monotonic(), hint)

    def _looked_just_now(self, queues: list[str], owner: str) -> tuple[bool, float | None]:
        """(True, hint) when this thread's last lease of these queues found nothing less
        than :data:`JUST_LOOKED` ago: its ``RECEIVE`` also cleared the stale wake-up
        tokens, so a wait on the wake lists (with the lease behind it) misses nothing a
        celeriac producer sends, and a lone task costs one round trip less."""
        last = self._empty.pop(threading.get_ident(), None)
        if last is None or last[0] != tuple(queues) or last[1] != owner:
            return False, None
        elapsed = time.monotonic() - last[2]
        if elapsed > JUST_LOOKED:
            return False, None
        return True, (None if last[3] is None else last[3] - elapsed)

    def _receive_args(self, queues: list[str], owner: str, limit: int) -> list[Any]:
        return [owner, limit, self.lease_seconds, self._nonce, self._peek, len(queues),
                *queues, *self.steps]

    def _receive_once(self, queues: list[str], owner: str,
                      limit: int) -> tuple[list[Delivery], float | None]:
        reply = self._script("receive", *self._receive_args(queues, owner, limit))
        return self._deliveries(reply, queues, owner)

    def _ack_and_receive_once(self, queues: list[str], owner: str, limit: int,
                              acks: list[Delivery]) -> tuple[int, list[Delivery], float | None]:
        """``ACK`` then ``RECEIVE`` in one pipeline: (acknowledged, deliveries, hint)."""
        _, _, scripts, direct = self._connection()
        acked, reply = run_pipeline(direct, [
            evalsha(scripts["ack"], [], [self.prefix, *(d.token for d in acks)]),
            evalsha(scripts["receive"], [], [self.prefix,
                                             *self._receive_args(queues, owner, limit)]),
        ], [scripts["ack"], scripts["receive"]])
        return (int(acked), *self._deliveries(reply, queues, owner))

    def _wait_then_receive(self, queues: list[str], owner: str, limit: int,
                           remaining: float, hint: float | None
                           ) -> tuple[list[Delivery], float | None]:
        """``BLPOP`` the wake lists, then ``RECEIVE``, pipelined on one connection.

        Redis runs the queued script the moment the BLPOP returns (a wake-up
        token or its timeout), so a wake-up costs no extra round trip.
        """
        wait = min(max(remaining, 0.0), 5.0)
        if self.polling_interval is not None:
            wait = min(wait, self.polling_interval)
        if hint is not None:
            wait = min(wait, max(hint, 0.0) + 0.002)
        keys = [self._key(f"_celeriac.wake.{q}") for q in queues]
        _, _, scripts, direct = self._connection()
        script = scripts["receive"]
        try:
            _, reply = direct.pipeline([
                ("BLPOP", *keys, max(round(wait, 3), 0.001)),
                ("EVALSHA", script.sha, 0, self.prefix,
                 *self._receive_args(queues, owner, limit))])
        except redis.exceptions.NoScriptError:  # a restarted server: load and try again
            return self._receive_once(queues, owner, limit)
        return self._deliveries(reply, queues, owner)

    def _deliveries(self, reply: list[Any], queues: list[str],
                    owner: str) -> tuple[list[Delivery], float | None]:
        return parse_receive(reply, queues, owner, self.lease_seconds)

    def ack(self, deliveries: Sequence[Delivery]) -> int:
        tokens = [d.token for d in deliveries]
        done = 0
        for i in range(0, len(tokens), _CHUNK):
            part = tokens[i:i + _CHUNK]
            done += int(self._retrying("ack", partial(self._script, "ack", *part)))
        return done

    def renew(self, deliveries: Sequence[Delivery], seconds: float | None = None) -> list[bool]:
        extend = self.lease_seconds if seconds is None else float(seconds)
        tokens = [d.token for d in deliveries]
        out: list[bool] = []
        for i in range(0, len(tokens), _CHUNK):
            part = tokens[i:i + _CHUNK]
            flags = self._retrying("renew", partial(self._script, "renew", extend, *part))
            out.extend(bool(int(f)) for f in flags)
        return out

    def release(self, delivery: Delivery, *, not_before: float | None = None,
                failed: bool = False) -> bool:
        nb = "" if not_before is None else repr(float(not_before))
        return bool(self._retrying("release", lambda: self._script(
            "release", delivery.token, nb, uuid.uuid4().hex, int(failed))))

    def dead_letter(self, delivery: Delivery, reason: str) -> bool:
        return bool(self._retrying("dead_letter", lambda: self._script(
            "dead_letter", delivery.token, reason, delivery.token)))

    def dead_letter_message(self, message: Message, queue: str, reason: str) -> str:
        prio = self.message_priority(message, None)
        text = json.dumps(self._envelope(message, queue, prio))
        dead_id = uuid.uuid4().hex
        self._retrying("dead_letter_message", partial(
            store_dead_letter, self.client, self.prefix, dead_id, queue, self._step(prio),
            reason, text))
        return dead_id

    def expire_owner(self, owner: str) -> int:
        return int(self._retrying("expire_owner", lambda: self._script("expire_owner", owner)))

    # -- admin -------------------------------------------------------------------------
    def purge(self, queue: str) -> int:
        return int(self._retrying("purge", lambda: self._script("purge", queue, *self.steps)))

    def stats(self, queue: str) -> QueueStats:
        ready, delayed, leased, dead = self._retrying(
            "stats", lambda: self._script("stats", queue, *self.steps))
        return QueueStats(queue, ready=int(ready), delayed=int(delayed), leased=int(leased),
                          dead=int(dead))

    def queues(self) -> list[str]:
        return self._retrying("queues", lambda: queue_names(self.client, self.prefix))

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        return self._retrying("dead_letters", lambda: read_dead_letters(
            self.client, self.prefix, queue, limit))

    def retry_dead_letter(self, dead_id: str) -> bool:
        return bool(self._retrying("retry_dead_letter",
                                   lambda: self._script("retry_dead", dead_id)))

    def purge_dead_letters(self, queue: str | None = None) -> int:
        return int(self._retrying("purge_dead_letters",
                                  lambda: self._script("purge_dead", queue or "")))

    def take_token(self, key: str, rate: float, capacity: float = 1.0) -> float:
        bucket_take(1.0, 0.0, 0.0, rate, capacity)  # the same argument checks as elsewhere
        return float(self._retrying("take_token", lambda: self._script(
            "take_token", key, repr(float(rate)), repr(float(capacity)))))
    def delayed(self, queue: str, limit: int = 1000) -> list[tuple[float, Message]]:
        return self._retrying("delayed", lambda: read_delayed(
            self.client, self.prefix, queue, limit))

    def broadcast_channel(self) -> BroadcastChannel:
        conn = self._connection()
        channel = getattr(self, "_broadcast", None)
        if channel is None or channel.client is not conn[1]:
            channel = self._broadcast = RedisBroadcast(conn[1], self.prefix)
        return channel

    def close(self) -> None:
        """Drop this instance's reference; the process-wide pool stays for other users."""
        self._conn = None
