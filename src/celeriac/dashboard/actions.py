"""What the dashboard does to the cluster, each step written to the audit log.

Every page button and every API call goes through :class:`Actions`, so the UI
and the API act alike and nothing escapes the audit log (who, what, when).

Retrying a task sends a **new** task (new id, ``retried_from`` = the old id)
with the same name, queue and arguments. The arguments are the real ones when
the result store keeps them (``result_extended``), else they are read back
from the ``argsrepr``/``kwargsrepr`` the events carried when those are plain
Python literals; when neither works the retry is refused and asks for edited
arguments, never guessed. Bulk actions act on exactly the records a filter
matches and only when the count the user confirmed is still the count.
"""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..schedules.kinds import crontab
from .history import HistoryStore, TaskFilter, TaskRecord

#: Most records one bulk action may touch.
MAX_BULK = 10_000
UNFINISHED = ("SENT", "PENDING", "RECEIVED", "STARTED", "RETRY")


class ActionError(Exception):
    """An action that cannot be done as asked (shown to the user, HTTP 400/404/409)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _literal(text: str | None, kind: type) -> Any:
    if text is None:
        raise ValueError("not recorded")
    value = ast.literal_eval(text)
    if kind is tuple and isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, kind):
        raise ValueError(f"not a {kind.__name__}")
    return value


def parse_json_arg(text: str | None, kind: type, what: str) -> Any:
    """Edited ``args`` (a JSON list) or ``kwargs`` (a JSON object) from a form."""
    if text is None or not str(text).strip():
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ActionError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise ActionError(f"{what} must be a JSON {'list' if kind is list else 'object'}")
    return value


def parse_schedule(text: str) -> Any:
    """``30`` / ``every 30s`` (seconds) or ``cron M H DOM MON DOW``."""
    spec = text.strip()
    lowered = spec.lower()
    if lowered.startswith("cron "):
        try:
            return crontab.from_string(spec[5:].strip())
        except Exception as exc:
            raise ActionError(f"bad cron expression {spec[5:]!r}: {exc}") from None
    number = lowered.removeprefix("every").strip().removesuffix("s").strip()
    try:
        seconds = float(number)
    except ValueError:
        raise ActionError(f"schedule {spec!r}: use seconds ('30', 'every 30s') or "
                          f"'cron M H DOM MON DOW'") from None
    if seconds <= 0:
        raise ActionError("the interval must be positive")
    return seconds


@dataclass
class Actions:
    """The cluster actions of one dashboard (``app``: the Celery app it watches)."""

    app: Any
    history: HistoryStore

    def _audit(self, user: str, action: str, target: str, **detail: Any) -> None:
        self.history.audit(user, action, target,
                           json.dumps(detail, default=str, sort_keys=True) if detail else "")

    def _record(self, task_id: str) -> TaskRecord:
        record = self.history.get(task_id)
        if record is None:
            raise ActionError(f"no task {task_id} in the history", 404)
        return record

    # -- tasks -----------------------------------------------------------------------
    def original_arguments(self, record: TaskRecord) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The task's real args/kwargs (see the module docstring) or ActionError."""
        backend = getattr(self.app, "backend", None)
        meta = backend.get(record.task_id) if backend is not None else None
        if meta and isinstance(meta.get("args"), (list, tuple)) and isinstance(
                meta.get("kwargs"), dict):
            return tuple(meta["args"]), dict(meta["kwargs"])
        try:
            return _literal(record.args, tuple), _literal(record.kwargs or "{}", dict)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ActionError(
                f"the arguments of {record.task_id} are not known exactly (args {record.args!r});"
                f" retry with edited arguments, or enable result_extended", 409) from None

    def send(self, name: str, user: str, *, args: list[Any] | None = None,
             kwargs: dict[str, Any] | None = None, queue: str | None = None,
             countdown: float | None = None, retried_from: str | None = None) -> str:
        """Send task ``name`` (Flower's ``async-apply``), recorded in the history."""
        options: dict[str, Any] = {"queue": queue} if queue else {}
        if countdown is not None:
            options["countdown"] = countdown
        result = self.app.send_task(name, args=tuple(args or ()), kwargs=dict(kwargs or {}),
                                    **options)
        now = time.time()
        self.history.put(TaskRecord(
            task_id=result.id, name=name, state="SENT", queue=queue,
            args=repr(tuple(args or ())), kwargs=repr(dict(kwargs or {})), sent_at=now, ts=now,
            state_ts=now, updated_at=now, retried_from=retried_from, source="dashboard",
            root_id=result.id))
        if retried_from is None:
            self._audit(user, "send", f"task {result.id}", name=name, args=list(args or ()),
                        kwargs=dict(kwargs or {}), queue=queue)
        return str(result.id)

    def retry(self, task_id: str, user: str, *, args: list[Any] | None = None,
              kwargs: dict[str, Any] | None = None, queue: str | None = None) -> str:
        """Send the task again (edited ``args``/``kwargs`` when given); returns the new id."""
        record = self._record(task_id)
        if not record.name:
            raise ActionError(f"the task name of {task_id} is not known", 409)
        edited = args is not None or kwargs is not None
        if edited:
            new_args, new_kwargs = tuple(args or ()), dict(kwargs or {})
        else:
            new_args, new_kwargs = self.original_arguments(record)
        new_id = self.send(record.name, user, args=list(new_args), kwargs=new_kwargs,
                           queue=queue or record.queue or record.routing_key,
                           retried_from=task_id)
        self._audit(user, "retry-edited" if edited else "retry", f"task {task_id}",
                    new_task_id=new_id, name=record.name,
                    **({"args": list(new_args), "kwargs": new_kwargs} if edited else {}))
        return new_id

    def revoke(self, task_ids: list[str], user: str, *, terminate: bool = False,
               signal: str | None = None) -> int:
        if not task_ids:
            return 0
        self.app.control.revoke(task_ids, terminate=terminate, signal=signal)
        what = "terminate" if terminate else "revoke"
        target = f"task {task_ids[0]}" if len(task_ids) == 1 else f"{len(task_ids)} tasks"
        self._audit(user, what, target, **({"signal": signal or "SIGTERM"} if terminate else {}))
        return len(task_ids)

    def bulk_count(self, flt: TaskFilter) -> int:
        return self.history.count(flt, cap=MAX_BULK + 1)

    def bulk(self, action: str, flt: TaskFilter, confirmed: int, user: str) -> dict[str, Any]:
        """``retry``, ``revoke`` or ``purge`` (forget the records) every match of ``flt``."""
        if action not in ("retry", "revoke", "terminate", "purge"):
            raise ActionError(f"unknown bulk action {action!r}")
        if flt.is_empty() and action != "purge":
            raise ActionError("a bulk action needs a filter (state, name, queue...)")
        count = self.bulk_count(flt)
        if count > MAX_BULK:
            raise ActionError(f"more than {MAX_BULK} tasks match; narrow the filter")
        if count != confirmed:
            raise ActionError(f"{count} tasks match now, not the {confirmed} you confirmed; "
                              f"confirm again", 409)
        ids = self.history.matching_ids(flt, MAX_BULK)
        done, failed = 0, []
        if action == "retry":
            for tid in ids:
                try:
                    self.retry(tid, user)
                    done += 1
                except ActionError as exc:
                    failed.append({"task_id": tid, "error": str(exc)})
        elif action in ("revoke", "terminate"):
            done = self.revoke(ids, user, terminate=action == "terminate")
        else:
            done = self.history.forget(ids)
        self._audit(user, f"bulk-{action}", f"{len(ids)} tasks", filter=flt.as_params(),
                    done=done, failed=len(failed))
        return {"action": action, "matched": len(ids), "done": done, "failed": failed}

    # -- queues ------------------------------------------------------------------------
    def purge_queue(self, queue: str, user: str) -> int:
        count = int(self.app.broker.purge(queue))
        self._audit(user, "purge-queue", f"queue {queue}", removed=count)
        return count

    # -- dead letters --------------------------------------------------------------------
    def dead_letters(self, queue: str | None = None, reason: str | None = None,
                     task: str | None = None, limit: int = 1000) -> list[Any]:
        items = self.app.broker.dead_letters(queue or None, limit=limit)
        if reason:
            items = [d for d in items if reason.lower() in (d.reason or "").lower()]
        if task:
            items = [d for d in items if d.message.headers.get("task") == task]
        return list(items)

    def retry_dead(self, user: str, dead_id: str | None = None, *, queue: str | None = None,
                   reason: str | None = None, task: str | None = None) -> int:
        broker = self.app.broker
        if dead_id:
            if not broker.retry_dead_letter(dead_id):
                raise ActionError(f"no dead letter {dead_id}", 404)
            self._audit(user, "retry-dead-letter", f"dead letter {dead_id}")
            return 1
        ids = [d.id for d in self.dead_letters(queue, reason, task, limit=MAX_BULK)]
        done = sum(1 for i in ids if broker.retry_dead_letter(i))
        self._audit(user, "retry-dead-letters", f"{done} dead letters", queue=queue,
                    reason=reason, task=task)
        return done

    def purge_dead(self, user: str, queue: str | None = None) -> int:
        count = int(self.app.broker.purge_dead_letters(queue or None))
        self._audit(user, "purge-dead-letters", f"queue {queue}" if queue else "all queues",
                    removed=count)
        return count

    # -- schedules ---------------------------------------------------------------------
    def schedule(self, name: str, change: str, user: str,
                 fields: Mapping[str, Any] | None = None) -> Any:
        """``enable``, ``disable``, ``run`` or ``edit`` (``fields``: schedule, args, kwargs)."""
        schedules = self.app.schedules
        try:
            if change == "enable":
                out: Any = schedules.enable(name)
            elif change == "disable":
                out = schedules.disable(name)
            elif change == "run":
                out = schedules.run_now(name)
            elif change == "edit":
                updates: dict[str, Any] = {}
                fields = fields or {}
                if fields.get("schedule"):
                    updates["schedule"] = parse_schedule(str(fields["schedule"]))
                if fields.get("args") is not None:
                    updates["args"] = parse_json_arg(fields["args"], list, "args")
                if fields.get("kwargs") is not None:
                    updates["kwargs"] = parse_json_arg(fields["kwargs"], dict, "kwargs")
                if not updates:
                    raise ActionError("nothing to change")
                out = schedules.update(name, **updates)
            else:
                raise ActionError(f"unknown schedule change {change!r}")
        except KeyError:
            raise ActionError(f"no periodic task named {name!r}", 404) from None
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ActionError(str(exc)) from None
        self._audit(user, f"schedule-{change}", f"schedule {name}",
                    **({k: str(v) for k, v in (fields or {}).items()} if change == "edit"
                       else {}))
        return out
