"""celeriac demo: start a worker, send tasks, watch results and progress, stop the worker.

Run from anywhere after ``pip install -e .``::

    python examples/demo/run_demo.py

Nothing else is needed: the broker and the result store are one SQLite file
in a temporary directory (``CELERIAC_SQLITE_PATH``). The worker is a real
``celeriac worker`` process, stopped with SIGTERM (warm shutdown) at the end.
Exits 0 when every task gave the expected result.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WORKER_READY_TIMEOUT = 60.0
TASK_TIMEOUT = 30.0


def say(text: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {text}", flush=True)


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "celeriac", "-A", "tasks", "worker",
               "-P", "threads", "-c", "4", "-l", "INFO"]
    say("starting: " + " ".join(["celeriac", *command[3:]]))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=HERE, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + WORKER_READY_TIMEOUT
    while "ready." not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("worker did not start:\n" + log_path.read_text(errors="replace"))
        time.sleep(0.05)
    say(f"worker ready (pid {proc.pid})")
    return proc


def stop_worker(proc: subprocess.Popen[bytes]) -> int:
    say("stopping the worker with SIGTERM (warm shutdown)")
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def watch_progress(result: Any) -> list[Any]:
    """Print each new PROGRESS meta as the task reports it; return what was seen."""
    seen: list[Any] = []
    deadline = time.monotonic() + TASK_TIMEOUT
    while not result.ready() and time.monotonic() < deadline:
        if result.state == "PROGRESS" and result.info not in seen:
            seen.append(result.info)
            info = result.info
            say(f"build_report progress: {info['done']}/{info['total']}")
        time.sleep(0.05)
    return seen


def run(tasks: Any) -> bool:
    ok = True
    sent_at = time.time()
    reminder = tasks.remind.apply_async(("stand up and stretch",), countdown=2)
    say(f"sent remind with countdown=2 -> {reminder.id} (state {reminder.state})")
    report = tasks.build_report.delay(4)
    say(f"sent build_report(4) -> {report.id}")
    retried = tasks.flaky.delay("payment-api")
    say(f"sent flaky('payment-api') -> {retried.id}")

    total = tasks.add.delay(2, 2).get(timeout=TASK_TIMEOUT)
    say(f"add(2, 2) = {total}")
    ok &= total == 4

    progress = watch_progress(report)
    summary = report.get(timeout=TASK_TIMEOUT)
    say(f"build_report -> {summary!r} ({report.state}, {len(progress)} progress updates seen)")
    ok &= summary == "report with 4 sections" and len(progress) >= 2

    answer = retried.get(timeout=TASK_TIMEOUT)
    say(f"flaky -> {answer!r} (same task id, retried once)")
    ok &= answer == "payment-api answered after 1 retry"

    done = reminder.get(timeout=TASK_TIMEOUT)
    waited = done["ran_at"] - sent_at
    say(f"remind ran {waited:.1f}s after it was sent -> {done['message']!r}")
    ok &= waited >= 2 - 0.05
    return bool(ok)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="celeriac-demo-"))
    for variable in ("CELERIAC_BROKER_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(variable, None)  # the demo is about the embedded default
    os.environ["CELERIAC_SQLITE_PATH"] = str(workdir / "demo.sqlite3")
    say(f"embedded SQLite broker and results: {os.environ['CELERIAC_SQLITE_PATH']}")
    sys.path.insert(0, str(HERE))
    import tasks  # the same module the worker loads with -A tasks

    log_path = workdir / "worker.log"
    worker = start_worker(dict(os.environ, PYTHONUNBUFFERED="1"), log_path)
    try:
        ok = run(tasks)
    finally:
        code = stop_worker(worker)
        tasks.app.close()
    log = log_path.read_text(errors="replace")
    retries = log.count("retry: Retry in")
    say(f"worker exited with code {code}; its log shows {log.count('succeeded in')} "
        f"successes and {retries} retry")
    shutil.rmtree(workdir, ignore_errors=True)
    ok = ok and code == 0
    say("demo finished: all results as expected" if ok else "demo FAILED")
    if not ok:
        print(log, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
