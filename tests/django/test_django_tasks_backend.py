"""The ``django.tasks`` backend end to end: ``@task`` functions enqueued by Django code run on
a celeriac worker, results read back through Django's API. On the Django the test
environment has (5.2 with the ``django_tasks`` backport on Python 3.11), and on Django 6's
own ``django.tasks`` in a Python >= 3.12 environment made for the test; plus the error
when neither framework is installed."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from djangosite import IN_CI, PROJECT, Proc, Site, base_env

ROOT = Path(__file__).resolve().parents[2]
DJANGO6_VENV = ROOT / ".venv-django6"

SCENARIO = """
import json, time
from shop.jobs import add_order, async_count, broken, report
from shop.models import Order
Order.objects.create(name="report-a")
results = {"add": add_order.enqueue("dt-1"), "report": report.enqueue("report-"),
           "broken": broken.enqueue(), "async": async_count.enqueue()}
assert all(r.status == "READY" for r in results.values())
deadline = time.monotonic() + 90
while not all(r.is_finished for r in results.values()):
    assert time.monotonic() < deadline, {k: r.status for k, r in results.items()}
    time.sleep(0.2)
    for r in results.values():
        r.refresh()
again = add_order.get_result(results["add"].id)
out = {k: {"status": str(r.status), "errors": [e.exception_class_path for e in r.errors],
           "workers": r.worker_ids, "started": r.started_at is not None,
           "finished": r.finished_at is not None, "enqueued": r.enqueued_at is not None}
       for k, r in results.items()}
out["add"]["value"] = Order.objects.get(id=results["add"].return_value).status
out["report"]["value"] = results["report"].return_value
out["async"]["value"] = results["async"].return_value
out["again"] = [str(again.status), again.return_value == results["add"].return_value,
                again.args]
out["priority"] = report.priority
print(json.dumps(out))
"""


def run_scenario(site: Site, python: str = sys.executable) -> dict[str, object]:
    """A worker and the scenario, both on ``python``; the scenario's JSON output."""
    worker = Proc(site, [python, "-m", "celeriac", "-A", "proj", "worker", "-P", "threads",
                         "-c", "4", "-Q", "celery,reports", "-l", "INFO"], "tasks-worker",
                  site.env())
    site.procs.append(worker)
    worker.wait_for("ready.")
    done = subprocess.run([python, "-c", "import django\ndjango.setup()\n" + SCENARIO],
                          cwd=PROJECT, env=site.env(), capture_output=True, text=True,
                          timeout=180, check=False)
    worker.stop()
    assert done.returncode == 0, done.stdout + done.stderr + worker.log
    return json.loads(done.stdout.strip().splitlines()[-1])


def check(out: dict[str, object]) -> None:
    add, rep, broken, aio = out["add"], out["report"], out["broken"], out["async"]
    assert isinstance(add, dict) and isinstance(rep, dict)
    assert add["status"] == "SUCCESSFUL" and add["value"] == "from-django-task"
    assert add["started"] and add["finished"] and add["enqueued"] and add["workers"]
    assert rep["status"] == "SUCCESSFUL"
    assert rep["value"] == {"prefix": "report-", "attempt": 1, "orders": 1}
    assert broken == {**broken, "status": "FAILED", "errors": ["builtins.ValueError"]}
    assert isinstance(aio, dict) and aio["status"] == "SUCCESSFUL" and aio["value"] >= 1
    assert out["again"] == ["SUCCESSFUL", True, ["dt-1"]]


def test_django_tasks_run_on_celeriac_workers(sqlite_site: Site) -> None:
    check(run_scenario(sqlite_site))


def test_a_clear_error_without_a_tasks_framework(sqlite_site: Site) -> None:
    done = sqlite_site.python("""
import sys
sys.modules["django.tasks"] = None
sys.modules["django_tasks"] = None
import celeriac.contrib.django.tasks
""", check=False)
    assert done.returncode != 0
    assert "has no django.tasks (added in Django 6.0)" in done.stderr
    assert "pip install django-tasks" in done.stderr


def _python312() -> str | None:
    """A working Python >= 3.12 (pyenv shims may name ones that do not run)."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[2-9]*/bin/python3")))
    candidates = [*reversed(pyenv), *(shutil.which(n) for n in ("python3.13", "python3.12"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; assert sys.version_info >= (3, 12)"],
                               capture_output=True, timeout=60, check=False)
        if probe.returncode == 0:
            return candidate
    return None


def django6_python() -> str:
    """An interpreter with Django 6 and celeriac[django], made once in .venv-django6."""
    python = DJANGO6_VENV / "bin" / "python"
    check_cmd = [str(python), "-c", "import django, django.tasks, celeriac; "
                 "assert django.VERSION >= (6,)"]
    if python.exists() and subprocess.run(check_cmd, capture_output=True).returncode == 0:
        return str(python)
    base = _python312()
    if base is None:
        message = "no Python >= 3.12 to install Django 6 into"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run([base, "-m", "venv", str(DJANGO6_VENV)], check=True, timeout=300)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "-e",
                              f"{ROOT}[django]"], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    assert subprocess.run(check_cmd, capture_output=True).returncode == 0
    return str(python)


def test_django6_tasks_framework_end_to_end(sqlite_site: Site) -> None:
    python = django6_python()
    version = subprocess.run([python, "-c", "import django; print(django.get_version())"],
                             capture_output=True, text=True, env=base_env()).stdout.strip()
    assert version.split(".")[0] >= "6"
    check(run_scenario(sqlite_site, python))
