"""AMQP connections: URL parsing (failover lists, TLS), connecting, and the retryable errors.

URLs are Celery's: ``amqp://user:password@host:port/vhost``, ``pyamqp://``
(the same), ``amqps://`` (TLS); several joined with ``;`` are tried in turn
(Celery's failover list: the next one after a failure, round robin). The
virtual host is the URL's path without its leading ``/`` (``amqp://h//`` and
``amqp://h/`` are ``/``), percent-decoded, as kombu reads it.

:class:`Link` is one connection plus one channel (publisher confirms on, or a
consumer channel), opened lazily and remembered with the pid that opened it,
so a forked child never touches its parent's socket. A link is used by one
thread at a time: its owner serialises calls with :attr:`Link.lock`.

Options understood (``broker_transport_options`` plus ``broker_use_ssl`` as
``ssl``): ``connect_timeout`` (default 5 s), ``heartbeat`` (default 0, see
``docs/rabbitmq.md``: a task that holds the GIL cannot answer heartbeats, so
dead peers are found by TCP keepalive and by the kernel closing a dead
process's sockets), ``ssl`` (True or a dict of ``ssl.SSLContext`` wrap
arguments), ``login_method``.
"""

from __future__ import annotations

import os
import ssl as ssl_module
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

import amqp
from amqp import exceptions as amqp_errors

from ... import retry
from ...exceptions import ImproperlyConfigured
from ...retry import RetryPolicy
from ..base import redact
from . import reading

_T = TypeVar("_T")

#: Errors after which a call may succeed on a new connection.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    amqp_errors.RecoverableConnectionError,
    amqp_errors.ConnectionForced,
    amqp_errors.IrrecoverableConnectionError,
    amqp_errors.RecoverableChannelError,
    ConnectionError,
    EOFError,
)

SCHEMES = ("amqp", "amqps", "pyamqp")
DEFAULT_PORT, TLS_PORT = 5672, 5671


@dataclass(frozen=True)
class Target:
    """One server of a (failover) URL."""

    host: str
    port: int
    userid: str
    password: str
    vhost: str
    tls: bool
    query: tuple[tuple[str, str], ...] = ()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_url(url: str) -> list[Target]:
    """The servers of ``url`` (``;``-joined failover list); ImproperlyConfigured on garbage."""
    targets = []
    for piece in (p.strip() for p in url.split(";")):
        if not piece:
            continue
        split = urlsplit(piece)
        scheme = split.scheme.lower()
        if scheme not in SCHEMES:
            raise ImproperlyConfigured(
                f"broker_url: {redact(piece)!r} is not an amqp://, amqps:// or pyamqp:// URL")
        tls = scheme == "amqps"
        try:
            port = split.port or (TLS_PORT if tls else DEFAULT_PORT)
        except ValueError as exc:
            raise ImproperlyConfigured(f"broker_url: bad port in {redact(piece)!r}") from exc
        path = split.path
        vhost = "/" if path in ("", "/") else unquote(path[1:])
        targets.append(Target(
            host=split.hostname or "localhost", port=port,
            userid=unquote(split.username) if split.username else "guest",
            password=unquote(split.password) if split.password else "guest",
            vhost=vhost, tls=tls, query=tuple(parse_qsl(split.query))))
    if not targets:
        raise ImproperlyConfigured(f"broker_url: no server in {redact(url)!r}")
    return targets


def connection_kwargs(target: Target, options: Mapping[str, Any]) -> dict[str, Any]:
    """py-amqp ``Connection`` arguments for ``target`` and the transport options."""
    query = dict(target.query)
    ssl_opt: Any = options.get("ssl", query.get("ssl"))
    if target.tls and not ssl_opt:
        ssl_opt = True
    if isinstance(ssl_opt, str):
        ssl_opt = ssl_opt.lower() in {"1", "true", "yes", "on"}
    if isinstance(ssl_opt, Mapping):
        ssl_opt = _ssl_arguments(ssl_opt)
    heartbeat = float(options.get("heartbeat", query.get("heartbeat", 0)) or 0)
    return {
        "host": target.address,
        "userid": target.userid,
        "password": target.password,
        "virtual_host": target.vhost,
        "ssl": ssl_opt or False,
        "connect_timeout": float(options.get("connect_timeout",
                                             query.get("connect_timeout", 5.0))),
        "heartbeat": heartbeat,
        "login_method": options.get("login_method") or None,
        "client_properties": {"product": "celeriac", "connection_name": f"celeriac:{os.getpid()}",
                              "capabilities": {"consumer_cancel_notify": True,
                                               "connection.blocked": True}},
    }


def _ssl_arguments(given: Mapping[str, Any]) -> dict[str, Any]:
    """Celery's ``broker_use_ssl`` dict (``ssl.wrap_socket`` names) for py-amqp."""
    out = dict(given)
    if "cert_reqs" in out and isinstance(out["cert_reqs"], str):
        out["cert_reqs"] = getattr(ssl_module, out["cert_reqs"])
    return out


class StayClosed(amqp.Channel):
    """A channel that stays closed when the server closes it.

    py-amqp reopens such a channel in place (same number, a fresh delivery-tag space,
    publisher confirms off) and raises the server's error: tags of the old channel
    would then ack other messages on the new one, or be refused. Here the channel
    stays closed, and :meth:`Link.channel` opens a new one in a new generation.
    """

    def _do_revive(self) -> None:
        self.is_open = False


