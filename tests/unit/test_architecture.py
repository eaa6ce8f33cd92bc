"""The package layout's rules, checked on the source (docs/architecture.md, "Dependencies").

Every ``import`` in ``src/celeriac`` is read with :mod:`ast`: module-level
ones and those inside functions (a function-level import that dodges a cycle
is still a cycle); imports under ``if TYPE_CHECKING:`` are annotations only
and do not count. Then: dependencies point one way between layers, no module
imports itself through others, no import sits below code, every module says
what it owns and stays under 400 lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
MAX_LINES = 400

#: The public API layer: what a producer imports. Never the services on top.
API = ("celeriac.app", "celeriac.canvas", "celeriac.results", "celeriac.result",
       "celeriac.config", "celeriac.messages", "celeriac.message_size", "celeriac.schedules",
       "celeriac.events", "celeriac.control", "celeriac.security", "celeriac.task")
SERVICES = ("celeriac.worker", "celeriac.beat", "celeriac.cli", "celeriac.contrib",
            "celeriac.dashboard", "celeriac.metrics")
#: Brokers and their stores know messages and stored state, never tasks or callers.
STORAGE = ("celeriac.brokers", "celeriac.results.store", "celeriac.results.meta")
CALLER_SIDE = ("celeriac.app", "celeriac.canvas", "celeriac.results.async_result",
               "celeriac.results.group", "celeriac.result")
#: The ground floor: imported by everything, importing only each other (``hooks``: the
#: extension points integrations register into).
FOUNDATION = ("celeriac.clock", "celeriac.exceptions", "celeriac.states", "celeriac.signals",
              "celeriac.hooks", "celeriac.serialization", "celeriac.retry", "celeriac.version")

RULES: list[tuple[tuple[str, ...], tuple[str, ...], str]] = [
    (API, SERVICES, "the API layer must not import the worker, beat, CLI or contrib"),
    (STORAGE, CALLER_SIDE + SERVICES, "brokers and result stores must not import tasks, "
                                      "the app, canvas or services"),
    (FOUNDATION, ("celeriac.",), "foundation modules import only each other"),
]


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / "celeriac").rglob("*.py"))}


def _absolute(source: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(name: str, path: Path, known: Iterable[str]) -> list[Edge]:
    """Edges from module ``name`` to the celeriac modules it imports."""
    known = set(known)
    tree = ast.parse(path.read_text())
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(name, is_package, child)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                           for a in child.names]
            else:
                targets = []
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target.startswith("celeriac") and target != name:
                    edges.append(Edge(name, target, child.lineno, in_function))
            visit(child, in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return edges


def all_edges() -> list[Edge]:
    found = modules()
    return [e for name, path in found.items() for e in imports_of(name, path, found)]


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return out


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p if p.endswith(".") else p + ".")
               for p in prefixes)


# -- the rules ------------------------------------------------------------------------------
def test_dependencies_point_one_way() -> None:
    broken = []
    for edge in all_edges():
        for sources, forbidden, why in RULES:
            if _within(edge.source, sources) and _within(edge.target, forbidden) and not (
                    sources is FOUNDATION and _within(edge.target, FOUNDATION)):
                broken.append(f"{edge.source}:{edge.line} imports {edge.target} ({why})")
    assert broken == []


def test_core_never_imports_contrib() -> None:
    """Integrations plug into the core's seams (fix-ups, hooks, the scheme table, the
    ``celeriac.commands`` entry points); no module outside ``contrib`` imports them."""
    contrib = ("celeriac.contrib",)
    broken = [f"{e.source}:{e.line} imports {e.target}" for e in all_edges()
              if _within(e.target, contrib) and not _within(e.source, contrib)]
    assert broken == []


def test_no_import_cycles() -> None:
    graph: dict[str, set[str]] = {}
    for edge in all_edges():
        graph.setdefault(edge.source, set()).add(edge.target)
    assert cycles(graph) == []


def test_the_cycle_check_finds_cycles() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"], "e": ["e2"], "e2": []}
    assert cycles(graph) == [["a", "b", "c"]]


def test_function_level_imports_are_seen(tmp_path: Path) -> None:
    """A cycle closed by an import inside a function is still found; annotations are not."""
    path = tmp_path / "x.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import z\n"
                    "def f():\n    from . import y\n")
    edges = imports_of("celeriac.x", path, ["celeriac.x", "celeriac.y", "celeriac.z"])
    assert [(e.target, e.in_function) for e in edges] == [("celeriac.y", True)]


def test_no_import_below_code() -> None:
    """Module-level imports come before the first class or function (no bottom imports)."""
    late = []
    for name, path in modules().items():
        seen_code = False
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                seen_code = True
            elif seen_code and isinstance(node, (ast.Import, ast.ImportFrom)):
                late.append(f"{name}:{node.lineno}")
    assert late == []


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_says_what_it_owns_and_stays_small(name: str) -> None:
    path = modules()[name]
    text = path.read_text()
    assert ast.get_docstring(ast.parse(text)), f"{name} has no module docstring"
    assert len(text.splitlines()) <= MAX_LINES, f"{name} has more than {MAX_LINES} lines"


def test_app_start_reaches_the_command_line_at_call_time(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``app.start(argv)`` (Celery's API) runs the CLI with this app, though the app
    layer does not import the CLI."""
    from celeriac import Celery

    app = Celery("cli-handoff", broker="memory://", set_as_current=False)
    with pytest.raises(SystemExit) as exit_info:
        app.start(["purge", "-f", "-Q", "handoff"])
    assert exit_info.value.code == 0
    assert "Purged 0 messages from 1 known task queue." in capsys.readouterr().out


def test_worker_main_needs_the_worker_command_as_celery(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's ``worker_main`` refuses an argv without ``worker`` (``app.start()`` runs the
    other commands); without argv it reads the program's arguments."""
    from celeriac import Celery

    app = Celery("cli-worker-main", broker="memory://", set_as_current=False)
    message = ("The worker sub-command must be specified in argv.\n"
               "Use app.start() to programmatically start other commands.")
    for argv in (["purge", "-f"], [], ("--help",)):
        with pytest.raises(ValueError) as refused:
            app.worker_main(argv)
        assert str(refused.value) == message
    monkeypatch.setattr("sys.argv", ["proj.py", "purge", "-f"])
    with pytest.raises(ValueError) as refused:
        app.worker_main()
    assert str(refused.value) == message
    assert capsys.readouterr().out == ""  # nothing ran
    monkeypatch.setattr("sys.argv", ["proj.py", "worker", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        app.worker_main()
    assert exit_info.value.code == 0
    assert "Usage: celeriac worker [OPTIONS]" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        app.worker_main(("worker", "--help"))
    assert exit_info.value.code == 0
    assert "Usage: celeriac worker [OPTIONS]" in capsys.readouterr().out


def test_used_settings_are_read_and_accepted_ones_are_not() -> None:
    """``config.USED`` lists what the code reads; ``ACCEPTED_ONLY`` what it never reads."""
    import re

    from celeriac.config import ACCEPTED_ONLY, USED

    code = "\n".join(path.read_text() for name, path in modules().items()
                     if not name.startswith("celeriac.config"))

    def read(setting: str) -> bool:
        return re.search(rf"[\"'.]{setting}\b", code) is not None

    assert [s for s in USED if not read(s)] == []
    assert [s for s in ACCEPTED_ONLY if s not in USED and read(s)] == []
