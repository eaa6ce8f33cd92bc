"""Celery's ``AsyncResult.collect()`` example (the ``trail`` option) on a real worker: a
task returning a group's result, each member returning another task's result. Returning
a result used to fail the task ("GroupResult is not JSON serializable"), a group sent by
a task was missing from its ``children``, and ``collect``/``iterdeps``/``graph`` did not
exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from workerproc import project

from celeriac.exceptions import IncompleteStream
from celeriac.result import ResultBase

PROJ = '''
    from celeriac import Celery, group

    app = Celery("proj")


    @app.task(trail=True)
    def A(how_many):
        return group(B.s(i) for i in range(how_many))()


    @app.task(trail=True)
    def B(i):
        return pow2.delay(i)


    @app.task(trail=True)
    def pow2(i):
        return i ** 2
'''


def test_collect_follows_the_results_a_task_returned(tmp_path: Path) -> None:
    with project(tmp_path, PROJ) as proj, proj.worker(concurrency=4):
        client = proj.client()
        result = client.A.delay(10)
        collected = list(result.collect(timeout=30))
        assert collected[0][0] == result
        values = [v for _, v in collected if not isinstance(v, (ResultBase, list, tuple))]
        assert sorted(values) == [i ** 2 for i in range(10)]
        [group_result] = result.children
        assert len(group_result.results) == 10
        # the stored value is the group's tuple form (as JSON)
        assert result.get(timeout=10) == json.loads(json.dumps(group_result.as_tuple()))
        with pytest.raises(IncompleteStream):  # a result not ready ends the stream
            list(client.app.AsyncResult("never-sent").iterdeps())
        assert [n for _, n in client.app.AsyncResult("never-sent").iterdeps(
            intermediate=True)] == ["never-sent"]
        graph = repr(result.graph)
        assert graph.splitlines()[0] == f"{result.id}(21)"  # 1 group + 10 B + 10 pow2
