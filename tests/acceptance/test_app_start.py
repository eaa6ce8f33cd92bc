"""Celery's "Next steps" module layout ends with ``if __name__ == '__main__': app.start()``:
the module is then the command line, with this program's arguments (as Celery). It
used to start a worker whatever the arguments, so ``python proj.py --help`` never
returned. ``app.worker_main()`` is the same with the ``worker`` command required."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from workerproc import Project, WorkerProcess, project

PROJ = '''
    from celeriac import Celery

    app = Celery("proj")
    app.conf.update(result_expires=3600)


    @app.task
    def add(x, y):
        return x + y


    if __name__ == "__main__":
        app.start()
'''

#: A second entry point, Celery's ``app.worker_main()`` with this program's arguments.
WORKER_MAIN = '''
from proj import app

if __name__ == "__main__":
    app.worker_main()
'''


class WorkerMainProcess(WorkerProcess):
    """``python worker_main.py ARGS``: a worker started by ``app.worker_main()``."""

    @property
    def command(self) -> list[str]:
        return [sys.executable, "worker_main.py", *self.args]


def run(proj: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "proj.py", *args], cwd=proj.path, env=proj.env(),
                          capture_output=True, text=True, timeout=60, check=False)


def test_app_start_runs_the_command_line_with_the_program_arguments(tmp_path: Path) -> None:
    with project(tmp_path, PROJ) as proj:
        shown = run(proj, "--help")
        assert shown.returncode == 0, shown.stderr
        assert "Usage:" in shown.stdout and "worker" in shown.stdout
        assert "ready." not in shown.stdout + shown.stderr
        sent = proj.cli("call", "proj.add", "--args", "[2, 2]")
        assert sent.returncode == 0, sent.stderr
        purged = run(proj, "purge", "-f")
        assert purged.returncode == 0, purged.stderr
        assert "Purged 1 message" in purged.stdout


def test_worker_main_starts_a_worker_that_stops_cleanly(tmp_path: Path) -> None:
    with project(tmp_path, PROJ) as proj:
        (proj.path / "worker_main.py").write_text(WORKER_MAIN)
        refused = subprocess.run([sys.executable, "worker_main.py", "purge", "-f"],
                                 cwd=proj.path, env=proj.env(), capture_output=True,
                                 text=True, timeout=60, check=False)
        assert refused.returncode == 1
        assert "ValueError: The worker sub-command must be specified in argv." in refused.stderr
        worker = WorkerMainProcess(proj, ("worker", "-P", "solo", "-l", "INFO"))
        try:
            worker.start()
            assert proj.client().add.delay(2, 3).get(timeout=60) == 5
        finally:
            code = worker.stop()
        assert code == 0, worker.log
