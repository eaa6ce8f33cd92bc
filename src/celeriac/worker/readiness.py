"""When a worker says it is ready: once the queues it consumes exist on the broker.

Celery's worker declares its queues before it sends ``worker_ready`` and logs
``<hostname> ready.``, so a client that waits for that line may publish at once
without declaring anything itself (a plain publish to the queue's exchange or
routing key) and RabbitMQ does not drop the message as unroutable. celeriac's
consumer asks its broker to declare the queues it consumes
(:meth:`~celeriac.brokers.base.Broker.declare_consumed`: RabbitMQ's queues,
exchanges, bindings and delay layout; nothing on Redis, SQLite, PostgreSQL and
memory, where a publish creates its queue) before its first receive, and again
at most once a second until that worked (:class:`Declaration`). The worker says
ready after it (:class:`ReadyGate`): the in-process pools (solo, threads,
asyncio) once their consumer declared, prefork once the first child's consumer
did. It waits at most :data:`READY_WAIT` seconds: then it says ready anyway,
with a warning naming the queues not declared and why, rather than never.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import retry, signals
from ..brokers.base import redact
from .outage import outage_or_exception

logger = logging.getLogger("celeriac.worker")

#: seconds a worker waits for its queues to be declared before it says ready anyway
READY_WAIT = 30.0
#: seconds between two declaration attempts of a consumer while they fail
RETRY_EVERY = 1.0
#: seconds one declaration attempt may take, retries included (the consumer loop turns)
DECLARE_CALL = 5.0


class Declaration:
    """A consumer's declaration of the queues it consumes: tried before its first
    receive, again at most every :data:`RETRY_EVERY` seconds until it worked.
    ``on_done`` is called once it did, ``on_failed`` with why an attempt failed (a
    prefork child writes both into its slot for the supervisor)."""

    def __init__(self, broker: Any, queues: Sequence[str]) -> None:
        self.broker = broker
        self.queues = list(queues)
        self.on_done: Callable[[], None] | None = None
        self.on_failed: Callable[[str], None] | None = None
        self.done = threading.Event()
        #: why the last attempt failed ("" when none did)
        self.error = ""
        self._next = 0.0

    def attempt(self) -> bool:
        """Declare unless done, or tried less than a second ago; whether it is done."""
        if self.done.is_set():
            return True
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + RETRY_EVERY
        try:
            with retry.quick(DECLARE_CALL):  # never waits out an outage: the loop retries
                self.broker.declare_consumed(self.queues)
        except Exception as exc:
            why = f"{type(exc).__name__}: {exc}"
            if why == self.error:  # the same failure again: logged once
                logger.debug("Declaring queue(s) %s failed again: %s", self.queues, why)
            else:
                outage_or_exception(exc, "Declaring queue(s) %s on %s failed; retrying",
                                    ", ".join(self.queues), redact(self.broker.url))
            self.error = why
            if self.on_failed is not None:
                self.on_failed(why)
            return False
        self.error = ""
        self.done.set()
        if self.on_done is not None:
            self.on_done()
        return True


class ReadyGate:
    """Says the node is ready, once: ``worker_ready`` is sent, then ``<hostname> ready.``
    is announced, when ``declared()`` is true or :data:`READY_WAIT` seconds passed
    (then with a warning naming the queues and ``why()`` they are not declared)."""

    def __init__(self, worker: Any, declared: Callable[[], bool], why: Callable[[], str],
                 wait: float = READY_WAIT) -> None:
        self.worker = worker
        self.declared = declared
        self.why = why
        self.wait = wait
        self.deadline = time.monotonic() + wait
        self.said = False

    def check(self) -> bool:
        """Say ready if it is time; whether it was said."""
        if self.said:
            return True
        if not self.declared():
            if time.monotonic() < self.deadline:
                return False
            logger.warning(
                "%s: queue(s) %s not declared on %s after %.0fs (%s); saying ready anyway: "
                "until a consumer declares them, what is published to them may be dropped "
                "(RabbitMQ: unroutable)", self.worker.hostname, ", ".join(self.worker.queues),
                redact(self.worker.app.broker.url), self.wait,
                self.why() or "no consumer has started")
        self.said = True
        signals.worker_ready.send(sender=self.worker)
        self.worker.announce_ready()
        return True
