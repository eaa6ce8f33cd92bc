"""Connections to PostgreSQL: URL options, one pool and one listener per process, schema check.

URL forms: ``postgresql://``, ``postgres://``, Celery's ``db+postgresql://`` and
SQLAlchemy-style ``postgresql+psycopg://`` / ``+psycopg2://`` (the driver part is
ignored: celeriac always uses psycopg 3). celeriac's own options may sit in the URL
query or in the transport options; the rest of the query goes to libpq unchanged
(``sslmode``, ``connect_timeout``, ``application_name``...):

``schema`` (default ``celeriac``)
    the schema that holds celeriac's tables; several apps (or test runs) share one
    database with one schema each.
``pool_size`` (default 10)
    the most connections this process opens for the broker and stores of one URL.
``auto_migrate`` (default true)
    create the schema on first use when it does not exist yet. An older or newer
    schema version is never changed automatically: ``celeriac db migrate``.
``polling_interval`` (default 10 s)
    an idle consumer re-checks the queue this often even without a NOTIFY (safety
    net only; a NOTIFY or a due delay wakes it at once).
``vacuum`` (``auto``/``off``, default ``auto``)
    see :mod:`celeriac.brokers.postgres.maintenance`.

A :class:`Database` is shared by every broker and store of this process that use the
same connection string and schema (refcounted, rebuilt after ``fork``), so a worker
child holds one pool (1 connection when idle, ``pool_size`` at most) and, once it
waits, one LISTEN connection.

Failures: connection errors become :class:`~celeriac.exceptions.OperationalError`;
:meth:`Database.run` retries them by a :class:`~celeriac.retry.RetryPolicy` through
:func:`celeriac.retry.call`. Inside a call with a deadline
(:func:`celeriac.retry.time_left`) the wait for a pooled connection and every round
trip on it end by that deadline (:mod:`.deadline`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg_pool

from ... import retry
from ...exceptions import ImproperlyConfigured, OperationalError
from ...retry import RetryPolicy
from . import sql
from .deadline import WATCHDOG
from .listener import Listener
from .maintenance import Maintenance
from .migrate import SchemaError, check_version, migrate

logger = logging.getLogger("celeriac.postgres")


class _PoolRetries(logging.Filter):
    """psycopg_pool warns at every reconnection attempt while the server is down; the
    outage is reported once by celeriac (:func:`celeriac.retry.report_failure`)."""

    NOISE = ("error connecting in", "reconnection attempt in pool", "discarding closed",
             "discarding broken")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.WARNING
                    and str(record.msg).startswith(self.NOISE))


logging.getLogger("psycopg.pool").addFilter(_PoolRetries())
T = TypeVar("T")

SCHEMES = ("postgresql", "postgres")
OWN_OPTIONS = ("schema", "pool_size", "auto_migrate", "polling_interval", "vacuum")
#: Options the app passes to every broker; understood here or harmless.
APP_OPTIONS = ("retry_policy",)
DEFAULT_SCHEMA = "celeriac"
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.InterfaceError)
#: the longest a caller waits for a pooled connection (while the server is down)
POOL_WAIT = 3.0


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


@dataclass(frozen=True)
class Settings:
    """What a broker or store URL plus its options mean."""

    conninfo: str          # a libpq URL without celeriac's options
    schema: str = DEFAULT_SCHEMA
    pool_size: int = 10
    auto_migrate: bool = True
    polling_interval: float = 10.0
    vacuum: str = "auto"

    @property
    def safe_url(self) -> str:
        """The URL with its password masked (for messages and logs)."""
        parts = urlsplit(self.conninfo)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            parts = parts._replace(netloc=netloc)
        return urlunsplit(parts)


def parse_url(url: str, options: Mapping[str, Any] | None = None,
              what: str = "broker_url") -> Settings:
    """Split a celeriac PostgreSQL URL into a libpq URL and celeriac's options."""
    head, sep, rest = url.partition("://")
    parts = [p for p in head.lower().split("+") if p]
    if not sep or not parts or (parts[0] == "db" and len(parts) < 2):
        raise ImproperlyConfigured(f"{what}: {url!r} is not a postgresql:// URL")
    base = parts[1] if parts[0] == "db" else parts[0]
    if base not in SCHEMES:
        raise ImproperlyConfigured(f"{what}: {url!r} is not a postgresql:// URL")
    split = urlsplit("postgresql://" + rest)
    libpq: list[tuple[str, str]] = []
    ours: dict[str, Any] = {}
    for key, value in parse_qsl(split.query, keep_blank_values=True):
        if key in OWN_OPTIONS:
            ours[key] = value
        else:
            libpq.append((key, value))
    for key, value in (options or {}).items():
        if key in OWN_OPTIONS:
            ours[key] = value
        elif key not in APP_OPTIONS:
            logger.warning("%s: transport option %r means nothing to the PostgreSQL "
                           "broker and is ignored", what, key)
    if "application_name" not in dict(libpq):
        libpq.append(("application_name", "celeriac"))
    conninfo = urlunsplit(split._replace(query=urlencode(libpq)))
    vacuum = str(ours.get("vacuum", "auto")).lower()
    if vacuum not in ("auto", "off"):
        raise ImproperlyConfigured(f"{what}: vacuum must be 'auto' or 'off', not {vacuum!r}")
    try:
        return Settings(conninfo=conninfo,
                        schema=sql.check_schema(str(ours.get("schema") or DEFAULT_SCHEMA)),
                        pool_size=max(1, int(ours.get("pool_size", 10))),
                        auto_migrate=_truthy(ours.get("auto_migrate", True)),
                        polling_interval=max(0.05, float(ours.get("polling_interval", 10.0))),
                        vacuum=vacuum)
    except ValueError as exc:
        if isinstance(exc, ImproperlyConfigured):
            raise
        raise ImproperlyConfigured(f"{what}: bad option in {url!r}: {exc}") from None


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Plan each statement once per connection: psycopg prepares a statement after a
    few runs, and a generic plan of these statements is the index plan they are
    written for; re-planning the lease statement per call cost more than running it."""
    conn.execute("SET plan_cache_mode = force_generic_plan")


class Database:
    """The pool, listener and schema state of one connection string in this process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.schema = settings.schema
        self.sql = sql.statements(settings.schema)
        self._lock = threading.Lock()
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._listener: Listener | None = None
        self._checked = False
        self._checking = False  # a background pool check runs (see _after_failure)
        self.users = 0
        #: a PostgreSQL broker of this process uses this database (see results.py)
        self.broker_attached = False
        self.where = f"PostgreSQL at {settings.safe_url}"
        #: connection failures in a row outside a deadline (reports an outage)
        self.streak = retry.Streak(self.where, "query")
        self.maintenance = Maintenance(self)

    # -- connections -------------------------------------------------------------
    @property
    def pool(self) -> psycopg_pool.ConnectionPool:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    # Short waits on purpose: while the server is down the pool gives up
                    # reconnecting after 1 s and a caller waits at most 3 s for a
                    # connection, so the next call starts a fresh attempt and workers are
                    # back within about a second of the server (the pool's own backoff
                    # would wait 1, 2, 4... s between attempts).
                    self._pool = psycopg_pool.ConnectionPool(
                        self.settings.conninfo, min_size=1, max_size=self.settings.pool_size,
                        kwargs={"autocommit": True}, open=True, timeout=POOL_WAIT,
                        reconnect_timeout=1.0, max_idle=60.0, configure=_configure,
                        name=f"celeriac-{self.schema}")
                pool = self._pool
        return pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled autocommit connection; errors become OperationalError.

        Inside a call with a deadline (:func:`celeriac.retry.time_left`) the wait for
        the connection is capped by it and the connection is cut when it passes.
        """
        left = retry.time_left()
        if left is None:
            began = time.monotonic()
            try:
                with self.pool.connection() as conn:
                    yield conn
            except CONNECTION_ERRORS as exc:
                self._after_failure()
                self.streak.failed(exc, began)  # a consumer's loop retries: an outage
                raise OperationalError(f"postgres {self.settings.safe_url}: {exc}") from exc
            self.streak.ok()
            return
        if left <= 0:
            raise OperationalError(f"postgres {self.settings.safe_url}: deadline reached")
        deadline = time.monotonic() + left
        cut = False
        try:
            with self.pool.connection(timeout=min(POOL_WAIT, left)) as conn, \
                    WATCHDOG.guard(conn, deadline) as watch:
                try:
                    yield conn
                finally:
                    cut = watch.cut
        except CONNECTION_ERRORS as exc:
            if not cut:  # a hung server: checking idle connections would hang too
                self._after_failure(background=True)
            why = "no reply before the deadline" if cut else str(exc)
            raise OperationalError(f"postgres {self.settings.safe_url}: {why}") from exc

    def _after_failure(self, *, background: bool = False) -> None:
        """Drop broken idle connections, so the next try gets a live or fresh one.

        The check runs a round trip on each idle connection; a caller with a deadline
        leaves it to a thread of its own (one at a time) rather than wait for it.
        """
        pool = self._pool
        if pool is None:
            return
        if not background:
            _check(pool)
            return
        with self._lock:
            if self._checking:
                return
            self._checking = True
        threading.Thread(target=self._check_in_background, args=(pool,),
                         name="celeriac-pg-check", daemon=True).start()

    def _check_in_background(self, pool: psycopg_pool.ConnectionPool) -> None:
        try:
            _check(pool)
        finally:
            self._checking = False

    def run(self, work: Callable[[psycopg.Connection[Any]], T], *,
            policy: RetryPolicy | None = None, what: str = "query") -> T:
        """``work(conn)`` on a pooled connection once the schema is checked; with a
        ``policy``, connection errors are retried through :func:`celeriac.retry.call`
        (one attempt when an outer call, a producer's publish, already retries)."""

        def attempt() -> T:
            self.ensure_schema()
            with self.connection() as conn:
                return work(conn)

        if policy is None:
            return attempt()
        return retry.call(attempt, policy, retry_on=(OperationalError,), what=what,
                          where=self.where)

    def execute(self, name: str, params: Mapping[str, Any] | None = None, *,
                policy: RetryPolicy | None = None, what: str | None = None
                ) -> list[tuple[Any, ...]]:
        """Run the named statement; return its rows (``[(rowcount,)]`` when it returns none)."""
        text = self.sql[name]

        def work(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else [(cur.rowcount,)]

        return self.run(work, policy=policy, what=what or name)

    # -- schema --------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Check the schema version once per process (creating a missing schema when
        ``auto_migrate``); raise :class:`SchemaError` when it does not match."""
        if self._checked:
            return
        with self.connection() as conn:
            found = check_version(conn, self.schema)
        latest = sql.latest_version()
        if found is None and self.settings.auto_migrate:
            with self.connection() as conn:
                migrate(conn, self.schema)
        elif found is None:
            raise SchemaError(
                f"postgres {self.settings.safe_url}: schema {self.schema!r} has no celeriac "
                "tables; run `celeriac -A <app> db migrate` (or set auto_migrate=true)")
        elif found < latest:
            raise SchemaError(
                f"postgres {self.settings.safe_url}: schema {self.schema!r} is at celeriac "
                f"schema version {found}, this celeriac needs {latest}; run "
                "`celeriac -A <app> db migrate`")
        elif found > latest:
            raise SchemaError(
                f"postgres {self.settings.safe_url}: schema {self.schema!r} is at celeriac "
                f"schema version {found}, newer than this celeriac knows ({latest}); "
                "upgrade celeriac on this host")
        self._checked = True

    # -- listener --------------------------------------------------------------------
    @property
    def listener(self) -> Listener:
        listener = self._listener
        if listener is None:
            with self._lock:
                if self._listener is None:
                    self._listener = Listener(self.settings.conninfo, self.settings.safe_url)
                listener = self._listener
        return listener

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if pool is not None:
            pool.close(timeout=1.0)


def _check(pool: psycopg_pool.ConnectionPool) -> None:
    try:
        pool.check()
    except Exception:  # the server is down: the pool reconnects by itself
        pass


_DATABASES: dict[tuple[int, str, str], Database] = {}
_REGISTRY_LOCK = threading.Lock()


def acquire(settings: Settings) -> Database:
    """The shared :class:`Database` of ``settings`` in this process (refcounted)."""
    key = (os.getpid(), settings.conninfo, settings.schema)
    with _REGISTRY_LOCK:
        for stale in [k for k in _DATABASES if k[0] != key[0]]:
            del _DATABASES[stale]  # inherited across fork: never closed here, never used
        db = _DATABASES.get(key)
        if db is None or db.settings != settings:
            db = Database(settings)
            _DATABASES.setdefault(key, db)
        db.users += 1
        return db


def release(db: Database) -> None:
    """Give back a :class:`Database`; the last user closes its connections."""
    key = (os.getpid(), db.settings.conninfo, db.schema)
    with _REGISTRY_LOCK:
        db.users -= 1
        if db.users > 0:
            return
        if _DATABASES.get(key) is db:
            del _DATABASES[key]
    db.close()


class Handle:
    """What a broker or store holds: its :class:`Database`, re-acquired after ``fork``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = os.getpid()
        self._db: Database | None = acquire(settings)

    @property
    def db(self) -> Database:
        if self._pid != os.getpid() or self._db is None:
            self._pid = os.getpid()
            self._db = acquire(self.settings)
        return self._db

    def close(self) -> None:
        if self._db is not None and self._pid == os.getpid():
            release(self._db)
        self._db = None
