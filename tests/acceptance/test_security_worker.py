"""Refusals on a real worker (issue 19, "done when"): a forged header, a replay, an
oversized, a tampered and an unsigned message are each dead-lettered with the reason,
on SQLite, Redis and PostgreSQL (whose replay guards differ); nothing of them runs and
the worker stays up.

The worker is the real ``celeriac worker`` command in a subprocess, configured for
sealed messages with the TEST ONLY key and certificate of tests/fixtures; the test
process is the producer (and the attacker, who writes straight to the broker).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from workerproc import Project, project, read_lines, wait_until

from celeriac.messages import task_message
from celeriac.security.setup import security_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

SOURCE = """
from pathlib import Path
from celeriac import Celery

app = Celery("proj")
app.conf.update(
    security_seal=True,
    security_key={key!r},
    security_certificate={cert!r},
    security_cert_store={cert!r},
    task_message_max_size=20_000,
    broker_transport_options={{"global_keyprefix": {prefix!r}}},
    result_backend_transport_options={{"global_keyprefix": {prefix!r}}},
)
RUNS = Path(__file__).with_name("runs.txt")


@app.task(name="proj.add")
def add(x, y):
    with RUNS.open("a") as f:
        f.write(f"add {{x}} {{y}}\\n")
    return x + y


@app.task(name="proj.wipe")
def wipe(x, y):
    with RUNS.open("a") as f:
        f.write(f"wipe {{x}} {{y}}\\n")
"""


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def proj(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    prefix = ""
    broker_url = None
    if request.param == "redis":
        broker_url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("key_prefix")
    elif request.param == "postgres":
        broker_url = request.getfixturevalue("postgres_url")
    source = SOURCE.format(key=str(FIXTURES / "test-signing-key.pem"),
                           cert=str(FIXTURES / "test-signing-cert.pem"), prefix=prefix)
    with project(tmp_path, source, broker_url=broker_url) as p:
        yield p


def dead_reasons(app: Any, count: int) -> list[str]:
    letters = wait_until(lambda: (lambda d: d if len(d) >= count else None)(
        app.broker.dead_letters()), timeout=30, what=f"{count} dead letters")
    return sorted(letter.reason.split(":", 1)[0] for letter in letters)


def test_refused_messages_are_dead_lettered_on_a_real_worker(proj: Project) -> None:
    client = proj.client()
    app = client.app
    sealer = security_of(app).sealer
    assert sealer is not None
    runs = proj.path / "runs.txt"
    with proj.worker() as worker:
        assert client.add.delay(2, 3).get(timeout=30) == 5  # sealed by the producer

        # a forged header: the signed add(7, 7) relabelled as wipe
        sealed = sealer.seal(task_message("proj.add", "forged-1", (7, 7), {}))
        app.broker.publish(sealed.with_headers(task="proj.wipe"), "celery")
        # a tampered body
        sealed = sealer.seal(task_message("proj.add", "tampered-1", (1, 1), {}))
        app.broker.publish(replace(sealed, body=sealed.body.replace(b"[1, 1]", b"[1, 9]")),
                           "celery")
        # an unsigned message
        app.broker.publish(task_message("proj.add", "plain-1", (4, 4), {}), "celery")
        # oversized (written past the producer's own check)
        app.broker.publish(sealer.seal(task_message("proj.add", "big-1", ("x" * 30_000, ""),
                                                    {})), "celery")
        # a replay: run once, then pushed again
        once = sealer.seal(task_message("proj.add", "replay-1", (5, 5), {}))
        app.broker.publish(once, "celery")
        assert app.AsyncResult("replay-1").get(timeout=30) == 10
        app.broker.publish(once, "celery")

        assert dead_reasons(app, 5) == ["bad_signature", "bad_signature", "oversized",
                                        "replayed", "unsigned"]
        assert worker.alive()
        assert client.add.delay(1, 2).get(timeout=30) == 3  # still serving
    assert read_lines(runs) == ["add 2 3", "add 5 5", "add 1 2"]
