"""Feeding the history: Celery events in, result-store states, retention, live workers.

:class:`Ingestor` is the one entry point for events: ``ingestor.handle(event)``
takes an event dict exactly as Celery's ``EventReceiver`` hands it to a
handler (so it plugs into ``app.events.Receiver(handlers={"*": handle})``), and
:func:`decode_event_message` turns a raw message of the ``celeryev`` exchange
(kombu's Redis envelope with a base64 body, or a plain JSON body as on
RabbitMQ; one event or a ``task.multi`` list) into those dicts. Events are
queued and written in batches by a background thread; when the queue is full
the newest events are dropped and counted (``dropped``), never blocking the
receiver.

The same thread, every ``refresh_interval`` seconds, reads the result store
for records still unfinished (the state a missed event would have told) and
prunes history past ``retention`` seconds or ``max_tasks`` records.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from collections.abc import Iterable
from typing import Any

from .history import HistoryStore

logger = logging.getLogger("celeriac.dashboard")

WORKER_EVENTS = ("worker-online", "worker-heartbeat", "worker-offline")


def decode_event_message(raw: bytes | str | dict[str, Any]) -> list[dict[str, Any]]:
    """The events in one ``celeryev`` message; [] (and a warning) when malformed."""
    try:
        envelope = json.loads(raw) if isinstance(raw, (bytes, str)) else raw
        body: Any = envelope
        if isinstance(envelope, dict) and "body" in envelope and "type" not in envelope:
            body = envelope["body"]
            props = envelope.get("properties") or {}
            if props.get("body_encoding") == "base64":
                body = base64.b64decode(body)
            if isinstance(body, (bytes, str)):
                body = json.loads(body)
    except (ValueError, TypeError) as exc:
        logger.warning("Dropping a malformed event message: %s", exc)
        return []
    items = body if isinstance(body, list) else [body]
    return [e for e in items if isinstance(e, dict) and isinstance(e.get("type"), str)]


class Ingestor:
    """Queues events, writes them in batches, refreshes unfinished records, prunes."""

    def __init__(self, store: HistoryStore, app: Any = None, *, retention: float | None = None,
                 max_tasks: int | None = None, refresh_interval: float = 2.0,
                 batch: int = 500, max_queued: int = 100_000) -> None:
        self.store = store
        self.app = app
        self.retention = retention
        self.max_tasks = max_tasks
        self.refresh_interval = refresh_interval
        self.batch = batch
        self.dropped = 0
        self.written = 0
        self.workers: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queued)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_refresh = 0.0
        self._next_prune = 0.0
        self._lock = threading.Lock()

    # -- input ---------------------------------------------------------------------
    def handle(self, event: dict[str, Any]) -> None:
        """Take one event (Celery's event dict); never blocks."""
        kind = str(event.get("type", ""))
        if kind in WORKER_EVENTS:
            self._worker_event(kind, event)
            return
        if not kind.startswith("task-"):
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            if self.dropped in (1, 1000) or self.dropped % 100_000 == 0:
                logger.warning("History writer is behind: %d events dropped", self.dropped)

    def handle_message(self, raw: bytes | str | dict[str, Any]) -> int:
        events = decode_event_message(raw)
        for event in events:
            self.handle(event)
        return len(events)

    def _worker_event(self, kind: str, event: dict[str, Any]) -> None:
        host = str(event.get("hostname") or "")
        if not host:
            return
        with self._lock:
            info = self.workers.setdefault(host, {"hostname": host})
            info.update({k: v for k, v in event.items() if k not in ("type", "clock")})
            info["online"] = kind != "worker-offline"
            info["last_heartbeat"] = float(event.get("timestamp") or time.time())
            info["source"] = "events"

    def worker_list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(w) for w in self.workers.values()]

    # -- the writer thread -----------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dashboard-history",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()

    def _drain(self, wait: float) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        try:
            items.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
        except queue.Empty:
            return items
        while len(items) < self.batch:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def flush(self) -> int:
        """Write everything queued now (the thread does this continuously)."""
        total = 0
        while True:
            items = self._drain(0)
            if not items:
                return total
            total += self._write(items)

    def _write(self, items: list[dict[str, Any]]) -> int:
        try:
            done = self.store.apply_events(items)
        except Exception:
            logger.exception("Could not write %d events to the history", len(items))
            return 0
        self.written += len(items)
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            items = self._drain(0.2)
            if items:
                self._write(items)
            now = time.time()
            if now >= self._next_refresh:
                self._next_refresh = now + self.refresh_interval
                self._guard(self.refresh)
            if now >= self._next_prune:
                self._next_prune = now + 60.0
                self._guard(self.prune)

    @staticmethod
    def _guard(step: Any) -> None:
        try:
            step()
        except Exception:
            logger.exception("Dashboard history step %s failed", getattr(step, "__name__", step))

    def refresh(self, ids: Iterable[str] | None = None) -> int:
        """Read the result store for unfinished records (or ``ids``) and fold their state in."""
        backend = getattr(self.app, "backend", None) if self.app is not None else None
        if backend is None:
            return 0
        todo = list(ids) if ids is not None else self.store.unfinished(time.time() - 86400)
        if not todo:
            return 0
        try:
            metas = backend.get_many(todo)
        except Exception:  # one malformed meta must not hide the others
            metas = {}
            for tid in todo:
                try:
                    metas[tid] = backend.get(tid)
                except Exception as exc:
                    logger.warning("Result of %s cannot be read: %s", tid, exc)
        return self.store.apply_results({k: v for k, v in metas.items() if v})

    def prune(self) -> int:
        older = time.time() - self.retention if self.retention else None
        removed = self.store.prune(older_than=older, keep=self.max_tasks)
        if older is not None:
            self.store.prune_audit(time.time() - max(self.retention or 0, 90 * 86400))
        return removed
