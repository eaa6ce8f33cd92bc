"""Private broker servers for the reliability suite: started, killed and restarted by PID.

Every scenario that touches a server runs against one the suite started itself,
on a free loopback port with its data in a temporary directory, never the
shared servers on the standard ports (other people use them):

* :class:`RedisServer`: ``redis-server`` with AOF on and ``appendfsync always``
  (an acknowledged write survives a kill -9 of the server);
* :class:`PostgresServer`: ``initdb`` + ``pg_ctl`` from ``/usr/lib/postgresql/*/bin``,
  trust authentication, database ``test``; a crash is ``pg_ctl stop -m immediate``
  (the postmaster and every backend quit at once, no checkpoint: crash recovery
  on the next start);
* :class:`RabbitServer`: a RabbitMQ node of its own (``RABBITMQ_NODENAME``,
  ``RABBITMQ_NODE_PORT``, ``RABBITMQ_DIST_PORT``, ``RABBITMQ_MNESIA_BASE``,
  ``RABBITMQ_LOG_BASE``, no plugins, so no management port), killed with
  ``SIGKILL`` on its Erlang VM;
* :class:`SQLiteStore`: no server at all (a file); it has no outage to simulate;
* :class:`ClusterServer` and :class:`SentinelServer`: a Redis Cluster of 3 masters
  with 2 replicas each, or a master with 2 replicas and one sentinel
  (``tests/redisnodes.py``); they are not restarted but failed over
  (``fail_over()``: the master holding the queue is killed and stays down).

``crash()`` kills the server without letting it save anything; ``start()``
brings it back on the same port and data directory. ``close()`` kills it and
deletes the directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
import redisnodes


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's pick for port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _kill_group(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


class Server:
    """What every private server offers to the scenarios."""

    kind = "none"
    #: scenarios that restart the broker can run on it
    restartable = True

    #: settings every project on this server needs (Sentinel's master name)
    conf: dict[str, Any] = {}

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"reliability-{self.kind}-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        raise NotImplementedError

    def crash(self) -> None:
        """Kill the server at once (kill -9): nothing is flushed or saved."""
        _kill_group(self.proc)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}: "
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.kind} not up after {timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        logs = sorted(self.dir.glob("**/*.log"))
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in logs[-2:])

    def close(self) -> None:
        self.crash()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.dir / f"{self.kind}.log", "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, cwd=self.dir, start_new_session=True)


class RedisServer(Server):
    """``redis-server`` with AOF (``appendfsync always``) in a temporary directory."""

    kind = "redis"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        self._spawn(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                     "--save", "", "--daemonize", "no", "--protected-mode", "no",
                     "--logfile", str(self.dir / "redis.log")])
        self.wait_up(timeout)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no {name} under /usr/lib/postgresql/*/bin")
    return found[-1]


class PostgresServer(Server):
    """A private PostgreSQL cluster (initdb once, pg_ctl start/stop -m immediate)."""

    kind = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.data = self.dir / "data"
        self._user_env = dict(os.environ)
        self._as_postgres = os.geteuid() == 0  # initdb refuses root: run as 'postgres'
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                   "--no-sync", "-E", "UTF8"])
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.dir}'\nmax_connections = 60\n"
                       "fsync = on\nlogging_collector = off\n")

    def _cmd(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else args

    def _run(self, args: list[str]) -> None:
        subprocess.run(self._cmd(args), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, cwd=self.dir)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/test"

    def start(self, timeout: float = 60.0) -> None:
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "pg.log"),
                   "-w", "-t", str(int(timeout)), "start"])
        if not getattr(self, "_created", False):
            self._run([_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                       "-U", "postgres", "test"])
            self._created = True
        self.proc = None  # pg_ctl daemonises: the postmaster's pid is in postmaster.pid

    def alive(self) -> bool:
        return (self.data / "postmaster.pid").exists() and port_open(self.port)

    def crash(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._cmd([_pg_bin("pg_ctl"), "-D", str(self.data), "-m",
                                      "immediate", "-w", "stop"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)


class RabbitServer(Server):
    """A private RabbitMQ node: its own name, ports, database and logs; no plugins."""

    kind = "rabbitmq"
    SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    def __init__(self) -> None:
        super().__init__()
        self.dist_port = free_port()
        self.node = f"reliability{self.port}@localhost"
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        (self.dir / "enabled_plugins").write_text("[].\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(RABBITMQ_NODENAME=self.node, RABBITMQ_NODE_PORT=str(self.port),
                   RABBITMQ_DIST_PORT=str(self.dist_port),
                   RABBITMQ_MNESIA_BASE=str(self.dir / "mnesia"),
                   RABBITMQ_LOG_BASE=str(self.dir / "log"),
                   RABBITMQ_CONFIG_FILE=str(self.dir / "rabbitmq.conf"),
                   RABBITMQ_ENABLED_PLUGINS_FILE=str(self.dir / "enabled_plugins"),
                   RABBITMQ_PID_FILE=str(self.dir / "rabbit.pid"),
                   RABBITMQ_NODE_IP_ADDRESS="127.0.0.1")
        return env

    def start(self, timeout: float = 90.0) -> None:
        self._spawn([self.SERVER], env=self.env())
        self.wait_up(timeout)


class SQLiteStore(Server):
    """The embedded broker: a file in a temporary directory, no server to restart."""

    kind = "sqlite"
    restartable = False

    @property
    def url(self) -> str:
        return f"sqlite:///{self.dir / 'broker.sqlite3'}"

    def start(self, timeout: float = 0.0) -> None:
        """Nothing to start."""

    def alive(self) -> bool:
        return True


class _Replicated(Server):
    """A replicated Redis whose master can be failed over (never restarted)."""

    restartable = False
    #: the queue whose master :meth:`fail_over` kills
    queue = "celery"
    nodes: Any = None

    def crash(self) -> None:
        if self.nodes is not None:
            self.nodes.stop()  # kills, by PID, every server it started
            self.nodes = None

    def alive(self) -> bool:
        return self.nodes is not None

    def fail_over(self) -> tuple[float, float]:
        """Kill the master serving :attr:`queue`; return ``(killed_at, promoted_at)``."""
        raise NotImplementedError


class ClusterServer(_Replicated):
    """A Redis Cluster: 3 masters with 2 replicas each."""

    kind = "redis-cluster"

    @property
    def url(self) -> str:
        return str(self.nodes.url)

    def start(self, timeout: float = 60.0) -> None:
        self.nodes = redisnodes.start_cluster(self.dir, replicas=2)

    def fail_over(self) -> tuple[float, float]:
        victim = self.nodes.master_of_key(self.queue)
        killed_at = time.time()
        self.nodes.kill(victim)
        redisnodes.wait_until(lambda: self._moved(victim), 60, "a replica promoted",
                              interval=0.1)
        return killed_at, time.time()

    def _moved(self, victim: int) -> bool:
        try:
            return self.nodes.healthy() and self.nodes.master_of_key(self.queue) != victim
        except (RuntimeError, StopIteration):
            return False


class SentinelServer(_Replicated):
    """A master with 2 replicas and one sentinel (``master_name`` ``mymaster``)."""

    kind = "redis-sentinel"
    conf = {"broker_transport_options": {"master_name": "mymaster"},
            "result_backend_transport_options": {"master_name": "mymaster"}}

    @property
    def url(self) -> str:
        return str(self.nodes.url)

    def start(self, timeout: float = 60.0) -> None:
        self.nodes = redisnodes.start_sentinels(self.dir, count=1, replicas=2)

    def fail_over(self) -> tuple[float, float]:
        victim = self.nodes.master_port
        killed_at = time.time()
        self.nodes.kill(victim)
        redisnodes.wait_until(lambda: self._moved(victim), 60, "a replica promoted",
                              interval=0.1)
        return killed_at, time.time()

    def _moved(self, victim: int) -> bool:
        try:
            return self.nodes.current_master() != victim
        except (RuntimeError, IndexError):
            return False


SERVERS: dict[str, type[Server]] = {
    "sqlite": SQLiteStore, "redis": RedisServer, "postgres": PostgresServer,
    "amqp": RabbitServer, "redis-cluster": ClusterServer, "redis-sentinel": SentinelServer,
}


def outage(server: Server, seconds: float) -> tuple[float, float]:
    """Crash ``server``, keep it down ``seconds``, start it again.

    Returns ``(down_at, up_at)`` in epoch seconds: from the kill to the moment
    its port accepts connections again (a RabbitMQ node takes a few seconds to
    boot, so its outage is longer than ``seconds``).
    """
    down_at = time.time()
    server.crash()
    time.sleep(seconds)
    server.start()
    return down_at, time.time()
