"""Celery's ``celery.contrib.abortable`` example on a real worker: the producer aborts a
long task through the result ``delay()`` returned; the task sees ``is_aborted()`` and
returns early. (``from celeriac.contrib.abortable import ...`` was a ModuleNotFoundError.)"""

from __future__ import annotations

import time
from pathlib import Path

from workerproc import project, read_lines

PROJ = '''
    import time
    from pathlib import Path

    from celeriac import Celery
    from celeriac.contrib.abortable import AbortableTask

    app = Celery("proj")
    STEPS = Path(__file__).parent / "steps"


    @app.task(bind=True, base=AbortableTask)
    def long_running_task(self):
        for i in range(600):
            if not i % 5 and self.is_aborted():
                return "aborted"
            with open(STEPS, "a") as fh:
                fh.write(f"{i}\\n")
            time.sleep(0.05)
        return "complete"
'''


def test_abort_stops_a_running_task(tmp_path: Path) -> None:
    from celeriac.contrib.abortable import ABORTED, AbortableAsyncResult

    with project(tmp_path, PROJ) as proj, proj.worker(concurrency=1):
        result = proj.client().long_running_task.delay()
        assert isinstance(result, AbortableAsyncResult)
        deadline = time.monotonic() + 30
        while not read_lines(tmp_path / "steps") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not result.is_aborted()
        result.abort()
        assert result.state == ABORTED and result.is_aborted() and not result.ready()
        assert result.get(timeout=30) == "aborted"
        assert len(read_lines(tmp_path / "steps")) < 600
