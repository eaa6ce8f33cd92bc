"""Every import path users write keeps working: Celery's paths, and every one the docs show.

Celery users change only the package name, so ``celery.result.AsyncResult``
becomes ``celeriac.result.AsyncResult`` and so on; the first table lists those
paths. Then every ``from celeriac... import ...`` line and every
```celeriac.module.Name``` reference in README.md, docs/ and examples/ must
resolve, so the docs cannot point at a module that moved.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = sorted((ROOT / "examples").rglob("*.py"))

CELERY_PATHS: dict[str, tuple[str, ...]] = {
    "celeriac": ("Celery", "shared_task", "Task", "signature", "subtask", "maybe_signature",
                 "Signature", "chain", "group", "chord", "chunks", "xmap", "xstarmap",
                 "current_app", "current_task", "states", "uuid", "AsyncResult", "GroupResult",
                 "periodic_task", "__version__"),
    "celeriac.app": ("Celery", "shared_task", "current_app", "current_task"),
    "celeriac.app.task": ("Task", "Context"),
    "celeriac.app.control": ("Control",),
    "celeriac.canvas": ("Signature", "signature", "maybe_signature", "subtask", "chain",
                        "group", "chord", "chunks", "xmap", "xstarmap"),
    "celeriac.result": ("AsyncResult", "GroupResult", "ResultSet", "EagerResult",
                        "ResultBase", "result_from_tuple"),
    "celeriac.schedules": ("crontab", "schedule", "solar", "maybe_schedule", "schedstate",
                           "crontab_parser", "BaseSchedule", "ParseException"),
    "celeriac.exceptions": ("Retry", "Ignore", "Reject", "MaxRetriesExceededError",
                            "SoftTimeLimitExceeded", "TimeLimitExceeded", "TimeoutError",
                            "TaskRevokedError", "WorkerLostError", "ChordError",
                            "NotRegistered", "ImproperlyConfigured", "OperationalError"),
    "celeriac.states": ("PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED",
                        "READY_STATES", "EXCEPTION_STATES", "PROPAGATE_STATES"),
    "celeriac.signals": ("task_prerun", "task_postrun", "task_success", "task_failure",
                         "task_retry", "before_task_publish", "after_task_publish",
                         "worker_ready", "worker_process_init", "beat_init"),
    "celeriac.utils.log": ("get_task_logger",),
    "celeriac.beat": ("Scheduler", "ManualClock", "MemoryStore", "Schedules"),
    "celeriac.cli": ("main", "cli"),
}


@pytest.mark.parametrize("module", sorted(CELERY_PATHS))
def test_celery_paths(module: str) -> None:
    imported = importlib.import_module(module)
    missing = [name for name in CELERY_PATHS[module] if not hasattr(imported, name)]
    assert missing == [], f"{module} lacks {missing}"


def _import_lines(text: str) -> list[str]:
    """``from celeriac... import ...`` / ``import celeriac...`` statements, joined if wrapped."""
    pattern = (r"^\s*(from celeriac[\w.]* import \([^)]*\)"
               r"|from celeriac[\w.]* import [^\n]+|import celeriac[\w.]*)")
    found = re.findall(pattern, text, flags=re.MULTILINE)
    return [line.split("#")[0].strip() for line in found]


def _statements() -> list[tuple[str, str]]:
    out = []
    for path in [*DOCUMENTS, *EXAMPLES]:
        for line in _import_lines(path.read_text()):
            out.append((path.relative_to(ROOT).as_posix(), line))
    return out


@pytest.mark.parametrize(("where", "statement"), _statements())
def test_documented_imports(where: str, statement: str) -> None:
    tree = ast.parse(statement)
    node = tree.body[0]
    if isinstance(node, ast.ImportFrom):
        module = importlib.import_module(node.module or "")
        missing = [a.name for a in node.names if not hasattr(module, a.name)]
        assert missing == [], f"{where}: {statement} ({missing} missing)"
    else:
        for alias in node.names:  # type: ignore[attr-defined]
            importlib.import_module(alias.name)


def _references() -> list[tuple[str, str]]:
    """```celeriac.a.b``` dotted paths in backticks (files and key names excluded)."""
    out = []
    for path in DOCUMENTS:
        for ref in re.findall(r"`(celeriac(?:\.[A-Za-z_][\w]*)+)`", path.read_text()):
            if not ref.endswith((".sqlite3", ".py")):
                out.append((path.relative_to(ROOT).as_posix(), ref))
    return sorted(set(out))


def resolve(dotted: str) -> object:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize(("where", "reference"), _references())
def test_documented_references(where: str, reference: str) -> None:
    try:
        resolve(reference)
    except (ImportError, AttributeError) as exc:
        pytest.fail(f"{where} names `{reference}`, which does not exist ({exc})")
