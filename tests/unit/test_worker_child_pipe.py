"""A prefork child's pipe to its supervisor holds a drain's worth of frames before the
child's send would block (the default 64 KiB held two leases of tiny tasks)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import sys

import pytest

from celeriac.brokers.base import Delivery
from celeriac.messages import Message
from celeriac.worker.children import PIPE_BYTES, child_pipe
from celeriac.worker.leases import update_frame

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="F_SETPIPE_SZ is Linux's")
F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def _max_pipe() -> int:
    with open("/proc/sys/fs/pipe-max-size") as fh:
        return int(fh.read())


def _frames(count: int) -> list[tuple[object, ...]]:
    """What a child sends for ``count`` tiny tasks: one update per 65 leases and one frame
    of their starts (the shape of ChildMonitor.flush's; descriptions go in the slot)."""
    deliveries = [Delivery(message=Message({"id": f"{i:036d}", "task": "bench.noop"}, {}, b"[]"),
                           queue="celery", tag=str(i),
                           token="00000000-0000-4000-8000-000000000000", owner="o",
                           lease_expires=1e10) for i in range(count)]
    frames: list[tuple[object, ...]] = []
    for start in range(0, count, 65):
        frames.append(update_frame(deliveries[start:start + 65], []))
        frames.append(("started", [("bench.noop", "celery", d.message.task_id, 0.001)
                                   for d in deliveries[start:start + 65]]))
    return frames


def _send_without_blocking(writer: multiprocessing.connection.Connection,
                           frames: list[tuple[object, ...]]) -> int:
    """How many frames go in before a send would block (the reader never reads)."""
    os.set_blocking(writer.fileno(), False)
    sent = 0
    try:
        for frame in frames:
            writer.send(frame)
            sent += 1
    except BlockingIOError:
        pass
    return sent


@pytest.mark.skipif(_max_pipe() < PIPE_BYTES, reason="pipe-max-size below 1 MiB")
def test_child_pipe_holds_a_drain_of_tiny_tasks_unread() -> None:
    mp = multiprocessing.get_context("fork")
    frames = _frames(1300)  # 20 leases of 65
    reader, writer = child_pipe(mp)
    try:
        assert fcntl.fcntl(reader.fileno(), F_GETPIPE_SZ) >= PIPE_BYTES
        assert _send_without_blocking(writer, frames) == len(frames)
        got = [reader.recv() for _ in frames]  # in order, nothing lost
        assert got[0][0] == "update" and len(got[0][1]) == 65
        assert [s[2] for f in got if f[0] == "started" for s in f[1]] == [
            f"{i:036d}" for i in range(1300)]
    finally:
        reader.close()
        writer.close()

    plain_reader, plain_writer = mp.Pipe(duplex=False)  # what children had: 64 KiB
    try:
        assert _send_without_blocking(plain_writer, frames) < len(frames) // 2
    finally:
        plain_reader.close()
        plain_writer.close()
