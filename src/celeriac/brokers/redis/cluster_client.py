"""Redis Cluster plumbing shared by the cluster broker and result store: routing by hash slot.

:class:`Router` is :class:`~.client.Direct` for a cluster: each command goes, on
this thread's raw connection to the node that serves its key's slot, and a
batch is sent as one pipeline per node (replies come back in the batch's
order). A command without a key (``SCRIPT LOAD`` after ``NOSCRIPT``, ``WAIT``)
goes where the command before it went. After a redirection (``MOVED``, ``ASK``),
a ``CLUSTERDOWN``/``TRYAGAIN`` reply or a connection error, the slot map is read
again from the nodes (a replica promoted by a failover is found there) and the
error is raised to the caller's retry (:func:`~.client.retrying`).

:class:`ClusterResultListener` is the result store's notification listener on a
cluster: one sharded pub/sub connection (``SSUBSCRIBE``) per master, each
channel on the master of its slot, so a result's ``SPUBLISH`` reaches only the
shard of its key. When a master's connection breaks, or the master drops a
subscription because its slot moved (an ``sunsubscribe`` we did not ask for), the
slot map is read again and the waiters of the channels that moved are subscribed
on their new master (each waiter reads its key again once the subscription is
confirmed).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

from .client import RETRYABLE_ERRORS, Connection, Direct, direct_for, get_client, retrying
from .durability import retry_policy_for
from .listener import ResultListener

log = logging.getLogger(__name__)

#: Errors after which the slot map is read again before the caller retries.
REROUTE_ERRORS = RETRYABLE_ERRORS
#: commands without a key: they go where the command before them went
_KEYLESS = frozenset({"SCRIPT", "WAIT", "PING", "MULTI", "EXEC", "TIME", "INFO"})


def key_of(command: Sequence[Any]) -> Any:
    """The key that routes ``command`` (None for a command without one)."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return command[3] if int(command[2]) > 0 else None
    if name in _KEYLESS or len(command) < 2:
        return None
    return command[1]


class Router(Direct):
    """Per-thread raw connections to each node of a cluster, chosen by hash slot."""

    def __init__(self, client: RedisCluster) -> None:
        self.cluster = client
        self._local = threading.local()
        self._refresh_lock = threading.Lock()

    def node_direct(self, key: Any) -> Direct:
        """The raw connections to the master serving ``key``'s slot."""
        node = self.cluster.get_node_from_key(key)
        return direct_for(self.cluster.get_redis_connection(node))

    def pipeline(self, commands: Sequence[Sequence[Any]], *,
                 raise_errors: bool = True) -> list[Any]:
        groups: dict[int, tuple[Direct, list[int]]] = {}
        last: Direct | None = getattr(self._local, "last", None)
        try:
            for index, command in enumerate(commands):
                key = key_of(command)
                if key is not None or last is None:
                    last = self.node_direct("" if key is None else key)
                groups.setdefault(id(last), (last, []))[1].append(index)
        except REROUTE_ERRORS:
            self.refresh()
            raise
        self._local.last = last
        replies: list[Any] = [None] * len(commands)
        for direct, indexes in groups.values():
            try:
                got = direct.pipeline([commands[i] for i in indexes],
                                      raise_errors=raise_errors)
            except REROUTE_ERRORS:
                self.refresh()
                raise
            for i, reply in zip(indexes, got, strict=True):
                replies[i] = reply
        return replies

    def load_script(self, source: str) -> None:
        """``SCRIPT LOAD`` on every master (after ``NOSCRIPT`` in a pipelined batch)."""
        for node in self.cluster.get_primaries():
            direct_for(self.cluster.get_redis_connection(node)).execute(
                "SCRIPT", "LOAD", source)

    def refresh(self) -> None:
        """Read the slot map again (a failover promoted a replica; slots moved)."""
        with self._refresh_lock:
            try:
                self.cluster.nodes_manager.initialize()
            except (redis.RedisError, redis.exceptions.RedisClusterException, OSError):
                pass  # every node named is unreachable now: the next retry tries again

    def close(self) -> None:
        for node in self.cluster.get_nodes():
            if node.redis_connection is not None:
                direct_for(node.redis_connection).close()


def router_for(client: RedisCluster) -> Router:
    """The :class:`Router` of ``client`` (one per client)."""
    found: Router | None = getattr(client, "_celeriac_router", None)
    if found is None:
        found = Router(client)
        client._celeriac_router = found  # type: ignore[attr-defined]
    return found


def router_of(conn: Connection) -> Router:
    """The :class:`Router` of a connection made by :func:`cluster_connection`."""
    router = conn[3]
    assert isinstance(router, Router)
    return router


