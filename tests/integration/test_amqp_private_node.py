"""RabbitMQ behaviour that needs a server of the test's own: a restart mid-run, and
``consumer_timeout`` (server-wide on RabbitMQ 3.10, so it cannot be shortened on the
shared server).

A private node is started from ``rabbitmq-server`` with its own node name, free AMQP and
distribution ports, and its database, logs and config in a temp dir
(``consumer_timeout`` 4 s, checked every second); it is stopped by the process group
this test started. The shared RabbitMQ on 5672 is never touched.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from needs import IN_CI

pytest.importorskip("amqp")

import amqp

from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.brokers.base import Delivery
from celeriac.exceptions import OperationalError
from celeriac.messages import Message, task_message

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CONSUMER_TIMEOUT_MS = 4000
Q = "private-q"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """A RabbitMQ node in ``root`` on free ports; ``stop``/``start`` keep its data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port, self.dist_port = free_port(), free_port()
        self.name = f"celeriac-test-{uuid.uuid4().hex[:8]}@localhost"
        (root / "advanced.config").write_text(
            f"[{{rabbit, [{{consumer_timeout, {CONSUMER_TIMEOUT_MS}}}, "
            "{channel_tick_interval, 1000}, {loopback_users, []}]}].\n")
        (root / "enabled_plugins").write_text("[].\n")
        (root / "env.conf").write_text("")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, timeout: float = 120.0) -> None:
        env = {**os.environ, "HOME": str(self.root),
               "RABBITMQ_CONF_ENV_FILE": str(self.root / "env.conf"),
               "RABBITMQ_NODENAME": self.name, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
               "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
               "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
               "RABBITMQ_LOG_BASE": str(self.root / "log"),
               "RABBITMQ_CONFIG_FILE": str(self.root / "no-rabbitmq-conf"),
               "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins")}
        with open(self.root / "server.log", "ab") as out:
            self.proc = subprocess.Popen([SERVER], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = amqp.Connection(f"127.0.0.1:{self.port}", connect_timeout=2)
                conn.connect()
                conn.close()
                return
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "server.log").read_text(errors="replace")[-3000:]
                    self.stop()
                    pytest.fail(f"the private RabbitMQ node did not start:\n{log}")
                time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to the process group this test started (RabbitMQ stops cleanly)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    if not os.path.exists(SERVER):
        if IN_CI:
            pytest.fail(f"{SERVER} is missing: a private RabbitMQ node cannot be started")
        pytest.skip("rabbitmq-server is not installed")
    made = Node(tmp_path_factory.mktemp("rabbitmq-node"))
    made.start()
    yield made
    made.stop()


def message(n: int) -> Message:
    return task_message("tests.add", f"task-{n}", (n,), {})


def test_a_lease_outlives_consumer_timeout_while_its_holder_lives(node: Node) -> None:
    holder = AMQPBroker(node.url, options={"consumer_timeout": CONSUMER_TIMEOUT_MS / 1000})
    other = AMQPBroker(node.url, options={"consumer_timeout": CONSUMER_TIMEOUT_MS / 1000})
    try:
        holder.publish(message(1), Q)
        [held] = holder.receive([Q], owner="a", timeout=10)
        # a long task: the holder's consumer reads nothing for 3x the server's timeout
        deadline = time.monotonic() + 3 * CONSUMER_TIMEOUT_MS / 1000
        while time.monotonic() < deadline:
            assert other.receive([Q], owner="b", timeout=1.0) == []
        assert holder.renew([held]) == [True]
        assert holder.ack([held]) == 1
        assert other.receive([Q], owner="b", timeout=2.0) == []
    finally:
        holder.close()
        other.close()


