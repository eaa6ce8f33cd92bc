"""The Redis result store on a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``).

Key → slot layout: the keys are those of :mod:`.results` (Celery's names), so a
task's meta ``celery-task-meta-<task_id>`` lands in the slot of its own name and
results spread over the shards by task id. A chord's join keys carry the group
id as hash tag, ``celery-taskset-meta-{<group_id>}.j`` (``.d .s .t .c .m``), so
the join script finds them all on one master.

Writes and notifications: a meta is written by the same script as on one
Redis (refused over a stored ``REVOKED``), one call per key on the key's master,
and announced with ``SPUBLISH`` (sharded pub/sub, Redis 7) on a channel named as
the key; ``wait`` subscribes with ``SSUBSCRIBE`` on that master
(:class:`~.cluster_client.ClusterResultListener`) and reads the key once
subscribed, so it never polls and the notification stays on one shard. Reads
of several keys are one pipeline per master.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import redis

from .client import Connection, PerProcess, get_client, parse_target
from .cluster_client import ClusterResultListener, cluster_connection, router_of
from .result_scripts import CHORD_ADD, WRITE_METAS
from .results import RedisResultStore

#: the notification is sharded: it reaches only the shard of the key
_SCRIPTS = {"chord_add": CHORD_ADD,
            "write_metas": WRITE_METAS.replace("'PUBLISH'", "'SPUBLISH'")}

_listeners: PerProcess[ClusterResultListener] = PerProcess()


def cluster_listener_for(url: str, options: Mapping[str, Any]) -> ClusterResultListener:
    """The process-wide sharded listener for ``url`` (a new one after a fork)."""
    key = (url, repr(sorted((str(k), repr(v)) for k, v in options.items())))

    def make() -> ClusterResultListener:
        target = parse_target(url, options)
        kwargs = {**target.kwargs, "password": target.password, "username": target.username}
        return ClusterResultListener(get_client(url, options), kwargs)  # type: ignore[arg-type]

    return _listeners.get(key, make)


class RedisClusterResultStore(RedisResultStore):
    """Celery's Redis result layout on a cluster, spread by task id."""

    schemes: ClassVar[tuple[str, ...]] = ("redis+cluster", "rediss+cluster")

    def _connection(self) -> Connection:
        conn = self._conn = cluster_connection(self.url, self.options, _SCRIPTS, self._conn)
        return conn

    def _waits(self) -> None:
        """No RESP3 wait connection: a cluster's waits use sharded pub/sub per master."""
        return None

    def _listener(self) -> Any:
        # the first use makes the client, which reads the slot map: retried like a command
        return self._retrying("wait", partial(cluster_listener_for, self.url, self.options))

    def _get_many_raw(self, keys: list[str]) -> list[str | bytes | None]:
        if not keys:
            return []
        values: list[str | bytes | None] = self._retrying(
            "mget", partial(self.direct.pipeline, [("GET", key) for key in keys]))
        return values

    def _write(self, items: list[tuple[str, str]], expires: float | None) -> None:
        self._write_guarded([(key, value, 0) for key, value in items], expires)

    def _write_guarded(self, rows: list[tuple[str, str, int]],
                       expires: float | None) -> list[bool]:
        """One script call per key (each on its key's master, pipelined per master)."""
        if expires is None or expires <= 0:
            ttl = ""
        elif float(expires).is_integer():
            ttl = f"ex:{int(expires)}"
        else:
            ttl = f"px:{max(1, int(expires * 1000))}"
        return [bool(int(flag)) for flag in self._retrying("set", partial(
            self._write_each, rows, ttl))]

    def _write_each(self, rows: list[tuple[str, str, int]], ttl: str) -> list[Any]:
        conn = self._connection()
        script, router = conn[2]["write_metas"], router_of(conn)
        commands = [("EVALSHA", script.sha, 1, key, ttl, value, int(guard))
                    for key, value, guard in rows]
        try:
            replies = router.pipeline(commands)
        except redis.exceptions.NoScriptError:  # a restarted master: load, send again
            router.load_script(script.script)
            replies = router.pipeline(commands)
        return [reply[0] for reply in replies]

    def _chord_keys(self, group_id: str) -> list[str]:
        base = f"{self.prefix}celery-taskset-meta-{{{group_id}}}"
        return [f"{base}.{suffix}" for suffix in ("j", "d", "s", "t", "c", "m")]
