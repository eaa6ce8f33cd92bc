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

pytest.importorskip("amqp")

import amqp

from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.brokers.base import Delivery
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
        if os.environ.get("CI") == "true":
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
    (durable queue), the leased one counted lost, and producers publish again."""
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
        time.sleep(2)
        node.start()
        back = time.monotonic()
        reader.join(30)
        assert errors == []
        got: list[Delivery] = []
        while len(got) < 5 and time.monotonic() < back + 10:
            got += consumer.receive([Q], owner="a", limit=10, timeout=0.5)
        assert sorted(d.message.task_id for d in got) == [f"task-{n}" for n in range(10, 15)]
        again = next(d for d in got if d.message.task_id == held.message.task_id)
        assert again.lost_count == 1
        assert consumer.ack([held]) == 0  # fenced: the old connection's delivery
        assert consumer.ack(got) == 5
        producer.publish(message(20), Q)
        assert [d.message.task_id for d in consumer.receive([Q], owner="a", timeout=10)] == [
            "task-20"]
    finally:
        producer.close()
        consumer.close()