def test_prefetched_messages_are_given_back_before_consumer_timeout(node: Node) -> None:
    """Messages that arrived but were not started go back to the queue, uncounted, while
    the started one stays leased: none of them may close the channel."""
    timeout = CONSUMER_TIMEOUT_MS / 1000
    holder = AMQPBroker(node.url, options={"consumer_timeout": timeout, "prefetch_count": 10})
    other = AMQPBroker(node.url, options={"consumer_timeout": timeout})
    try:
        for n in range(30, 35):
            holder.publish(message(n), Q)
        [held] = holder.receive([Q], owner="a", limit=1, timeout=10)
        assert holder.stats(Q).ready == 4  # the rest arrived at the holder, unleased
        got: list[Delivery] = []
        deadline = time.monotonic() + 3 * timeout
        while time.monotonic() < deadline:
            got += other.receive([Q], owner="b", limit=10, timeout=1.0)
            assert held.message.task_id not in [d.message.task_id for d in got]
        assert sorted(d.message.task_id for d in got) == sorted(
            f"task-{n}" for n in range(30, 35) if f"task-{n}" != held.message.task_id)
        assert all(d.lost_count == 0 for d in got)
        assert other.ack(got) == 4
        assert holder.ack([held]) == 1
        assert other.receive([Q], owner="b", timeout=2.0) == []
    finally:
        holder.close()
        other.close()


def test_without_rollover_rabbitmq_redelivers_after_consumer_timeout(node: Node) -> None:
    """The check above can fail: with the rollover off, the same wait loses the lease."""
    holder = AMQPBroker(node.url, options={"consumer_timeout": 0})
    other = AMQPBroker(node.url, options={"consumer_timeout": 0})
    try:
        holder.publish(message(2), Q)
        [held] = holder.receive([Q], owner="a", timeout=10)
        got: list[Delivery] = []
        deadline = time.monotonic() + 6 * CONSUMER_TIMEOUT_MS / 1000
        while not got and time.monotonic() < deadline:
            got = other.receive([Q], owner="b", timeout=1.0)
        assert [d.message.task_id for d in got] == ["task-2"]
        assert other.ack(got) == 1
        assert held.message.task_id == "task-2"
    finally:
        holder.close()
        other.close()


@pytest.mark.slow  # the copy waits out its minute in the holding queue
def test_a_dead_holders_rolled_over_copy_comes_back_counted(node: Node) -> None:
    holder = AMQPBroker(node.url, options={"consumer_timeout": CONSUMER_TIMEOUT_MS / 1000})
    other = AMQPBroker(node.url, options={"consumer_timeout": CONSUMER_TIMEOUT_MS / 1000})
    try:
        holder.publish(message(3), Q)
        [held] = holder.receive([Q], owner="a", timeout=10)
        old_tag = holder._leases[held.token].arrived.tag
        deadline = time.monotonic() + 3 * CONSUMER_TIMEOUT_MS / 1000
        while holder._leases[held.token].arrived.tag == old_tag:  # rolled over once
            assert time.monotonic() < deadline, "no rollover"
            time.sleep(0.1)
        with holder._con.lock:
            holder._con.reset()  # the holder dies: its sockets close
        got: list[Delivery] = []
        deadline = time.monotonic() + 90  # the copy expires in its holding queue (60 s)
        while not got and time.monotonic() < deadline:
            got = other.receive([Q], owner="b", timeout=1.0)
        assert [(d.message.task_id, d.lost_count, d.delivery_count) for d in got] == [
            ("task-3", 1, 2)]
        assert not [h for h in got[0].message.headers if h.startswith("x-")]
        other.ack(got)
    finally:
        holder.close()
        other.close()


