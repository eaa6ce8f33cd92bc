"""Redis connections shared by the Redis broker and result store.

Owns URL parsing for ``redis://``, ``rediss://`` (TLS), ``sentinel://`` and
kombu's ``redis+socket://`` (unix socket) URLs, translation of Celery's
transport options into redis-py arguments, and one client (connection pool)
per process and configuration. The cache is
fork-safe: a child process that inherits the cache gets fresh clients (the
parent's sockets are never touched), because entries remember the pid that
created them.

Hot paths (publish, receive, ack, result writes and reads) go through
:class:`~.direct.Direct` (one raw connection per thread, see :mod:`.direct`).

Redis Cluster URLs (``redis+cluster://[user:password@]host:port[,host:port...]``,
``rediss+cluster://`` with TLS) name some of the cluster's nodes; the client
(redis-py's ``RedisCluster``) reads the slot map from them. The broker and result
store route their hot paths by hash slot in :mod:`.cluster_client`.

Sentinel URLs use kombu's form, ``sentinel://[:password@]host:port[/db]``,
several joined with ``;``; the options must name the master with
``master_name`` (``broker_transport_options={"master_name": "mymaster"}``)
and may give ``sentinel_kwargs`` (e.g. the sentinels' own password).

Failures: :func:`retrying` runs a call through :func:`celeriac.retry.call`
(the project's one retry helper) with Redis's connection errors as the
retryable ones; redis-py's own retries are off. :class:`~.direct.Direct` calls
made during a publish cap their socket timeouts by the publish deadline.

Options understood (the rest are ignored here): ``socket_timeout``,
``socket_connect_timeout``, ``socket_keepalive``, ``max_connections``,
``health_check_interval``, ``ssl`` (a dict of redis-py ``ssl_*`` arguments,
Celery's ``broker_use_ssl``), ``master_name``, ``sentinel_kwargs``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from ... import retry
from ...exceptions import ImproperlyConfigured
from ...retry import RetryPolicy
from ..base import redact
from .direct import (  # noqa: F401 - re-exported: the stores import them from here
    Direct,
    direct_for,
    evalsha,
    run_pipeline,
    run_script,
)

_T = TypeVar("_T")
_V = TypeVar("_V")

#: Errors after which a command may succeed on a new connection (the cluster's
#: redirections and "down" replies: once the slot map is read again, see
#: :mod:`.cluster_client`; ``ReadOnlyError``: a Sentinel master that became a replica).
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.AskError,  # MovedError too
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterError,  # ClusterDownError, MasterDownError
    redis.exceptions.RedisClusterException,  # a slot not covered (yet) after a failover
)
#: the URL schemes of Redis Cluster
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")

_POOL_OPTIONS = ("socket_timeout", "socket_connect_timeout", "socket_keepalive",
                 "max_connections", "health_check_interval")
_DEFAULTS: dict[str, Any] = {
    "socket_timeout": 30.0,
    "socket_connect_timeout": 5.0,
    "socket_keepalive": True,
    "health_check_interval": 25,
}


@dataclass(frozen=True)
class RedisTarget:
    """Where to connect: a plain URL, or sentinels plus a master name."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    db: int = 0
    password: str | None = None
    username: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)
    #: Redis Cluster: the nodes the URL names
    cluster_nodes: tuple[tuple[str, int], ...] = ()


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` and ``rediss+cluster://``."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def where_of(url: str) -> str:
    """How errors and outage reports name the server at ``url`` (password hidden)."""
    return f"Redis at {redact(url)}"


def retrying(url: str, what: str, call: Callable[[], _T], policy: RetryPolicy) -> _T:
    """Run ``call`` through :func:`celeriac.retry.call`, retrying Redis connection errors."""
    return retry.call(call, policy, retry_on=RETRYABLE_ERRORS, what=what, where=where_of(url))


def _client_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = {k: options.get(k, _DEFAULTS.get(k)) for k in _POOL_OPTIONS}
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    ssl = options.get("ssl")
    if isinstance(ssl, Mapping):
        kwargs.update({str(k): v for k, v in ssl.items()})
    # No retries inside redis-py: the broker and stores retry through celeriac.retry,
    # the one retry layer (a stale pooled socket after a restart is its first retry).
    kwargs["retry"] = Retry(NoBackoff(), 0)
    return kwargs


def _db_of(path: str) -> int:
    text = path.strip("/")
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise ImproperlyConfigured(f"Redis URL: database {text!r} is not a number") from None


def _celery_ssl_spelling(url: str) -> str:
    """Accept Celery's ``ssl_cert_reqs=CERT_REQUIRED`` spelling (redis-py wants ``required``)."""
    for celery_name, ours in (("CERT_REQUIRED", "required"), ("CERT_OPTIONAL", "optional"),
                              ("CERT_NONE", "none")):
        url = url.replace(f"ssl_cert_reqs={celery_name}", f"ssl_cert_reqs={ours}")
    return url


def parse_target(url: str, options: Mapping[str, Any] | None = None) -> RedisTarget:
    """Parse a redis/rediss/sentinel URL (and its options) into a :class:`RedisTarget`."""
    opts = dict(options or {})
    kwargs = _client_kwargs(opts)
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        return RedisTarget(url=_celery_ssl_spelling(url), kwargs=kwargs)
    if scheme in ("unix", "redis+socket"):  # kombu's socket form has ?virtual_host=N
        path = url.split("://", 1)[1].replace("virtual_host=", "db=")
        kwargs.pop("socket_keepalive", None)  # not a unix socket option
        return RedisTarget(url=f"unix://{path}", kwargs=kwargs)
    if scheme in CLUSTER_SCHEMES:
        return _cluster_target(url, kwargs)
    if scheme != "sentinel":
        raise ImproperlyConfigured(f"not a Redis URL: {redact(url)!r}")
    master_name = opts.get("master_name")
    if not master_name:
        raise ImproperlyConfigured(
            "sentinel:// URLs need the master name: "
            "broker_transport_options={'master_name': 'mymaster'}")
    sentinels: list[tuple[str, int]] = []
    db, password, username = 0, None, None
    for piece in url.split(";"):
        split = urlsplit(piece.strip())
        sentinels.append((split.hostname or "localhost", split.port or 26379))
        if split.path.strip("/"):
            db = _db_of(split.path)
        if split.password:
            password, username = unquote(split.password), split.username or None
    return RedisTarget(url=url, sentinels=tuple(sentinels), master_name=str(master_name),
                       db=db, password=password, username=username, kwargs=kwargs,
                       sentinel_kwargs=dict(opts.get("sentinel_kwargs") or {}))


def _cluster_target(url: str, kwargs: dict[str, Any]) -> RedisTarget:
    """``redis+cluster://[user:password@]host:port[,host:port...][/0]`` (TLS: ``rediss+``)."""
    rest = url.split("://", 1)[1]
    auth, _, hosts = rest.rpartition("@")
    hosts, _, query = hosts.partition("?")
    hosts, _, path = hosts.partition("/")
    if query:
        raise ImproperlyConfigured(
            f"{redact(url)!r}: a redis+cluster:// URL takes no query options "
            "(give them in broker_transport_options / result_backend_transport_options)")
    if _db_of(path) != 0:
        raise ImproperlyConfigured(f"{redact(url)!r}: Redis Cluster has only database 0")
    nodes = []
    for piece in hosts.split(","):
        split = urlsplit(f"redis://{piece.strip()}")
        nodes.append((split.hostname or "localhost", split.port or 6379))
    username, _, password = auth.partition(":")
    if url.lower().startswith("rediss"):
        kwargs["ssl"] = True
    return RedisTarget(url=url, cluster_nodes=tuple(nodes), kwargs=kwargs,
                       password=unquote(password) if password else None,
                       username=unquote(username) if username else None)


def _connect(target: RedisTarget) -> redis.Redis:
    if target.cluster_nodes:
        kwargs = {k: v for k, v in target.kwargs.items() if k != "max_connections"}
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.cluster_nodes],
            password=target.password, username=target.username, **kwargs)
        return cluster  # type: ignore[return-value]  # the same commands, routed by slot
    if not target.sentinels:
        pool = redis.ConnectionPool.from_url(target.url, **target.kwargs)
        return redis.Redis(connection_pool=pool)
    kwargs = {k: v for k, v in target.kwargs.items() if k != "max_connections"}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs or None,
                        socket_timeout=kwargs.get("socket_timeout"),
                        socket_connect_timeout=kwargs.get("socket_connect_timeout"))
    return sentinel.master_for(str(target.master_name), db=target.db, password=target.password,
                               username=target.username, **kwargs)


class PerProcess(Generic[_V]):
    """One object per key and process: a forked child builds its own and never touches
    its parent's sockets (the lock is renewed after a fork, as another thread may have
    held it at fork time)."""

    def __init__(self) -> None:
        self._items: dict[Any, tuple[int, _V]] = {}
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._renew_lock)

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], _V]) -> _V:
        pid = os.getpid()
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] != pid:
                found = (pid, make())
                self._items[key] = found
            return found[1]

    def replace(self, key: Any, value: _V) -> None:
        """Make ``value`` this process's object for ``key``."""
        with self._lock:
            self._items[key] = (os.getpid(), value)

    def clear(self, release: Callable[[_V], None]) -> None:
        """Forget every object; release those this process made."""
        with self._lock:
            pid = os.getpid()
            for owner_pid, item in self._items.values():
                if owner_pid == pid:
                    release(item)
            self._items.clear()


_clients: PerProcess[redis.Redis] = PerProcess()


def _cache_key(url: str, options: Mapping[str, Any]) -> tuple[Any, ...]:
    relevant = ("master_name", "sentinel_kwargs", "ssl", *_POOL_OPTIONS)
    return (url, *(repr(options.get(k)) for k in relevant))


def get_client(url: str, options: Mapping[str, Any] | None = None) -> redis.Redis:
    """The process-wide client for ``url`` and ``options`` (recreated after a fork)."""
    opts = dict(options or {})
    return _clients.get(_cache_key(url, opts), lambda: _connect(parse_target(url, opts)))


def forget_clients() -> None:
    """Drop every cached client of this process (tests; shutdown)."""
    _clients.clear(lambda client: client.close())


#: (pid, client, registered scripts by name, direct connections): one process's connection
Connection = tuple[int, redis.Redis, dict[str, Any], Direct]


def connection(url: str, options: Mapping[str, Any], scripts: Mapping[str, str],
               current: Connection | None) -> Connection:
    """``current`` if it belongs to this process, else a new one (after a fork), with
    ``scripts`` registered. Built whole, so threads never see a half-built one."""
    if current is not None and current[0] == os.getpid():
        return current
    client = get_client(url, options)
    registered = {name: client.register_script(src) for name, src in scripts.items()}
    return os.getpid(), client, registered, direct_for(client)
