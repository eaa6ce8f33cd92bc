"""Seed 004 (HackSoft Django styleguide): ``shared_task(bind=True, on_failure=...)``
with ``self.retry(exc=exc, countdown=...)``, against a real worker process.

The seed retries after 5 s; the project below keeps the same code with a
shorter ``RETRY_COUNTDOWN`` and ``max_retries=2`` so the test stays fast.
"""

from __future__ import annotations

import pytest
from workerproc import Project, project_fixture, read_lines, wait_until

PROJ = '''
    from pathlib import Path

    from celeriac import Celery, shared_task
    from celeriac.utils.log import get_task_logger

    app = Celery("proj")
    logger = get_task_logger(__name__)
    HERE = Path(__file__).parent
    RETRY_COUNTDOWN = 0.3


    class ApplicationError(Exception):
        pass


    def note(name, line):
        with open(HERE / name, "a") as fh:
            fh.write(f"{line}\\n")


    def email_send_service(email_id):
        """The service layer: email 1 always fails, email 2 fails once."""
        note("attempts", email_id)
        tries = (HERE / "attempts").read_text().splitlines().count(str(email_id))
        if email_id == 1 or (email_id == 2 and tries < 2):
            raise ApplicationError(f"Cannot send email {email_id}")
        return f"sent {email_id}"


    def email_failed(email_id):
        note("failed", email_id)


    def _email_send_failure(self, exc, task_id, args, kwargs, einfo):
        email_id = args[0]
        note("failure_details", f"{type(exc).__name__}|{task_id}|{self.request.retries}")
        email_failed(email_id)


    @shared_task(bind=True, on_failure=_email_send_failure, max_retries=2)
    def email_send(self, email_id):
        try:
            return email_send_service(email_id)
        except Exception as exc:
            # https://docs.celeryq.dev/en/stable/userguide/tasks.html#retrying
            logger.warning(f"Exception occurred while sending email: {exc}")
            self.retry(exc=exc, countdown=RETRY_COUNTDOWN)
'''


proj = project_fixture(PROJ)


def test_on_failure_runs_once_after_the_retries_are_exhausted(proj: Project) -> None:
    client = proj.client()
    with proj.worker() as worker:
        res = client.email_send.delay(1)
        with pytest.raises(client.ApplicationError, match="Cannot send email 1"):
            res.get(timeout=60)
        wait_until(lambda: read_lines(proj.path / "failed"), what="on_failure")
        worker.wait_for_log("Exception occurred while sending email", count=3)
    assert read_lines(proj.path / "attempts") == ["1", "1", "1"]  # first run + 2 retries
    assert read_lines(proj.path / "failed") == ["1"]
    assert read_lines(proj.path / "failure_details") == [f"ApplicationError|{res.id}|2"]
    assert res.state == "FAILURE"
    assert res.failed() is True
    assert isinstance(res.result, client.ApplicationError)
    assert "ApplicationError" in (res.traceback or "")


def test_a_retry_that_succeeds_never_calls_on_failure(proj: Project) -> None:
    with proj.worker():
        res = proj.client().email_send.delay(2)
        assert res.get(timeout=60) == "sent 2"
    assert read_lines(proj.path / "attempts") == ["2", "2"]
    assert read_lines(proj.path / "failed") == []
    assert res.successful()
