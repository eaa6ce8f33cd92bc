"""The per-thread raw connections (:class:`celeriac.brokers.redis.client.Direct`) of hot paths.

They bypass redis-py's pool for speed, so the guarantees the pool gave must
hold here too: replies stay in sync after an error reply, a dropped
connection is replaced on the next call, threads and forked children never
share a socket.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from celeriac.brokers.redis.client import Direct, direct_for, get_client
from celeriac.brokers.redis.direct import evalsha, run_pipeline

pytestmark = pytest.mark.redis


@pytest.fixture
def direct(redis_url: str) -> Iterator[Direct]:
    found = direct_for(get_client(redis_url))
    yield found
    found.close()


def test_error_reply_is_raised_after_the_batch_and_the_stream_stays_in_sync(
        direct: Direct, key_prefix: str) -> None:
    key = f"{key_prefix}k"
    with pytest.raises(redis.ResponseError):
        direct.pipeline([("SET", key, "1"), ("INCRBY", key, "not-a-number"), ("INCR", key)])
    assert direct.execute("GET", key) == b"2"  # the third command ran; replies line up


def test_a_dropped_connection_is_replaced_on_the_next_call(direct: Direct,
                                                          redis_url: str) -> None:
    my_id = direct.execute("CLIENT", "ID")
    killer = redis.Redis.from_url(redis_url)
    assert killer.execute_command("CLIENT", "KILL", "ID", my_id) == 1
    killer.close()
    with pytest.raises(redis.ConnectionError):
        direct.execute("PING")
    assert direct.execute("PING") in (b"PONG", True)
    assert direct.execute("CLIENT", "ID") != my_id


def test_threads_get_their_own_connections(direct: Direct) -> None:
    ids: list[int] = []
    threads = [threading.Thread(target=lambda: ids.append(direct.execute("CLIENT", "ID")))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids.append(direct.execute("CLIENT", "ID"))
    assert len(set(ids)) == 4


def test_a_forked_child_does_not_use_the_parents_socket(direct: Direct) -> None:
    parent_id = direct.execute("CLIENT", "ID")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its connection id, never return into pytest
        try:
            os.write(write_end, str(direct.execute("CLIENT", "ID")).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child_id = int(os.read(read_end, 64))
    os.close(read_end)
    os.waitpid(pid, 0)
    assert child_id != parent_id
    assert direct.execute("CLIENT", "ID") == parent_id  # the parent's socket still works


def test_after_noscript_only_the_commands_that_did_not_run_are_sent_again(
        direct: Direct, key_prefix: str, redis_url: str) -> None:
    """A batch meeting a server that knows only some of its scripts (another process
    loaded them after a restart): the scripts that ran must not run twice (a RECEIVE run
    twice leases messages nobody is told about; found by the broker-outage tests)."""
    client = get_client(redis_url)
    tag = uuid.uuid4().hex  # scripts no server has seen
    first = client.register_script(f"-- {tag} a\nreturn redis.call('INCR', KEYS[1])")
    second = client.register_script(f"-- {tag} b\nreturn redis.call('INCR', KEYS[1])")
    direct.execute("SCRIPT", "LOAD", second.script)  # known: it runs on the first try
    a, b = f"{key_prefix}a", f"{key_prefix}b"
    replies = run_pipeline(direct, [evalsha(first, [a], []), evalsha(second, [b], [])],
                           [first, second])
    assert replies == [1, 1]
    assert direct.execute("GET", a) == b"1" and direct.execute("GET", b) == b"1"


def test_send_packed_reads_its_replies_and_raises_an_error_reply_after_all(
        direct: Direct, key_prefix: str) -> None:
    """The packed write of a plain ``delay()``: replies read with the connection's own
    reader, an error raised once all were read, the stream in sync for ``pipeline``."""
    from celeriac.brokers.redis.direct import pack

    key = f"{key_prefix}packed"
    assert direct.send_packed(pack([("LPUSH", key, "a"), ("LPUSH", key, "b")]), 2, 5.0) == [1, 2]
    with pytest.raises(redis.ResponseError):
        direct.send_packed(pack([("INCR", key), ("LPUSH", key, "c")]), 2, 5.0)
    assert direct.execute("LLEN", key) == 3  # the second command ran
    assert direct.pipeline([("LRANGE", key, 0, -1)]) == [[b"c", b"b", b"a"]]


def test_send_packed_bounds_the_socket_then_pipeline_restores_it(direct: Direct) -> None:
    """``send_packed`` leaves its bound on the socket for the next publish; any other call
    puts the configured read timeout back (a consumer's wait is not cut to 0.25 s)."""
    from celeriac.brokers.redis.direct import pack

    direct.execute("PING")
    conn = direct._connection()
    configured = conn._sock.gettimeout()
    assert configured is None or configured > 0.25
    assert direct.send_packed(pack([("PING",)]), 1, 0.25) in ([b"PONG"], [True])
    assert conn._sock.gettimeout() == 0.25
    direct.execute("PING")
    assert conn._sock.gettimeout() == configured


def test_send_packed_after_a_dropped_connection_raises_then_reconnects(
        direct: Direct, redis_url: str) -> None:
    from celeriac.brokers.redis.direct import pack

    ping = pack([("CLIENT", "ID")])
    my_id = direct.send_packed(ping, 1, 5.0)[0]
    killer = redis.Redis.from_url(redis_url)
    assert killer.execute_command("CLIENT", "KILL", "ID", my_id) == 1
    killer.close()
    with pytest.raises(redis.ConnectionError):
        direct.send_packed(ping, 1, 5.0)
    assert direct.send_packed(ping, 1, 5.0)[0] != my_id


def test_send_packed_without_hiredis_reads_through_redis_py(
        direct: Direct, key_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without hiredis (the ``redis`` extra installs it) ``send_packed`` reads the replies
    with redis-py's own parser: the same replies, the same error rule."""
    from celeriac.brokers.redis import direct as module

    monkeypatch.setattr(module, "_Reader", None)
    direct.close()
    key = f"{key_prefix}slow"
    packed = module.pack([("LPUSH", key, "a"), ("LPUSH", key, "b")])
    assert direct.send_packed(packed, 2, 5.0) == [1, 2]
    with pytest.raises(redis.ResponseError):
        direct.send_packed(module.pack([("INCR", key), ("LLEN", key)]), 2, 5.0)
    assert direct.execute("LLEN", key) == 2