def test_restart_mid_run_loses_nothing_confirmed(node: Node) -> None:
    """The node is stopped with messages confirmed and one leased, and started again:
    the consumer resumes within 10 s of the node being back, every message is there
    (durable queue), the leased one counted lost; a producer gives up by its retry
    policy, and one with a longer policy gets its message in once the node is back."""
    producer = AMQPBroker(node.url)
    consumer = AMQPBroker(node.url)
    try:
        for n in range(10, 15):
            producer.publish(message(n), Q)
        [held] = consumer.receive([Q], owner="a", limit=1, timeout=10)
        node.stop()
        errors: list[BaseException] = []

        def keep_receiving() -> None:
            try:
                while node.proc is None:
                    consumer.receive([Q], owner="a", timeout=0.5)
            except BaseException as exc:  # receive must ride out the outage
                errors.append(exc)

        reader = threading.Thread(target=keep_receiving)
        reader.start()
        with pytest.raises(OperationalError):  # a short policy gives up, it does not hang
            producer.publish(message(98), Q)
        patient = AMQPBroker(node.url, options={"retry_policy": {
            "max_retries": 200, "interval_start": 0.2, "interval_step": 0.2,
            "interval_max": 0.5}})
        late = threading.Thread(target=lambda: patient.publish(message(15), Q))
        late.start()  # retries while the node is down, goes through once it is back
        time.sleep(2)
        node.start()
        back = time.monotonic()
        reader.join(30)
        late.join(60)
        patient.close()
        assert errors == []
        got: list[Delivery] = []
        while len(got) < 6 and time.monotonic() < back + 10:
            got += consumer.receive([Q], owner="a", limit=10, timeout=0.5)
        assert sorted(d.message.task_id for d in got) == [f"task-{n}" for n in range(10, 16)]
        again = next(d for d in got if d.message.task_id == held.message.task_id)
        assert again.lost_count == 1
        assert consumer.ack([held]) == 0  # fenced: the old connection's delivery
        assert consumer.ack(got) == 6
        producer.publish(message(20), Q)
        assert [d.message.task_id for d in consumer.receive([Q], owner="a", timeout=10)] == [
            "task-20"]
    finally:
        producer.close()
        consumer.close()


LONG_TASKS = '''
import time
from pathlib import Path

from celeriac import Celery

app = Celery("longproj", broker={url!r})
app.conf.broker_transport_options = {{"consumer_timeout": {timeout}}}
HERE = Path(__file__).parent


@app.task(name="long.run")
def run(label, seconds):
    with open(HERE / "runs", "a") as out:
        out.write(label + "\\n")
    time.sleep(seconds)
    with open(HERE / "done", "a") as out:
        out.write(label + "\\n")
'''


@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_a_task_longer_than_consumer_timeout_runs_once(node: Node, tmp_path: Path,
                                                       pool: str) -> None:
    """Two real workers; a task sleeps 3x the server's consumer_timeout: it runs once,
    on one worker, and its message is settled (nothing left in the queue)."""
    import sys

    (tmp_path / "longproj.py").write_text(LONG_TASKS.format(
        url=node.url, timeout=CONSUMER_TIMEOUT_MS / 1000))
    env = {k: v for k, v in os.environ.items() if "BROKER" not in k and "BACKEND" not in k}
    env["PYTHONPATH"] = str(tmp_path)
    logs = [open(tmp_path / f"worker{i}.log", "wb") for i in range(2)]  # noqa: SIM115
    workers = [subprocess.Popen([sys.executable, "-m", "celeriac", "-A", "longproj", "worker",
                                 "-P", pool, "-c", "2", "-n", f"long{i}@%h", "-l", "INFO"],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
               for i, log in enumerate(logs)]
    try:
        deadline = time.monotonic() + 90
        while sum("ready." in (tmp_path / f"worker{i}.log").read_text(errors="replace")
                  for i in range(2)) < 2:
            assert time.monotonic() < deadline, "workers not ready"
            assert all(w.poll() is None for w in workers)
            time.sleep(0.2)
        sys.path.insert(0, str(tmp_path))
        try:
            import longproj  # type: ignore[import-not-found]

            longproj.run.delay("long", 3 * CONSUMER_TIMEOUT_MS / 1000)
            for n in range(3):
                longproj.run.delay(f"short{n}", 0.1)
            deadline = time.monotonic() + 90
            while "long" not in read(tmp_path / "done"):
                assert time.monotonic() < deadline, "the long task never finished"
                time.sleep(0.2)
            time.sleep(2 * CONSUMER_TIMEOUT_MS / 1000)  # a redelivery would start by now
            assert read(tmp_path / "runs").count("long") == 1
            assert sorted(read(tmp_path / "done")) == ["long", "short0", "short1", "short2"]
            assert longproj.app.broker.stats("celery").ready == 0
            longproj.app.close()
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("longproj", None)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait(10)
        for log in logs:
            log.close()
    for i in range(2):
        text = (tmp_path / f"worker{i}.log").read_text(errors="replace")
        assert "PRECONDITION_FAILED" not in text and "closed the consuming channel" not in text


def read(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
