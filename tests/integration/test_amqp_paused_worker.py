"""A paused (SIGSTOP) consumer on RabbitMQ keeps its messages until the server drops it.

A child process leases a message and is stopped with SIGSTOP; its kernel keeps the TCP
connection open. With AMQP heartbeats off (celeriac's default) RabbitMQ has no reason
to close the connection, so the message stays with the paused process (until the
server's ``consumer_timeout``, 30 min, not waited for here); with
``heartbeat: 2`` RabbitMQ closes it after 4 to 6 s of silence and another consumer
gets the message, counted as lost. docs/rabbitmq.md ("A paused worker") states it.

Each test has a vhost of its own (``rabbitmq_url``); the child is ours, killed by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("amqp")

from celeriac.brokers.amqp.broker import AMQPBroker
from celeriac.messages import task_message

Q = "paused-q"
HOLDER = """
import sys, time
from celeriac.brokers.amqp.broker import AMQPBroker
broker = AMQPBroker(sys.argv[1], options={"heartbeat": float(sys.argv[2])})
got = []
while not got:
    got = broker.receive([sys.argv[3]], owner="paused", limit=1, timeout=1.0)
print(got[0].message.task_id, flush=True)
while True:
    broker.receive([sys.argv[3]], owner="paused", limit=1, timeout=0.5)  # heartbeats
"""


def paused_holder(url: str, heartbeat: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, url, str(heartbeat), Q],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    os.kill(proc.pid, signal.SIGSTOP)
    return proc


def end(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    os.kill(proc.pid, signal.SIGCONT)
    proc.wait(10)


def wait_for(broker: AMQPBroker, seconds: float) -> list[object]:
    deadline = time.monotonic() + seconds
    got: list[object] = []
    while not got and time.monotonic() < deadline:
        got = broker.receive([Q], owner="other", limit=1, timeout=0.5)
    return got


@pytest.mark.timeout(120)
def test_heartbeats_off_the_paused_process_keeps_its_message(rabbitmq_url: str) -> None:
    other = AMQPBroker(rabbitmq_url)
    try:
        other.publish(task_message("t.x", "held", (), {}), Q)
        proc = paused_holder(rabbitmq_url, 0)
        try:
            assert wait_for(other, 8.0) == []  # past the next test's drop (about 6 s)
        finally:
            end(proc)
        got = wait_for(other, 15.0)  # the process died: RabbitMQ redelivers at once
        assert [d.message.task_id for d in got] == ["held"]  # type: ignore[attr-defined]
    finally:
        other.close()


@pytest.mark.timeout(120)
def test_with_heartbeats_rabbitmq_drops_the_paused_process(rabbitmq_url: str) -> None:
    other = AMQPBroker(rabbitmq_url)
    try:
        other.publish(task_message("t.x", "held", (), {}), Q)
        proc = paused_holder(rabbitmq_url, 2)
        try:
            got = wait_for(other, 30.0)  # still paused: the server closed its connection
            assert [d.message.task_id for d in got] == ["held"]  # type: ignore[attr-defined]
            assert got[0].lost_count == 1  # type: ignore[attr-defined]
        finally:
            end(proc)
    finally:
        other.close()
