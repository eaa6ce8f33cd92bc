"""Reading results never raises raw decoding errors (issue 21, point 5), and the REVOKED rule.

A malformed stored meta (not JSON, not an object, a field of the wrong type)
becomes :class:`celeriac.exceptions.ResultDecodeError` naming the task, from
``.state``, ``.get()``, ``.result``, ``.info`` and ``.traceback``, on every
result store. (The REVOKED rule of the stores is in the contract suite.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from celeriac import Celery
from celeriac.exceptions import BackendGetMetaError, ResultDecodeError

MALFORMED = [
    ("not JSON", "{nope"),
    ("not an object", "[1, 2]"),
    ("no status", '{"result": 1}'),
    ("status not text", '{"status": 5, "result": 1}'),
    ("traceback not text", '{"status": "FAILURE", "result": null, "traceback": 5}'),
    ("children not a list", '{"status": "SUCCESS", "result": 1, "children": 5}'),
    ("bad date_done", '{"status": "SUCCESS", "result": 1, "date_done": "yesterday"}'),
]


@pytest.fixture(params=["memory", "sqlite", "redis"])
def app(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Celery]:
    if request.param == "memory":
        backend = "memory://"
    elif request.param == "sqlite":
        backend = f"sqlite:///{tmp_path}/results.sqlite3"
    else:
        backend = request.getfixturevalue("redis_url")
    app = Celery("reading", broker="memory://", backend=backend, set_as_current=False)
    if request.param == "redis":
        prefix = request.getfixturevalue("key_prefix")
        app.conf.result_backend_transport_options = {"global_keyprefix": prefix}
    yield app
    app.close()


@pytest.mark.parametrize(("what", "raw"), MALFORMED, ids=[w for w, _ in MALFORMED])
def test_malformed_meta_is_a_clear_error_naming_the_task(app: Celery, what: str,
                                                         raw: str) -> None:
    task_id = "a-task-id"
    backend = app.backend
    backend._set_raw(backend.task_key(task_id), raw, None)
    for read in (lambda r: r.state, lambda r: r.get(timeout=1), lambda r: r.result,
                 lambda r: r.info, lambda r: r.traceback):
        result = app.AsyncResult(task_id)
        with pytest.raises(ResultDecodeError, match=f"task {task_id}") as raised:
            read(result)
        assert raised.value.task_id == task_id
        assert isinstance(raised.value, BackendGetMetaError)


def test_a_good_meta_next_to_a_malformed_one_in_a_group_read(app: Celery) -> None:
    backend = app.backend
    backend.set("good", {"status": "SUCCESS", "result": 1})
    backend._set_raw(backend.task_key("bad"), "{nope", None)
    with pytest.raises(ResultDecodeError, match="task bad"):
        backend.get_many(["good", "bad"])
    assert backend.get_many(["good"])["good"]["result"] == 1