class Link:
    """One connection and one channel, opened on first use, reopened after a failure.

    ``confirms`` puts the channel in publisher-confirm mode. ``generation``
    grows with every new connection, when one is dropped and when the server closed
    the channel: a delivery tag is only meaningful on the generation that delivered it
    (RabbitMQ requeued the deliveries of a closed channel).
    """

    def __init__(self, url: str, options: Mapping[str, Any], *, confirms: bool,
                 on_open: Callable[[amqp.Channel], None] | None = None) -> None:
        self.url = url
        self.targets = parse_url(url)
        self.options = dict(options)
        self.confirms = confirms
        self.on_open = on_open
        self.lock = threading.RLock()
        self.generation = 0
        self._next_target = 0
        self._pid = 0
        self._conn: amqp.Connection | None = None
        self._channel: amqp.Channel | None = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._pid == os.getpid()

    def channel(self) -> amqp.Channel:
        """The open channel, connecting first if needed (call with :attr:`lock` held)."""
        if self._pid != os.getpid():  # a forked child: forget the parent's socket
            self._conn, self._channel, self._pid = None, None, os.getpid()
        if self._channel is not None:
            if self._channel.is_open:
                return self._channel
            self._forget_channel()  # closed by the server: its deliveries were requeued
        if self._conn is None or not self._conn.connected:
            self._connect()
        assert self._conn is not None
        chan = StayClosed(self._conn, auto_decode=False)
        chan.open()
        if self.confirms:
            chan.confirm_select()
        self._channel = chan
        if self.on_open is not None:
            self.on_open(chan)
        return chan

    @property
    def connection(self) -> amqp.Connection:
        self.channel()
        assert self._conn is not None
        return self._conn

    def _connect(self) -> None:
        self._drop_quietly()
        errors = []
        bound = retry.time_left()
        for _ in range(len(self.targets)):
            target = self.targets[self._next_target % len(self.targets)]
            kwargs = connection_kwargs(target, self.options)
            if bound is not None:
                if bound <= 0:
                    raise TimeoutError("deadline reached")
                kwargs["connect_timeout"] = min(kwargs["connect_timeout"], bound)
            conn = amqp.Connection(**kwargs)
            try:
                _open(conn)
            except amqp_errors.AccessRefused as exc:
                raise ImproperlyConfigured(
                    f"broker_url: {redact(self.url)} refused the login: {exc}") from exc
            except amqp_errors.NotAllowed as exc:
                raise ImproperlyConfigured(
                    f"broker_url: virtual host {target.vhost!r} not allowed: {exc}") from exc
            except RETRYABLE_ERRORS as exc:
                errors.append(f"{target.address}: {exc}")
                self._next_target += 1
                continue
            reading.install(conn)  # chunked reads (see .reading)
            self._conn, self._pid = conn, os.getpid()
            self.generation += 1
            return
        raise ConnectionError("; ".join(errors))

    def reset(self) -> None:
        """Forget the connection after an error (the next call reconnects)."""
        self._drop_quietly()

    def reset_channel(self) -> None:
        """Forget the channel after a channel error (the connection stays; what the
        channel delivered is void, a new generation begins)."""
        chan = self._channel
        if chan is not None and chan.is_open and self.connected:
            try:
                chan.close()
            except Exception:
                pass
        self._forget_channel()

    def _forget_channel(self) -> None:
        chan, self._channel = self._channel, None
        if chan is None:
            return
        self.generation += 1
        if chan.connection is not None and self.connected:
            try:
                chan.collect()
            except Exception:
                pass

    def _drop_quietly(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            self.generation += 1  # what the old connection delivered is void from now on
        if conn is not None and self._pid == os.getpid():
            _collect(conn)

    def close(self) -> None:
        with self.lock:
            conn, self._conn, self._channel = self._conn, None, None
            if conn is not None and self._pid == os.getpid():
                try:
                    conn.close()
                except Exception:  # e.g. ConsumerCancelled: a queue deleted under a consumer
                    _collect(conn)  # py-amqp closes the socket only on CloseOk or an OSError


def _open(conn: amqp.Connection) -> None:
    """Connect; a failed handshake closes the socket whatever the error (py-amqp closes it
    on an OSError only)."""
    try:
        conn.connect()
    except BaseException:
        _collect(conn)
        raise


def _collect(conn: amqp.Connection) -> None:
    """Close ``conn``'s socket and forget its channels without a word to the server."""
    try:
        conn.collect()
    except Exception:
        pass


def retrying(url: str, what: str, link: Link, call: Callable[[amqp.Channel], _T],
             policy: RetryPolicy) -> _T:
    """Run ``call(channel)`` on ``link`` under its lock, through :func:`celeriac.retry.call`;
    a connection error drops the connection so the next attempt reconnects."""

    def attempt() -> _T:
        with link.lock:
            try:
                return call(link.channel())
            except RETRYABLE_ERRORS:
                link.reset()
                raise

    return retry.call(attempt, policy, retry_on=RETRYABLE_ERRORS, what=what,
                      where=f"RabbitMQ at {redact(url)}")
