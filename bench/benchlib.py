"""Helpers the benchmarks share: waiting, worker processes, process-tree memory and CPU.

Memory and CPU are read from ``/proc`` (Linux): a worker's *tree* is the
processes it was started as plus all their descendants (prefork children,
forked work horses). Per tree:

* RSS and PSS are summed from ``/proc/<pid>/smaps_rollup``. PSS divides each
  shared page among the processes that map it, so a prefork pool whose
  children share the parent's pages is not counted twice (RSS is);
* CPU time is ``utime + stime + cutime + cstime`` of every live process in
  the tree (``/proc/<pid>/stat``): a live process's own time plus the time of
  the children it already reaped, so short-lived work horses are counted
  once, by their parent.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def wait_for(check: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.02) -> Any:
    """Call ``check`` until it returns something true; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return value


def service_up(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- process trees ------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(roots: Iterable[int]) -> list[int]:
    """``roots`` and every live descendant, each once."""
    children, seen, todo = _children(), [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, ()))
    return seen


def parse_smaps_rollup(text: str) -> dict[str, int]:
    """``{"Rss": kib, "Pss": kib, ...}`` from the text of ``/proc/<pid>/smaps_rollup``."""
    fields = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name.strip()] = int(parts[0])
    return fields


def parse_stat_cpu(text: str) -> float:
    """``utime + stime + cutime + cstime`` in seconds from ``/proc/<pid>/stat`` text."""
    fields = text.rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def tree_memory_kib(roots: Iterable[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over the tree of ``roots``."""
    rss = pss = 0
    for pid in process_tree(roots):
        try:
            fields = parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
        except OSError:
            continue
        rss += fields.get("Rss", 0)
        pss += fields.get("Pss", 0)
    return rss, pss


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds used so far by these processes and the children they reaped."""
    total = 0.0
    for pid in pids:
        try:
            total += parse_stat_cpu(Path(f"/proc/{pid}/stat").read_text())
        except OSError:
            continue
    return total


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds used so far by the tree of ``roots`` (see the module docstring)."""
    return cpu_seconds(process_tree(roots))


class MemorySampler(threading.Thread):
    """Samples a tree's RSS and PSS every ``interval`` seconds; keeps the peaks."""

    def __init__(self, roots: list[int], interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = roots, interval
        self.peak_rss_kib = self.peak_pss_kib = 0
        self.done = threading.Event()

    def sample(self) -> None:
        rss, pss = tree_memory_kib(self.roots)
        self.peak_rss_kib = max(self.peak_rss_kib, rss)
        self.peak_pss_kib = max(self.peak_pss_kib, pss)

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sample()


# -- starting and stopping processes -----------------------------------------------------
def start_process(argv: list[str], cwd: Path, env: dict[str, str], log: Path,
                  **kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` with stdout and stderr appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(argv, cwd=cwd, env=env, stdout=kwargs.pop("stdout", out),
                                stderr=out, **kwargs)


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def stop_processes(procs: Iterable[subprocess.Popen[Any]], sig: int = signal.SIGTERM,
                   grace: float = 30.0) -> None:
    """Ask processes we started to stop (``sig``, once each), wait, then kill leftovers.

    Only these processes and their own descendants (noted before the signal,
    each with its start time so a reused PID is never hit) are signalled, by PID.
    A process still running ``grace`` seconds later, or a descendant left
    behind by its parent, gets SIGKILL.
    """
    procs = [proc for proc in procs if proc.poll() is None]
    tree = [(pid, _start_time(pid)) for pid in process_tree(p.pid for p in procs)]
    for proc in procs:
        proc.send_signal(sig)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for pid, started in tree:
        if started is not None and _start_time(pid) == started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for proc in procs:
        proc.wait(10)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 grace: float = 30.0) -> None:
    """:func:`stop_processes` for one process."""
    stop_processes([proc], sig, grace)


# -- reports -------------------------------------------------------------------------
def replace_section(text: str, name: str, body: str, after_title: bool = True) -> str:
    """Put ``body`` between ``<!-- name: begin -->`` and ``<!-- name: end -->`` in
    ``text``, replacing what was there; a missing section goes after the first
    line (the title) or at the end. Everything outside the markers is kept."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{body.strip()}\n{end}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        return head + block + ("\n" + tail if tail else "")
    if after_title and text.startswith("# "):
        title, _, rest = text.partition("\n")
        return f"{title}\n\n{block}\n{rest.lstrip(chr(10))}"
    return (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