def cluster_connection(url: str, options: Mapping[str, Any], scripts: Mapping[str, str],
                       current: Connection | None) -> Connection:
    """Like :func:`~.client.connection`, with a :class:`Router` as the raw connections."""
    if current is not None and current[0] == os.getpid():
        return current
    # making the client reads the slot map: a node down (a failover under way) is retried
    client: Any = retrying(url, "connect", partial(get_client, url, options),
                           retry_policy_for(url, options))
    registered = {name: client.register_script(src) for name, src in scripts.items()}
    return os.getpid(), client, registered, router_for(client)


class _ShardListener(ResultListener):
    """The sharded pub/sub connection to one master (see :class:`ClusterResultListener`)."""

    SUBSCRIBE, UNSUBSCRIBE, MESSAGE = "ssubscribe", "sunsubscribe", "smessage"

    def __init__(self, owner: ClusterResultListener, node: ClusterNode,
                 kwargs: Mapping[str, Any]) -> None:
        super().__init__(redis.Redis(host=node.host, port=node.port, **kwargs))
        self.owner, self.name = owner, node.name

    def _reconnect(self) -> None:
        try:
            self.owner.reroute(self)
        except Exception:  # this thread must live on: the next attempt reads the map again
            log.debug("result listener: rerouting from %s failed", self.name, exc_info=True)
        if not self._stopped:
            super()._reconnect()

    def _dispatch(self, message: dict[str, Any]) -> None:
        key = message.get("channel")
        if message.get("type") == "sunsubscribe" and key in self._waiters:
            # not ours (we unsubscribe a channel once its last waiter left): the server
            # dropped it because its slot moved to another master; reroute from the top
            self._broken = True
            return
        super()._dispatch(message)

    def take(self, moved: Sequence[bytes]) -> dict[bytes, list[Any]]:
        """Remove the waiters of ``moved`` channels (they go to another master)."""
        with self._lock:
            out = {key: self._waiters.pop(key) for key in moved if key in self._waiters}
            for key in out:
                self._pending.pop(key, None)
            if not self._waiters:
                self._stopped = True
            return out

    def adopt(self, key: bytes, inboxes: list[Any]) -> None:
        """Take over waiters of ``key``; they read their key again once subscribed."""
        with self._lock:
            waiters = self._waiters.setdefault(key, [])
            fresh = not waiters
            waiters.extend(inboxes)
            if fresh:
                self._send(self.SUBSCRIBE, key)
            elif self._pending.get(key, 0) <= 0:
                for inbox in inboxes:
                    inbox.put(("subscribed", None))
            self._start()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="celeriac-result-listener")
            self._thread.start()

    def channels(self) -> list[bytes]:
        with self._lock:
            return list(self._waiters)


class ClusterResultListener:
    """The result listener of a cluster: a :class:`_ShardListener` per master."""

    def __init__(self, client: RedisCluster, kwargs: Mapping[str, Any]) -> None:
        self.cluster = client
        self._kwargs = {**kwargs, "health_check_interval": 0}
        self._lock = threading.Lock()
        self._shards: dict[str, _ShardListener] = {}
        self._routes: dict[bytes, _ShardListener] = {}

    def _shard_for(self, key: bytes) -> _ShardListener:
        node = self.cluster.get_node_from_key(key)
        shard = self._shards.get(node.name)
        if shard is None or shard._stopped:
            shard = self._shards[node.name] = _ShardListener(self, node, self._kwargs)
        return shard

    def subscribe(self, channel: str) -> Any:
        key = channel.encode("utf-8")
        with self._lock:
            shard = self._routes.get(key) or self._shard_for(key)
            self._routes[key] = shard
        return shard.subscribe(channel)

    def unsubscribe(self, channel: str, inbox: Any) -> None:
        key = channel.encode("utf-8")
        with self._lock:
            shard = self._routes.get(key)
            if shard is None:
                return
            shard.unsubscribe(channel, inbox)
            if key not in shard.channels():
                self._routes.pop(key, None)

    def reroute(self, shard: _ShardListener) -> None:
        """``shard``'s connection broke: read the slot map again and move the waiters of
        channels now served by another master there."""
        try:
            self.cluster.nodes_manager.initialize()
        except (redis.RedisError, redis.exceptions.RedisClusterException, OSError):
            return
        with self._lock:
            moved = []
            for key in shard.channels():
                try:
                    if self.cluster.get_node_from_key(key).name != shard.name:
                        moved.append(key)
                except redis.exceptions.RedisClusterException:
                    continue
            for key, inboxes in shard.take(moved).items():
                target = self._shard_for(key)
                self._routes[key] = target
                target.adopt(key, inboxes)
            if shard._stopped and self._shards.get(shard.name) is shard:
                del self._shards[shard.name]
