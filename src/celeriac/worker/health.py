"""Worker health: node heartbeat records in the result store and the liveness file.

Every worker node (the prefork supervisor, or the asyncio/threads/solo
process) writes a JSON record under ``celeriac-worker-<hostname>`` in the
result store every :data:`NODE_HEARTBEAT` seconds, expiring after
:data:`NODE_RECORD_TTL`; and adds its hostname to the ``celeriac-workers``
index record (read-modify-write: a concurrent update can drop a name for one
heartbeat, the node adds itself back at its next one). Both keys go under the
store's key prefix (Redis ``global_keyprefix``). ``celeriac status`` reads them.

Record fields: ``hostname``, ``pid``, ``pool``, ``concurrency``, ``queues``,
``processed`` (tasks finished), ``busy`` (tasks running now), ``timestamp``
(last heartbeat), ``last_progress`` (last receive, finished task or running
task) and ``started_at``.

With ``--liveness-file PATH`` the worker touches PATH whenever it progressed
(at most once a second): a probe can fail when PATH is older than X seconds.

Each heartbeat written sends ``heartbeat_sent`` (``sender`` = the
:class:`NodeHealth`); Celery sends it for its event heartbeats (``-E``), celeriac
for these, which every worker writes.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import retry, signals
from ..exceptions import OperationalError
from .outage import QUICK_CALL

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.worker.health")

NODE_HEARTBEAT = 2.0
NODE_RECORD_TTL = 30.0
INDEX_KEY = "celeriac-workers"


def node_key(hostname: str) -> str:
    return f"celeriac-worker-{hostname}"


class NodeHealth:
    """Publishes one node's heartbeat record and touches its liveness file."""

    def __init__(self, app: Celery, hostname: str, *, pool: str, concurrency: int,
                 queues: list[str], liveness_file: str | None = None) -> None:
        self.app = app
        self.record: dict[str, Any] = {
            "hostname": hostname, "pid": os.getpid(), "pool": pool,
            "concurrency": concurrency, "queues": queues, "processed": 0, "busy": 0,
            "started_at": time.time(), "last_progress": time.time(), "timestamp": 0.0}
        self.liveness_file = liveness_file
        self._next_beat = 0.0
        self._touched = 0.0

    def progress(self, when: float | None = None) -> None:
        """Note progress (default: now) and touch the liveness file at most once a second."""
        when = time.time() if when is None else when
        if when > self.record["last_progress"]:
            self.record["last_progress"] = when
        if self.liveness_file and when - self._touched >= 1.0:
            self._touched = when
            try:
                Path(self.liveness_file).touch()
            except OSError as exc:
                logger.warning("Cannot touch liveness file %s: %s", self.liveness_file, exc)

    def beat(self, *, processed: int, busy: int, force: bool = False) -> None:
        """Write the heartbeat record if it is due (every NODE_HEARTBEAT seconds)."""
        now = time.monotonic()
        if not force and now < self._next_beat:
            return
        self._next_beat = now + NODE_HEARTBEAT
        self.record.update(processed=processed, busy=busy, timestamp=time.time())
        backend = self.app.backend
        if backend is None:
            return
        try:
            with retry.quick(QUICK_CALL):  # never stalls the supervisor's loop
                backend._set_raw(backend.own_key(node_key(self.record["hostname"])),
                                 json.dumps(self.record), NODE_RECORD_TTL)
                self._index(backend, add=True)
        except OperationalError as exc:  # an outage: logged once by the process's watch
            logger.debug("Could not write the worker heartbeat: %s", exc)
            return
        except Exception as exc:
            logger.warning("Could not write the worker heartbeat: %s", exc)
            return
        signals.heartbeat_sent.send(sender=self)

    def remove(self) -> None:
        """Delete the record at shutdown (the node is gone, not dead)."""
        backend = self.app.backend
        if backend is None:
            return
        try:
            backend._delete_raw(backend.own_key(node_key(self.record["hostname"])))
            self._index(backend, add=False)
        except Exception as exc:
            logger.warning("Could not remove the worker heartbeat: %s", exc)

    def _index(self, backend: Any, *, add: bool) -> None:
        names = read_index(backend)
        host = self.record["hostname"]
        if add == (host in names):
            return
        names = sorted(set(names) | {host}) if add else [n for n in names if n != host]
        backend._set_raw(backend.own_key(INDEX_KEY), json.dumps(names), None)


def read_index(backend: Any) -> list[str]:
    raw = backend._get_raw(backend.own_key(INDEX_KEY))
    if not raw:
        return []
    try:
        names = json.loads(raw)
    except ValueError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def read_nodes(app: Celery) -> list[dict[str, Any]]:
    """Heartbeat records of every node in the index that has a live record."""
    backend = app.backend
    if backend is None:
        return []
    names = read_index(backend)
    raws = (backend._get_many_raw([backend.own_key(node_key(n)) for n in names]) if names
            else [])
    nodes = []
    for raw in raws:
        if not raw:
            continue
        try:
            nodes.append(json.loads(raw))
        except ValueError:
            continue
    return nodes
