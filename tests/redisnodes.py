"""Private Redis servers for tests: a Redis Cluster (3 masters + 3 replicas) and a
Sentinel setup (1 master, 1 replica, sentinels), on free loopback ports in a temp dir.

The shared Redis on 6379 is never touched: outage and failover tests kill these
servers, by the PIDs started here and no other. ``redis-server`` must be on the PATH;
without it the fixtures skip locally and fail under CI=true (:func:`require_binary`).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from celeryproc import wait_until

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
HOST = "127.0.0.1"


def require_binary(name: str) -> str:
    """The path of ``name``; skip when it is missing, fail instead under CI=true."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed"
    if IN_CI:
        pytest.fail(message + " (CI=true: services are required)", pytrace=False)
    pytest.skip(message)
    raise AssertionError  # pragma: no cover - pytest.skip raises


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, bus: bool = False) -> list[int]:
    """``count`` free loopback ports (each with ``port + 10000`` free too when ``bus``),
    below the kernel's ephemeral range (32768 up), so no client socket takes one between
    this check and the server's bind."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(11000, 22700)
        if port in ports or not _port_free(port) or (bus and not _port_free(port + 10000)):
            continue
        ports.append(port)
    return ports


def ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def cli(port: int, *args: str, timeout: float = 30.0) -> str:
    done = subprocess.run([require_binary("redis-cli"), "-h", HOST, "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"redis-cli {' '.join(args)}: {done.stdout} {done.stderr}")
    return done.stdout


@dataclass
class Servers:
    """Servers this module started (by port), killed by PID and removed at :meth:`stop`."""

    root: Path
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, port: int, *args: str, config: str | None = None) -> None:
        workdir = self.root / str(port)
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = [require_binary("redis-server"), *([config] if config else []),
               "--port", str(port), "--bind", HOST, "--dir", str(workdir), "--save", "",
               "--appendonly", "no", "--logfile", str(workdir / "redis.log"), *args]
        self.procs[port] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
        proc = self.procs[port]

        def up() -> bool:
            if proc.poll() is not None:
                log = workdir / "redis.log"
                tail = log.read_text()[-600:] if log.exists() else ""
                raise RuntimeError(f"redis-server on {port} exited ({proc.returncode}): {tail}")
            return ping(port)

        wait_until(up, 20, what=f"redis-server on {port}")

    def kill(self, port: int) -> None:
        """``kill -9`` the server on ``port`` (one this module started)."""
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class Cluster(Servers):
    """A Redis Cluster of 3 masters, each with one replica."""

    ports: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in self.ports[:3])

    def nodes(self) -> list[dict[str, str]]:
        rows = []
        for line in cli(self.alive_port(), "CLUSTER", "NODES").splitlines():
            parts = line.split()
            rows.append({"id": parts[0], "addr": parts[1].split("@")[0], "flags": parts[2],
                         "slots": " ".join(parts[8:])})
        return rows

    def alive_port(self) -> int:
        return next(p for p in self.ports if p in self.procs and ping(p))

    def master_of_key(self, key: str) -> int:
        slot = int(cli(self.alive_port(), "CLUSTER", "KEYSLOT", key).strip())
        for row in self.nodes():
            if "master" not in row["flags"] or "fail" in row["flags"]:
                continue
            for span in row["slots"].split():
                if span.startswith("["):
                    continue
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(row["addr"].rsplit(":", 1)[1])
        raise RuntimeError(f"no master serves slot {slot}")

    def healthy(self) -> bool:
        try:
            info = cli(self.alive_port(), "CLUSTER", "INFO")
        except (RuntimeError, StopIteration):
            return False
        return "cluster_state:ok" in info

    def masters(self) -> list[int]:
        return [int(r["addr"].rsplit(":", 1)[1]) for r in self.nodes()
                if "master" in r["flags"] and "fail" not in r["flags"] and r["slots"]]


def start_cluster(root: Path, replicas: int = 1) -> Cluster:
    """3 masters with ``replicas`` replicas each (``--cluster-enabled yes``), joined with
    ``redis-cli --cluster create``."""
    ports = free_ports(3 * (1 + replicas), bus=True)
    cluster = Cluster(root=root, ports=ports)
    try:
        for port in ports:
            cluster.start(port, "--cluster-enabled", "yes", "--cluster-config-file",
                          f"nodes-{port}.conf", "--cluster-node-timeout", "2000",
                          "--cluster-replica-validity-factor", "0")
        cli(ports[0], "--cluster", "create", *[f"{HOST}:{p}" for p in ports],
            "--cluster-replicas", str(replicas), "--cluster-yes", timeout=60)
        wait_until(cluster.healthy, 30, what="the cluster to be ok", interval=0.2)
        wait_until(lambda: all(_replica_synced(p) for p in ports), 30, what="replicas in sync",
                   interval=0.2)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _replica_synced(port: int) -> bool:
    info = cli(port, "INFO", "replication")
    if "role:master" in info:
        return "connected_slaves:0" not in info
    return "master_link_status:up" in info


@dataclass
class SentinelSetup(Servers):
    """One master, one replica and sentinels watching them as ``mymaster``."""

    master_port: int = 0
    replica_port: int = 0
    more_replicas: list[int] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    master_name: str = "mymaster"

    @property
    def url(self) -> str:
        return ";".join(f"sentinel://{HOST}:{p}" for p in self.sentinel_ports)

    def current_master(self) -> int:
        reply = cli(self.sentinel_ports[0], "SENTINEL", "get-master-addr-by-name",
                    self.master_name).split()
        return int(reply[1])


def start_sentinels(root: Path, count: int = 1, replicas: int = 1) -> SentinelSetup:
    """A master, ``replicas`` replicas and ``count`` sentinels (none: just replication)."""
    master, replica, *rest = free_ports(1 + replicas + count)
    more, sentinels = rest[:replicas - 1], rest[replicas - 1:]
    setup = SentinelSetup(root=root, master_port=master, replica_port=replica,
                          more_replicas=more, sentinel_ports=sentinels)
    try:
        setup.start(master)
        for port in (replica, *more):
            setup.start(port, "--replicaof", HOST, str(master))
            wait_until(lambda p=port: _replica_synced(p), 30, what="a replica in sync",
                       interval=0.2)
        quorum = 1 if count < 3 else 2
        for port in sentinels:
            conf = root / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind {HOST}\n"
                f"sentinel monitor {setup.master_name} {HOST} {master} {quorum}\n"
                f"sentinel down-after-milliseconds {setup.master_name} 1000\n"
                f"sentinel failover-timeout {setup.master_name} 5000\n"
                f"sentinel parallel-syncs {setup.master_name} 1\n")
            setup.start(port, "--sentinel", config=str(conf))
    except BaseException:
        setup.stop()
        raise
    return setup


def delete_keys(ports: Iterable[int], pattern: str) -> None:
    """Delete keys matching ``pattern`` on every master among ``ports`` (test cleanup):
    each master holds its own keys, so a plain connection to it deletes them."""
    import redis

    for port in ports:
        client = redis.Redis(host=HOST, port=port)
        try:
            if client.info("replication").get("role") != "master":
                continue
            for key in list(client.scan_iter(match=pattern, count=1000)):
                client.delete(key)
        except redis.RedisError:
            continue
        finally:
            client.close()
