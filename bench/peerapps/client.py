"""The client side of one system, driven by ``bench/peers.py`` over stdin/stdout.

``python -m peerapps.client peerapps.<module>`` imports the module, builds its
``Client`` and answers one JSON line per command line:

``{"op": "enqueue", "warm": W, "n": N, "key": K}``
    ``W`` untimed calls, then ``N`` timed sequential single enqueues of
    ``incr(K)``; answers ``{"seconds": ...}`` (the ``N`` calls only).
``{"op": "lpush", "warm": W, "n": N, "key": K, "payload": P}``
    the same loop with raw redis-py ``LPUSH K P`` (the reference for enqueue).
``{"op": "trickle", "key": K, "interval": S}``
    enqueue ``incr(K)`` every ``S`` seconds from a thread (keeps the workers
    warm and out of their idle back-off until the backlog is released).
``{"op": "stop_trickle"}``
    stops it; answers ``{"sent": count}``.
``{"op": "nudge", "key": K, "n": N}``
    enqueue ``incr(K)`` N times at once: right after the backlog is put back,
    so that workers that wait for a publisher's wake-up (celeriac) or poll
    start on it together; answers ``{"sent": N}``.
``{"op": "roundtrip", "warm": W, "n": N, "key": K, "timeout": T, "budget": B}``
    ``W`` untimed, then up to ``N`` timed ``enqueue + wait for the result``
    calls, stopping early once the timed ones took ``B`` seconds (systems that
    poll for results take 50-500 ms each); answers ``{"ms": [...]}``.
``{"op": "quit"}``

A failure answers ``{"error": "..."}``. Replies go to the original stdout;
anything the libraries print goes to stderr, so it cannot garble a reply.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import threading
import time
from typing import Any


class SyncClient:
    """A client whose enqueue and wait calls are plain (blocking) functions."""

    def send(self, key: str) -> Any:
        raise NotImplementedError

    def wait(self, handle: Any, timeout: float) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (nothing by default)."""

    def enqueue_timed(self, warm: int, n: int, key: str) -> float:
        for _ in range(warm):
            self.send(key)
        send = self.send
        started = time.perf_counter()
        for _ in range(n):
            send(key)
        return time.perf_counter() - started

    def round_trips(self, warm: int, n: int, key: str, timeout: float,
                    budget: float) -> list[float]:
        samples: list[float] = []
        for i in range(warm + n):
            started = time.perf_counter()
            self.check(self.wait(self.send(key), timeout))
            if i >= warm:
                samples.append((time.perf_counter() - started) * 1000)
                if sum(samples) > budget * 1000:
                    break
        return samples

    def trickle(self, key: str, interval: float, stop: threading.Event) -> int:
        sent = 0
        while not stop.is_set():
            self.send(key)
            sent += 1
            stop.wait(interval)
        return sent

    @staticmethod
    def check(value: Any) -> None:
        if not isinstance(value, int):
            raise RuntimeError(f"the task's result should be the counter, got {value!r}")


class AsyncClient(SyncClient):
    """A client for an asyncio library: the timed loops run inside one coroutine.

    Subclasses implement :meth:`open`, :meth:`asend`, :meth:`await_result` and
    :meth:`aclose`. The trickle thread gets its own event loop and connection.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.open())

    async def open(self) -> None:
        raise NotImplementedError

    async def asend(self, key: str) -> Any:
        raise NotImplementedError

    async def await_result(self, handle: Any, timeout: float) -> Any:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections (nothing by default)."""

    def send(self, key: str) -> Any:
        return self.loop.run_until_complete(self.asend(key))

    def close(self) -> None:
        self.loop.run_until_complete(self.aclose())
        self.loop.close()

    def enqueue_timed(self, warm: int, n: int, key: str) -> float:
        async def run() -> float:
            for _ in range(warm):
                await self.asend(key)
            asend = self.asend
            started = time.perf_counter()
            for _ in range(n):
                await asend(key)
            return time.perf_counter() - started

        return self.loop.run_until_complete(run())

    def round_trips(self, warm: int, n: int, key: str, timeout: float,
                    budget: float) -> list[float]:
        async def run() -> list[float]:
            samples: list[float] = []
            for i in range(warm + n):
                started = time.perf_counter()
                self.check(await self.await_result(await self.asend(key), timeout))
                if i >= warm:
                    samples.append((time.perf_counter() - started) * 1000)
                    if sum(samples) > budget * 1000:
                        break
            return samples

        return self.loop.run_until_complete(run())

    def trickle(self, key: str, interval: float, stop: threading.Event) -> int:
        other = type(self)()  # the main loop belongs to the main thread
        try:
            return SyncClient.trickle(other, key, interval, stop)
        finally:
            other.close()


def lpush_timed(warm: int, n: int, key: str, payload: str) -> float:
    """The reference for enqueue: sequential redis-py ``LPUSH`` of ``payload`` (then deleted)."""
    import redis

    from peerapps import URL

    client = redis.Redis.from_url(URL)
    try:
        for _ in range(warm):
            client.lpush(key, payload)
        lpush = client.lpush
        started = time.perf_counter()
        for _ in range(n):
            lpush(key, payload)
        return time.perf_counter() - started
    finally:
        client.delete(key)
        client.close()


class Server:
    """Reads commands from stdin and answers on ``out``."""

    def __init__(self, client: SyncClient, out: Any) -> None:
        self.client, self.out = client, out
        self.stop = threading.Event()
        self.trickler: threading.Thread | None = None
        self.sent = 0

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op, client = cmd["op"], self.client
        if op == "enqueue":
            return {"seconds": client.enqueue_timed(cmd["warm"], cmd["n"], cmd["key"])}
        if op == "roundtrip":
            return {"ms": client.round_trips(cmd["warm"], cmd["n"], cmd["key"], cmd["timeout"],
                                             cmd["budget"])}
        if op == "lpush":
            return {"seconds": lpush_timed(cmd["warm"], cmd["n"], cmd["key"], cmd["payload"])}
        if op == "trickle":
            self.stop.clear()

            def run() -> None:
                self.sent = client.trickle(cmd["key"], cmd["interval"], self.stop)

            self.trickler = threading.Thread(target=run, daemon=True)
            self.trickler.start()
            return {"ok": True}
        if op == "nudge":
            for _ in range(cmd["n"]):
                client.send(cmd["key"])
            return {"sent": cmd["n"]}
        if op == "stop_trickle":
            self.stop.set()
            if self.trickler is not None:
                self.trickler.join(30)
            return {"sent": self.sent}
        raise ValueError(f"unknown command {op!r}")

    def serve(self, lines: Any) -> None:
        for line in lines:
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            try:
                reply = self.handle(cmd)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            self.out.write(json.dumps(reply) + "\n")
            self.out.flush()


def main() -> None:
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # library chatter must not garble the replies
    module = importlib.import_module(sys.argv[1])
    client = module.Client()
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    try:
        Server(client, out).serve(sys.stdin)
    finally:
        client.close()


if __name__ == "__main__":
    main()
