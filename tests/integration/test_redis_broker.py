"""Redis broker specifics beyond the contract suite: key layout, atomic leases,
crash safety, fencing, delays, wake-ups, URL parsing, fork safety and reconnection.

Reconnection tests run their own ``redis-server`` on a free port (never the
shared 6379) and kill/restart it by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis

from celeriac.brokers.redis.broker import RedisBroker
from celeriac.brokers.redis.client import get_client, parse_target, redact
from celeriac.brokers.redis.results import RedisResultStore
from celeriac.exceptions import ImproperlyConfigured, OperationalError
from celeriac.messages import task_message
from needs import IN_CI

pytestmark = pytest.mark.redis


def make(redis_url: str, key_prefix: str, **options: object) -> RedisBroker:
    lease = float(options.pop("lease_seconds", 1.0))  # type: ignore[arg-type]
    return RedisBroker(redis_url, lease_seconds=lease,
                       options={"global_keyprefix": key_prefix, **options})


def msg(n: int) -> object:
    return task_message("tests.add", f"task-{n}", (n, 1))


def test_a_countdown_is_published_ready_for_celery_workers_and_parked_by_receive(
        redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    """The default (``delay_in_broker=False``): LPUSHed with its ``eta`` header, as Celery
    publishes it, so a Celery worker can run it; celeriac's RECEIVE moves it to the
    delayed set atomically instead of leasing it early (issue 9, point 8)."""
    broker = make(redis_url, key_prefix, lease_seconds=30)
    due = time.time() + 0.6
    eta = datetime.fromtimestamp(due, timezone.utc)
    broker.publish(task_message("tests.add", "task-1", (1, 1), eta=eta), "q", not_before=due)
    assert raw.llen(key_prefix + "q") == 1 and raw.zcard(key_prefix + "_celeriac.eta.q") == 1
    assert broker.stats("q").delayed == 1 and broker.stats("q").ready == 0
    assert broker.receive(["q"], owner="early", limit=5, timeout=0.05) == []
    assert raw.llen(key_prefix + "q") == 0 and raw.zcard(key_prefix + "_celeriac.delayed.q") == 1
    assert raw.zcard(key_prefix + "_celeriac.eta.q") == 0
    got = broker.receive(["q"], owner="late", limit=5, timeout=3)
    assert [d.message.task_id for d in got] == ["task-1"] and time.time() >= due


def test_a_not_before_without_an_eta_header_stays_parked(
        redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    """A Celery worker would run an eta-less message on a ready list at once: parked."""
    broker = make(redis_url, key_prefix, lease_seconds=30)
    broker.publish(msg(1), "q", not_before=time.time() + 30)  # type: ignore[arg-type]
    assert raw.llen(key_prefix + "q") == 0 and raw.zcard(key_prefix + "_celeriac.delayed.q") == 1


def test_delay_in_broker_true_stores_countdowns_in_the_delayed_set(
        redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    broker = make(redis_url, key_prefix, delay_in_broker=True)
    broker.publish(msg(1), "q", not_before=time.time() + 30)  # type: ignore[arg-type]
    assert raw.llen(key_prefix + "q") == 0 and raw.zcard(key_prefix + "_celeriac.delayed.q") == 1


def test_lease_record_and_key_layout(redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    broker = make(redis_url, key_prefix, lease_seconds=30)
    broker.publish(msg(1), "q")  # type: ignore[arg-type]
    [d] = broker.receive(["q"], owner="w1", timeout=1)
    record = raw.hgetall(f"{key_prefix}_celeriac.lease.{d.token}")
    assert record[b"q"] == b"q" and record[b"o"] == b"w1" and record[b"dc"] == b"1"
    assert json.loads(record[b"m"])["headers"]["id"] == "task-1"
    expiry = raw.zscore(f"{key_prefix}_celeriac.leases.q", d.token)
    server_now = float(".".join(str(x) for x in raw.time()))
    assert expiry is not None and 28 < expiry - server_now <= 30.5
    assert raw.smembers(f"{key_prefix}_celeriac.owner.w1") == {d.token.encode()}
    assert not raw.exists(f"{key_prefix}unacked", f"{key_prefix}unacked_index")
    assert broker.ack([d]) == 1
    assert not raw.exists(f"{key_prefix}_celeriac.lease.{d.token}")
    assert raw.zcard(f"{key_prefix}_celeriac.leases.q") == 0


def test_messages_celery_lpushed_by_hand_are_fifo(redis_url: str, key_prefix: str,
                                                  raw: redis.Redis) -> None:
    broker = make(redis_url, key_prefix)
    for n in range(3):
        raw.lpush(f"{key_prefix}q", msg(n).dumps("q"))  # type: ignore[attr-defined]
    got = broker.receive(["q"], owner="w", limit=10, timeout=1)
    assert [d.message.task_id for d in got] == ["task-0", "task-1", "task-2"]


def test_garbage_is_delivered_for_dead_lettering(redis_url: str, key_prefix: str,
                                                 raw: redis.Redis) -> None:
    broker = make(redis_url, key_prefix)
    raw.lpush(f"{key_prefix}q", b"\xffnot json")
    [d] = broker.receive(["q"], owner="w", timeout=1)
    assert d.message.headers == {} and d.message.body == b"\xffnot json"
    assert broker.dead_letter(d, "decode_error")
    [dead] = broker.dead_letters("q")
    assert dead.reason == "decode_error" and dead.message.body == b"\xffnot json"


def test_crashed_consumer_loses_nothing(redis_url: str, key_prefix: str) -> None:
    broker = make(redis_url, key_prefix)
    for n in range(5):
        broker.publish(msg(n), "q")  # type: ignore[arg-type]
    code = (
        "import os, sys\n"
        "from celeriac.brokers.redis.broker import RedisBroker\n"
        f"b = RedisBroker({redis_url!r}, lease_seconds=1.0, "
        f"options={{'global_keyprefix': {key_prefix!r}}})\n"
        "got = b.receive(['q'], owner='doomed', limit=5, timeout=2)\n"
        "print(len(got), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.strip() == "5"
    assert broker.stats("q").leased == 5
    got: list = []
    deadline = time.monotonic() + 5
    while len(got) < 5 and time.monotonic() < deadline:
        got += broker.receive(["q"], owner="heir", limit=10, timeout=0.5)
    assert sorted(d.message.task_id for d in got) == [f"task-{n}" for n in range(5)]
    assert all(d.lost_count == 1 and d.redelivered for d in got)
    assert all(d.message.properties["delivery_info"]["redelivered"] for d in got)
    assert broker.ack(got) == 5


def test_stale_owner_is_fenced_after_takeover(redis_url: str, key_prefix: str) -> None:
    broker = make(redis_url, key_prefix)
    broker.publish(msg(1), "q")  # type: ignore[arg-type]
    [old] = broker.receive(["q"], owner="paused", timeout=1)
    time.sleep(1.1)
    [new] = broker.receive(["q"], owner="alive", timeout=2)
    assert new.token != old.token and new.tag == old.tag
    assert broker.renew([old]) == [False]
    assert broker.ack([old]) == 0
    assert not broker.release(old) and not broker.dead_letter(old, "rejected")
    assert broker.renew([new]) == [True]
    assert broker.ack([new]) == 1


def test_delayed_messages_move_once_with_many_consumers(redis_url: str,
                                                        key_prefix: str) -> None:
    broker = make(redis_url, key_prefix, lease_seconds=30)
    due = time.time() + 2.0  # room for 50 publishes on a loaded machine
    for n in range(50):
        broker.publish(msg(n), "q", not_before=due)  # type: ignore[arg-type]
    assert broker.stats("q").delayed == 50
    seen: list[str | None] = []
    lock = threading.Lock()

    def consume(owner: str) -> None:
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            got = broker.receive(["q"], owner=owner, limit=7, timeout=0.2)
            with lock:
                seen.extend(d.message.task_id for d in got)

    threads = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == sorted(f"task-{n}" for n in range(50))  # no duplicate, no loss
    assert time.time() >= due


def test_blocked_receive_wakes_fast_on_publish_and_polls_celery_lists(
        redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    broker = make(redis_url, key_prefix, polling_interval=0.05)
    threading.Timer(0.3, broker.publish, (msg(1), "q")).start()
    started = time.monotonic()
    [d] = broker.receive(["q"], owner="w", timeout=5)
    assert time.monotonic() - started < 1.0 and d.message.task_id == "task-1"
    threading.Timer(0.3, raw.lpush, (f"{key_prefix}q", msg(2).dumps("q"))).start()  # type: ignore[attr-defined]
    [d2] = broker.receive(["q"], owner="w", timeout=5)  # a Celery producer: no wake token
    assert d2.message.task_id == "task-2"
    assert time.monotonic() - started < 2.0


def test_wake_tokens_nobody_takes_stay_bounded_and_waiting_consumers_still_wake(
        redis_url: str, key_prefix: str, raw: redis.Redis) -> None:
    """With no consumer waiting, a full wake list makes publishes leave the token out for
    QUIET_WAKE seconds (one LPUSH each), then trim it back to its cap; a consumer that
    waits takes the tokens, so publishes push them again and it wakes at once."""
    from celeriac.brokers.redis.publishing import QUIET_WAKE
    from celeriac.brokers.redis.scripts import WAKE_CAP
    broker = make(redis_url, key_prefix, polling_interval=None)
    wake = f"{key_prefix}_celeriac.wake.q"
    for n in range(WAKE_CAP + 50):
        broker.publish(msg(n), "q")  # type: ignore[arg-type]
    assert raw.llen(f"{key_prefix}q") == WAKE_CAP + 50
    assert raw.llen(wake) <= WAKE_CAP + 1  # bounded: quiet, or pushed and trimmed
    assert wake in broker._quiet_wake  # publishes leave the token out for now
    time.sleep(QUIET_WAKE * 2)
    broker.publish(msg(100), "q")  # type: ignore[arg-type]
    assert raw.llen(wake) == WAKE_CAP
    broker.purge("q")
    raw.delete(wake)  # as RECEIVE does when the lists are empty
    assert broker.receive(["q"], owner="w", timeout=0.01) == []
    threading.Timer(0.3, broker.publish, (msg(200), "q")).start()
    started = time.monotonic()
    [d] = broker.receive(["q"], owner="w", timeout=5)  # no polling: only a token wakes it
    assert d.message.task_id == "task-200" and time.monotonic() - started < 3.0


def test_visibility_timeout_option_is_ignored(redis_url: str, key_prefix: str) -> None:
    broker = make(redis_url, key_prefix, visibility_timeout=3600, lease_seconds=0.5)
    broker.publish(msg(1), "q")  # type: ignore[arg-type]
    [first] = broker.receive(["q"], owner="a", timeout=1)
    time.sleep(0.6)
    [again] = broker.receive(["q"], owner="b", timeout=2)  # the lease, not 3600 s, decides
    assert again.lost_count == 1 and first.token != again.token


def test_ack_many_in_one_call(redis_url: str, key_prefix: str) -> None:
    broker = make(redis_url, key_prefix, lease_seconds=30)
    from celeriac.brokers.base import Publish
    broker.publish_many(Publish(msg(n), "q") for n in range(2500))  # type: ignore[arg-type]
    got = broker.receive(["q"], owner="w", limit=2500, timeout=1)
    assert len(got) == 2500
    assert [d.message.task_id for d in got[:3]] == ["task-0", "task-1", "task-2"]
    assert broker.renew(got) == [True] * 2500
    assert broker.ack(got) == 2500
    assert broker.stats("q").leased == 0


# -- connections ---------------------------------------------------------------------
def test_url_parsing_and_redaction() -> None:
    target = parse_target("sentinel://:pw@h1:26379/3;sentinel://h2:26380",
                          {"master_name": "mymaster", "sentinel_kwargs": {"password": "s"}})
    assert target.sentinels == (("h1", 26379), ("h2", 26380))
    assert (target.master_name, target.db, target.password) == ("mymaster", 3, "pw")
    assert target.sentinel_kwargs == {"password": "s"}
    with pytest.raises(ImproperlyConfigured, match="master_name"):
        parse_target("sentinel://h1:26379", {})
    tls = parse_target("rediss://h:6380/0", {"ssl": {"ssl_cert_reqs": "required"}})
    assert tls.kwargs["ssl_cert_reqs"] == "required" and not tls.sentinels
    assert parse_target("redis+socket:///run/r.sock?virtual_host=2").url == \
        "unix:///run/r.sock?db=2"
    celery_spelling = parse_target("rediss://h:6380/0?ssl_cert_reqs=CERT_NONE")
    assert celery_spelling.url == "rediss://h:6380/0?ssl_cert_reqs=none"
    assert redact("redis://user:secret@h:1/0") == "redis://user:***@h:1/0"
    assert "secret" not in redact("sentinel://:secret@a:1;sentinel://:secret@b:2")


def test_one_client_per_process_and_fresh_after_fork(redis_url: str, key_prefix: str) -> None:
    client = get_client(redis_url, {})
    assert get_client(redis_url, {}) is client
    store = RedisResultStore(redis_url, options={"global_keyprefix": key_prefix})
    assert store.wait("before-fork", timeout=0.05) is None  # parent's listener thread runs
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: its own client and listener, both working
        ok = False
        try:
            ok = get_client(redis_url, {}) is not client and get_client(redis_url, {}).ping()
            threading.Timer(0.2, store.set, ("forked", {"status": "SUCCESS", "result": 1,
                                                         "task_id": "forked"})).start()
            ok = ok and (store.wait("forked", timeout=5) or {}).get("result") == 1
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"1"
    os.waitpid(pid, 0)
    assert client.ping()


# -- reconnection (own redis-server) ---------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A private redis-server that tests may kill and restart."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port, self.workdir, self.extra = free_port(), workdir, extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--dir", str(self.workdir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError("own redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server binary not installed (CI=true: required)")
        pytest.skip("redis-server binary not installed")
    server = OwnRedis(tmp_path, "--appendonly", "no")
    server.start()
    yield server
    server.kill()


def test_consumer_survives_restart_and_producer_fails_clearly(own_redis: OwnRedis) -> None:
    broker = RedisBroker(own_redis.url, lease_seconds=5)
    broker.publish(msg(1), "q")  # type: ignore[arg-type]
    assert len(broker.receive(["q"], owner="w", timeout=1)) == 1
    own_redis.kill()
    started = time.monotonic()
    assert broker.receive(["q"], owner="w", timeout=0.5) == []  # no exception while down
    assert time.monotonic() - started < 3
    with pytest.raises(OperationalError, match=f"127.0.0.1:{own_redis.port}"):
        broker.publish(msg(2), "q")  # type: ignore[arg-type]
    assert time.monotonic() - started < 10
    own_redis.start()  # empty again: scripts must be reloaded (NOSCRIPT)
    restarted = time.monotonic()
    broker.publish(msg(3), "q")  # type: ignore[arg-type]
    got = broker.receive(["q"], owner="w", timeout=10)
    assert [d.message.task_id for d in got] == ["task-3"]
    assert time.monotonic() - restarted < 10


def test_consumer_blocked_during_outage_resumes(own_redis: OwnRedis) -> None:
    broker = RedisBroker(own_redis.url, lease_seconds=5)
    result: list = []
    thread = threading.Thread(
        target=lambda: result.extend(broker.receive(["q"], owner="w", timeout=8)))
    thread.start()
    time.sleep(0.3)
    own_redis.kill()
    time.sleep(0.5)
    own_redis.start()
    RedisBroker(own_redis.url).publish(msg(4), "q")  # type: ignore[arg-type]
    thread.join(10)
    assert [d.message.task_id for d in result] == ["task-4"]


def test_result_waiter_survives_restart(own_redis: OwnRedis) -> None:
    store = RedisResultStore(own_redis.url)
    tid = str(uuid.uuid4())
    box: list = []
    thread = threading.Thread(target=lambda: box.append(store.wait(tid, timeout=10)))
    thread.start()
    time.sleep(0.3)
    own_redis.kill()
    time.sleep(0.3)
    own_redis.start()
    time.sleep(1.5)  # the listener reconnects and subscribes again
    stored = time.monotonic()
    RedisResultStore(own_redis.url).set(tid, {"status": "SUCCESS", "result": 1, "task_id": tid})
    thread.join(10)
    assert box and box[0] is not None and box[0]["result"] == 1
    assert time.monotonic() - stored < 3  # woken by the PUBLISH, not by the 10 s timeout


def test_a_wait_after_an_idle_restart_reconnects(own_redis: OwnRedis) -> None:
    store = RedisResultStore(own_redis.url)
    writer = RedisResultStore(own_redis.url)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    writer.set(first, {"status": "SUCCESS", "result": 1, "task_id": first})
    assert store.wait(first, timeout=10) is not None  # the wait connection exists, idle now
    own_redis.kill()
    own_redis.start()

    def later() -> None:
        time.sleep(0.3)
        writer.set(second, {"status": "SUCCESS", "result": 2, "task_id": second})

    thread = threading.Thread(target=later)
    thread.start()
    got = store.wait(second, timeout=None)  # only the reconnected subscription can end it
    thread.join(10)
    assert got is not None and got["result"] == 2


def test_accepted_messages_survive_kill_with_aof(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server binary not installed (CI=true: required)")
        pytest.skip("redis-server binary not installed")
    server = OwnRedis(tmp_path, "--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        broker = RedisBroker(server.url, lease_seconds=0.5)
        broker.publish(msg(1), "q")  # type: ignore[arg-type]
        broker.publish(msg(2), "q", not_before=time.time() + 0.5)  # type: ignore[arg-type]
        [leased] = broker.receive(["q"], owner="w", timeout=1)
        server.kill()
        server.start()
        got: list = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += broker.receive(["q"], owner="heir", limit=5, timeout=0.5)
        assert sorted(d.message.task_id for d in got) == ["task-1", "task-2"]
        assert leased.message.task_id == "task-1"
    finally:
        server.kill()


def test_sentinel_url_finds_the_master(own_redis: OwnRedis, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {own_redis.port} 1\n")
    sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=port).sentinel_get_master_addr_by_name("mymaster"):
                    break
            except redis.RedisError:
                time.sleep(0.05)
        url = f"sentinel://127.0.0.1:{port}/0"
        broker = RedisBroker(url, options={"master_name": "mymaster"})
        broker.publish(msg(5), "q")  # type: ignore[arg-type]
        [d] = broker.receive(["q"], owner="w", timeout=2)
        assert d.message.task_id == "task-5"
        assert redis.Redis(port=own_redis.port).exists("_kombu.binding.q")
        store = RedisResultStore(url, options={"master_name": "mymaster"})
        store.set("t5", {"status": "SUCCESS", "result": 5, "task_id": "t5"})
        assert store.wait("t5", timeout=2) == {"status": "SUCCESS", "result": 5, "task_id": "t5"}
    finally:
        os.kill(sentinel.pid, signal.SIGKILL)
        sentinel.wait()


def test_unix_socket_url(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server binary not installed (CI=true: required)")
        pytest.skip("redis-server binary not installed")
    sock = tmp_path / "r.sock"
    server = OwnRedis(tmp_path, "--unixsocket", str(sock))
    server.start()
    try:
        broker = RedisBroker(f"redis+socket://{sock}?virtual_host=3")
        broker.publish(msg(7), "q")  # type: ignore[arg-type]
        assert redis.Redis(unix_socket_path=str(sock), db=3).llen("q") == 1
        [d] = broker.receive(["q"], owner="w", timeout=2)
        assert d.message.task_id == "task-7"
    finally:
        server.kill()


def test_rediss_tls_url(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        pytest.skip("redis-server or openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--dir", str(tmp_path), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while server.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        if server.poll() is not None:
            pytest.skip("this redis-server was built without TLS")
        url = f"rediss://127.0.0.1:{port}/0"
        options = {"ssl": {"ssl_ca_certs": str(cert), "ssl_cert_reqs": "required"}}
        broker = RedisBroker(url, options=options)
        broker.publish(msg(6), "q")  # type: ignore[arg-type]
        [d] = broker.receive(["q"], owner="w", timeout=2)
        assert d.message.task_id == "task-6"
        store = RedisResultStore(f"{url}?ssl_cert_reqs=CERT_NONE")  # Celery's URL spelling
        store.set("t6", {"status": "SUCCESS", "result": 6, "task_id": "t6"})
        assert store.get("t6") == {"status": "SUCCESS", "result": 6, "task_id": "t6"}
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()


def test_acks_that_cannot_get_through_raise_an_outage_error(redis_url: str,
                                                             key_prefix: str) -> None:
    """``ack_and_receive`` raises acks it could not send before its timeout as an
    OperationalError (an outage the worker's watch reports in one line), never as a raw
    redis-py error (which the consumer would log with a traceback)."""
    broker = make(redis_url, key_prefix)
    broker.publish(msg(1), "q")
    held = broker.receive(["q"], owner="w1", limit=1, timeout=1)
    assert len(held) == 1
    down = RedisBroker("redis://127.0.0.1:1/0", options={"global_keyprefix": key_prefix})
    try:
        with pytest.raises(OperationalError, match="ack"):
            down.ack_and_receive(held, ["q"], owner="w1", limit=1, timeout=0)
    finally:
        down.close()
        assert broker.ack(held) == 1
        broker.close()
