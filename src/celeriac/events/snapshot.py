"""Cameras: periodic snapshots of the event :class:`~.state.State` (Celery's ``Polaroid``).

``run_camera(app, Camera, freq)`` receives events into a State and, every
``freq`` seconds, calls the camera's ``on_shutter(state)`` (Kuma runs
``celerycam --freq=2.0`` this way). :class:`Polaroid` is Celery's base class
(``install``, ``on_shutter``, ``on_cleanup``, ``shutter``, ``cancel``,
``clear_after``); :class:`SQLiteCamera` (``--camera sqlite``) writes the
workers and tasks of each snapshot into two tables of a SQLite file
(``workers``, ``tasks``; upserted by hostname and task id), which any SQL
tool or dashboard can read.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from .state import State

if TYPE_CHECKING:
    from ..app.base import Celery

logger = logging.getLogger("celeriac.events.camera")


class Polaroid:
    """Calls :meth:`on_shutter` with the state every ``freq`` seconds once installed."""

    clear_after = False
    cleanup_freq = 3600.0

    def __init__(self, state: State, freq: float = 1.0, maxrate: Any = None,
                 cleanup_freq: float = 3600.0, timer: Any = None, app: Any = None,
                 **_: Any) -> None:
        self.state, self.freq, self.app = state, max(0.01, float(freq)), app
        self.cleanup_freq = cleanup_freq
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def install(self) -> None:
        self._thread = threading.Thread(target=self._run, name="celeriac-camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_cleanup = time.monotonic() + self.cleanup_freq
        while not self._stop.wait(self.freq):
            self.capture()
            if time.monotonic() >= next_cleanup:
                next_cleanup = time.monotonic() + self.cleanup_freq
                self.on_cleanup()

    def on_shutter(self, state: State) -> None:
        """Override: store or show ``state``."""

    def on_cleanup(self) -> None:
        """Override: prune old data (every ``cleanup_freq`` seconds)."""

    def shutter(self) -> None:
        self.capture()

    def capture(self) -> None:
        try:
            self.state.freeze_while(self.on_shutter, self.state, clear_after=self.clear_after)
        except Exception:
            logger.exception("Camera %s failed to take a snapshot", type(self).__name__)

    def cancel(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.capture()  # the last events too

    def __enter__(self) -> Polaroid:
        self.install()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS workers (
    hostname TEXT PRIMARY KEY, pid INTEGER, alive INTEGER, last_heartbeat REAL,
    active INTEGER, processed INTEGER, loadavg TEXT, sw_ident TEXT, sw_ver TEXT,
    updated_at REAL);
CREATE TABLE IF NOT EXISTS tasks (
    uuid TEXT PRIMARY KEY, name TEXT, state TEXT, worker TEXT, args TEXT, kwargs TEXT,
    result TEXT, exception TEXT, traceback TEXT, runtime REAL, retries INTEGER, eta TEXT,
    expires TEXT, sent REAL, received REAL, started REAL, succeeded REAL, failed REAL,
    timestamp REAL, root_id TEXT, parent_id TEXT, updated_at REAL);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state, timestamp)
"""

_TASK_COLUMNS = ("uuid", "name", "state", "worker", "args", "kwargs", "result", "exception",
                 "traceback", "runtime", "retries", "eta", "expires", "sent", "received",
                 "started", "succeeded", "failed", "timestamp", "root_id", "parent_id")


#: a task seen again (after ``clear_after``) keeps what earlier snapshots knew
_UPSERT_TASK = (
    f"INSERT INTO tasks VALUES ({','.join('?' * (len(_TASK_COLUMNS) + 1))})"
    " ON CONFLICT(uuid) DO UPDATE SET "
    + ", ".join(f"{c} = COALESCE(excluded.{c}, tasks.{c})" for c in _TASK_COLUMNS[1:])
    + ", updated_at = excluded.updated_at")


class SQLiteCamera(Polaroid):
    """Writes each snapshot's workers and tasks to a SQLite file (``db``)."""

    clear_after = True  # tasks already written are dropped from memory

    def __init__(self, state: State, freq: float = 1.0, db: str = "celeriac-events.sqlite3",
                 **kwargs: Any) -> None:
        super().__init__(state, freq, **kwargs)
        self.db = db
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self.db, check_same_thread=False)
            self._conn.executescript(SQLITE_SCHEMA)
        return self._conn

    def on_shutter(self, state: State) -> None:
        now = time.time()
        conn = self._connection()
        workers = [(w.hostname, w.pid, int(w.alive),
                    w.heartbeats[-1] if w.heartbeats else None, w.active, w.processed,
                    json.dumps(w.loadavg), w.sw_ident, w.sw_ver, now)
                   for w in state.workers.values()]
        tasks = []
        for task in state.tasks.values():
            row = task.as_dict()
            tasks.append((*(_text(row.get(c)) for c in _TASK_COLUMNS), now))
        with conn:
            conn.executemany("INSERT OR REPLACE INTO workers VALUES (?,?,?,?,?,?,?,?,?,?)",
                             workers)
            conn.executemany(_UPSERT_TASK, tasks)

    def on_cleanup(self) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM tasks WHERE state IN ('SUCCESS', 'FAILURE', 'REVOKED')"
                         " AND updated_at < ?", (time.time() - 86400,))


def _text(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float)) else str(value)


CAMERAS: dict[str, Any] = {"sqlite": SQLiteCamera}


def run_camera(app: Celery, camera_cls: Any, freq: float, *, db: str | None = None,
               limit: int | None = None, timeout: float | None = None) -> State:
    """Receive events into a State and snapshot it with ``camera_cls`` every ``freq`` s."""
    state = app.events.State()
    options = {"db": db} if db is not None and camera_cls is SQLiteCamera else {}
    camera = camera_cls(state, freq=freq, app=app, **options)
    receiver = app.events.Receiver(handlers={"*": state.event})
    camera.install()
    try:
        receiver.capture(limit=limit, timeout=timeout, wakeup=True)
    except KeyboardInterrupt:
        pass
    finally:
        camera.cancel()
    return state
