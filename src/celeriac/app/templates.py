"""The plain call's lane: ``delay()`` from a per-task template of the stored text.

Most calls are plain: ``task.delay(*args)`` with no options, outside a task, no
publish signal receivers, interceptors, security or sent events, no
``task_routes``, a body well under ``task_message_max_size``. What such a call
stores differs from the last one only in its task id, delivery tag, body and
argument reprs, so :func:`publish_plain`
builds the stored text from a :class:`Template`: the normal path's own output
(:func:`~celeriac.app.publish.build_message` and the broker's rendering) for a
call with marker values, cut at the markers. Every other input of that output
(the task's options, the settings it reads, the thread's ``reply_to``, which
also changes with the process and so stands for its ``origin``) is part of the
template's key, so a changed setting makes a new template; whatever the
template cannot express takes the normal path. The publish itself is the
normal one: the same retry policy, deadline, errors and "stored before
``delay()`` returns" (the broker's reply is read).

Only brokers that store kombu's text envelope offer the lane
(``broker.render_envelope`` / ``broker.publish_rendered``: Redis).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _quoted
from typing import TYPE_CHECKING, Any

from .. import hooks, signals
from ..brokers.base import redact
from ..messages import EMPTY_EMBED, HEADER_HEADROOM, saferepr, uuid4_text
from ..retry import call as retry_call
from ..security.setup import uses_auth
from ..serialization import dumps
from . import state as _state
from .publish import PUBLISH_ERRORS, build_message, publish_policy, task_defaults, warn_retry

if TYPE_CHECKING:
    from .base import Celery
    from .task import Task

#: the task options the normal path reads (``task_defaults``)
OPTIONS = ("queue", "priority", "expires", "time_limit", "soft_time_limit", "serializer",
           "compression", "routing_key", "exchange", "ignore_result")
#: markers of the variable parts (never in a stored message otherwise)
_ID, _TAG, _BODY = "\x00celeriac-id\x00", "\x00celeriac-tag\x00", "\x00celeriac-body\x00"
_ARGS, _KWARGS = "\x00celeriac-args\x00", "\x00celeriac-kwargs\x00"
_MARKERS = (_ID, _TAG, _BODY, _ARGS, _KWARGS)
_KEEP = 256  # templates kept per app


@dataclass(frozen=True)
class Template:
    """The stored text of a plain call, cut at its variable parts."""

    #: literal pieces, and between two pieces the index of the marker that goes there
    pieces: tuple[str, ...]
    slots: tuple[int, ...]
    target: Any  # the broker's rendering target (e.g. the list key), opaque here
    queue: str

    def text(self, task_id: str, body: str, args: str, kwargs: str) -> str:
        values = (task_id, uuid4_text(), body, args, kwargs)
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            out.append(values[slot])
            out.append(piece)
        return "".join(out)


def _lane_open(app: Celery, task: Task) -> bool:
    """Nothing about this call or app needs the normal path's extra steps."""
    conf = app.conf
    send = type(app).send_task  # a subclass's own send_task sees every call
    if send.__module__ != __package__ + ".base" or send.__qualname__ != "Celery.send_task":
        return False
    return not (signals.before_task_publish._receivers or signals.after_task_publish._receivers
                or hooks._interceptors or getattr(app, "_security", None) is not None
                or conf.get("task_routes") or conf.get("task_send_sent_event") or uses_auth(conf)
                or _state.get_current_worker_task() is not None
                or getattr(task, "_model_calls", None) is not None)


def _key(app: Celery, task: Task) -> tuple[Any, ...] | None:
    values = tuple([getattr(task, name, None) for name in OPTIONS])
    expires, serializer, compression = values[2], values[5], values[6]
    conf = app.conf
    if expires is not None or compression is not None or conf.get("task_compression"):
        return None  # a per-call expiry header; a compressed body
    if (serializer or conf.get("task_serializer")) != "json":
        return None
    return (task.name, values, app.thread_oid, conf.get("task_default_queue"),
            conf.get("task_default_priority"), conf.get("task_serializer"),
            conf.get("broker_publish_timeout"))


def _template(app: Celery, task: Task, key: tuple[Any, ...]) -> Template | None:
    templates: dict[Any, Template | None] = app.__dict__.setdefault("_plain_templates", {})
    if key in templates:
        return templates[key]
    options = task_defaults(task, {"task": task, "argsrepr": _ARGS, "kwargsrepr": _KWARGS})
    message, queue, not_before, priority = build_message(app, task.name or "", [], {}, _ID,
                                                         options)
    found: Template | None = None
    if not_before is None:
        message = message.with_properties(delivery_tag=_TAG)
        target, text = app.broker.render_envelope(message, queue, priority)  # type: ignore[attr-defined]
        found = _cut(text, message, target, queue)
    if len(templates) >= _KEEP:
        templates.clear()
    templates[key] = found
    return found


def _cut(text: str, message: Any, target: Any, queue: str) -> Template | None:
    """Cut ``text`` at the markers; None when one is not where a template can fill it."""
    body = base64.b64encode(message.body).decode("ascii")
    text = text.replace(f'"{body}"', f'"{_BODY}"', 1)
    for marker in _MARKERS:  # in JSON text the markers are escaped: find that form
        text = text.replace(json.dumps(marker)[1:-1], marker)
    pieces, slots, rest = [], [], text
    while True:
        found = [(rest.find(m), i) for i, m in enumerate(_MARKERS) if m in rest]
        if not found:
            break
        at, slot = min(found)
        pieces.append(rest[:at])
        slots.append(slot)
        rest = rest[at + len(_MARKERS[slot]):]
    pieces.append(rest)
    if sorted(set(slots)) != list(range(len(_MARKERS))):
        return None  # a marker the rendering dropped or changed
    return Template(tuple(pieces), tuple(slots), target, queue)


def publish_plain(app: Celery, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
                  task_id: str | None) -> str | None:
    """Publish a plain call through its template; its task id, or None when the call
    must take the normal path (nothing was published)."""
    broker = app.broker
    publish = getattr(broker, "publish_rendered", None)
    if publish is None or not _lane_open(app, task):
        return None
    key = _key(app, task)
    template = _template(app, task, key) if key is not None else None
    if template is None or not broker.declared(template.queue):  # type: ignore[attr-defined]
        return None
    body = dumps([list(args), kwargs, dict(EMPTY_EMBED)], "json")[0]
    limit = app.conf.get("task_message_max_size")
    if limit and len(body) + HEADER_HEADROOM >= limit:  # measured by the normal path
        return None
    task_id = task_id or uuid4_text()
    text = template.text(_quoted(task_id)[1:-1], base64.b64encode(body).decode("ascii"),
                         _quoted(saferepr(args))[1:-1], _quoted(saferepr(kwargs))[1:-1])
    retries = [0]
    retry_call(lambda: publish(template.target, template.queue, text),
               publish_policy(app), retry_on=PUBLISH_ERRORS,
               what=f"publish of {task.name}[{task_id}]", where=f"broker {redact(broker.url)}",
               on_retry=lambda exc, pause: warn_retry(template.queue, exc, pause, retries))
    return task_id
