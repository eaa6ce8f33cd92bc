"""``task_annotations`` read as Celery 5.7 reads it: each case is applied by real Celery and
by celeriac to the same two tasks, and the attributes they end up with must match."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celery
from celeriac.exceptions import ImproperlyConfigured

celery = pytest.importorskip("celery")

#: The attributes compared (every case sets some of them).
ATTRIBUTES = ("rate_limit", "time_limit", "soft_time_limit", "default_retry_delay",
              "max_retries")

#: A module the string cases name (Celery instantiates what a path names).
SOURCES = '''
    CREATED = []


    class SlowAdd:
        def __init__(self):
            CREATED.append(self)

        def annotate(self, task):
            return {"time_limit": 30} if task.name == "anno.add" else None


    class Everyone:
        def annotate_any(self):
            return {"default_retry_delay": 7}


    def make_slow_add():
        return SlowAdd()


    def factory():
        return {"anno.mul": {"rate_limit": "2/s"}}


    MAPPING = {"anno.add": {"max_retries": 9}}
'''


class Shadow:
    """Answers ``{}`` for ``anno.add``: not None, so later sources are not asked."""

    def annotate(self, task: Any) -> dict[str, Any] | None:
        return {} if task.name == "anno.add" else None


class Nothing:
    def annotate(self, task: Any) -> None:
        return None

    def annotate_any(self) -> None:
        return None


class Both:
    def annotate(self, task: Any) -> dict[str, Any]:
        return {"soft_time_limit": 5, "rate_limit": "1/s"}

    def annotate_any(self) -> dict[str, Any]:
        return {"rate_limit": "3/s"}


class Pairs:
    def annotate_any(self) -> list[tuple[str, Any]]:
        return [("rate_limit", "3/s")]  # Celery's MapAnnotation takes pairs, not objects


CASES: dict[str, Any] = {
    "one mapping": {"anno.add": {"rate_limit": "10/m"}, "*": {"max_retries": 1}},
    "pairs in a mapping": {"anno.add": [("rate_limit", "10/m")]},
    "'*' wins over the name": {"anno.add": {"rate_limit": "10/m"}, "*": {"rate_limit": "5/m"}},
    "empty source is skipped": [{}, {"anno.add": {"rate_limit": "10/m"}}],
    "empty answer shadows": [{"anno.add": {}}, {"anno.add": {"rate_limit": "10/m"},
                                                "*": {"time_limit": 4}}],
    "empty '*' shadows": [{"*": {}}, {"*": {"time_limit": 4}}],
    "first match by name": [{"anno.mul": {"rate_limit": "1/s"}},
                            {"anno.add": {"rate_limit": "2/s"}, "anno.mul": {"time_limit": 3}}],
    "'*' from a later source": ({"anno.add": {"rate_limit": "2/s"}}, {"*": {"time_limit": 3}}),
    "object answering {}": [Shadow(), {"anno.add": {"rate_limit": "2/s"}}],
    "object answering None": [Nothing(), {"anno.add": {"rate_limit": "2/s"}, "*": {"x": 1}}],
    "object with both methods": [Both(), {"*": {"time_limit": 1}}],
    "single object": Both(),
    "path to a class": ["anno_sources.SlowAdd", {"anno.add": {"time_limit": 99}}],
    "path with a colon": ["anno_sources:Everyone"],
    "path to a factory of annotators": ["anno_sources.make_slow_add"],
    "single path": "anno_sources.SlowAdd",
}


@pytest.fixture
def sources_module(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "anno_sources.py").write_text(textwrap.dedent(SOURCES))
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("anno_sources", None)


def annotated(app: Any) -> dict[str, dict[str, Any]]:
    @app.task(name="anno.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="anno.mul", shared=False)
    def mul(x: int, y: int) -> int:
        return x * y

    app.finalize()
    return {name: {attr: getattr(app.tasks[name], attr, None) for attr in (*ATTRIBUTES, "x")}
            for name in ("anno.add", "anno.mul")}


@pytest.mark.usefixtures("sources_module")
@pytest.mark.parametrize("case", list(CASES))
def test_annotations_are_applied_as_celery_applies_them(case: str) -> None:
    theirs = celery.Celery("anno", broker="memory://", set_as_current=False)
    theirs.conf.task_annotations = CASES[case]
    ours = Celery("anno", broker="memory://", set_as_current=False)
    ours.conf.task_annotations = CASES[case]
    assert annotated(ours) == annotated(theirs)


@pytest.mark.usefixtures("sources_module")
def test_a_path_to_a_mapping_is_used_where_celery_ignores_or_refuses_it() -> None:
    """Celery skips a factory's plain dict (it has no ``annotate``) and fails calling a
    dict a path names; celeriac applies both (docs/differences.md)."""
    app = Celery("anno-paths", broker="memory://", set_as_current=False)
    app.conf.task_annotations = ["anno_sources.factory", "anno_sources:MAPPING"]
    tasks = annotated(app)
    assert tasks["anno.mul"]["rate_limit"] == "2/s" and tasks["anno.add"]["max_retries"] == 9


@pytest.mark.usefixtures("sources_module")
def test_a_class_named_by_path_is_instantiated_once_per_app() -> None:
    """Celery's ``app.annotations`` is computed once: tasks registered after finalize
    are annotated by the same instance."""
    app = Celery("anno-once", broker="memory://", set_as_current=False)
    app.conf.task_annotations = ["anno_sources.SlowAdd"]
    annotated(app)

    @app.task(name="anno.add2")
    def add2() -> None:
        return None

    import anno_sources  # type: ignore[import-not-found]

    assert len(anno_sources.CREATED) == 1
    assert app.tasks["anno.add"].time_limit == 30 and add2.time_limit is None


@pytest.mark.parametrize(("setting", "error"), [
    ({"anno.add": None}, "gave None, not a mapping of attributes"),
    ([{"*": 5}], "gave 5, not a mapping of attributes"),
    ([object()], "is neither a mapping of task names to attributes nor an object"),
    ([lambda task: {"rate_limit": "1/s"}], r"Celery skips a function here"),
    ([Pairs()], "gave \\[\\('rate_limit', '3/s'\\)\\], not a mapping of attributes"),
])
def test_bad_annotations_stop_the_app_with_an_error_naming_them(setting: Any,
                                                                error: str) -> None:
    """Celery raises a TypeError for the first two and an AttributeError for the last,
    and skips an object (or a function) without ``annotate`` silently."""
    app = Celery("anno-bad", broker="memory://", set_as_current=False)
    app.conf.task_annotations = setting
    try:
        with pytest.raises(ImproperlyConfigured, match=error):
            annotated(app)
    finally:  # the app stays registered: later shared tasks must not meet the bad setting
        app.conf.task_annotations = None
