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

Only brokers that offer ``broker.render_envelope`` / ``broker.publish_rendered``
have the lane: Redis (kombu's text envelope), RabbitMQ (the call's variable parts
as a JSON list, see :mod:`celeriac.brokers.amqp.plain`); not with a result store
that acts before every publish (``rpc://`` declares its reply queue).
"""

from __future__ import annotations

import base64
import copy
import json
from binascii import b2a_base64
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quoted
from operator import attrgetter, itemgetter
from os import getpid
from threading import get_ident
from time import monotonic
from typing import TYPE_CHECKING, Any

from .. import hooks, signals
from ..brokers.base import redact
from ..message_size import HEADER_HEADROOM
from ..messages import EMPTY_EMBED, saferepr, uuid4_text
from ..results.store import ResultStore
from ..retry import RetryPolicy, _failing, at_top, report_success
from ..retry import call as retry_call
from ..serialization import AUTH_NAMES, dumps, json_dumps, stock_json
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
_KEEP = 256  # lanes kept per app
_OPTIONS = attrgetter(*OPTIONS)
_before, _after = signals.before_task_publish, signals.after_task_publish
_AUTH = frozenset(AUTH_NAMES)
#: a plain call's body is ``[args, kwargs, EMPTY_EMBED]``: the embed's text, made once
_EMBED = json_dumps(EMPTY_EMBED)
_SEND_TASK: dict[Any, bool] = {}  # send_task function -> is it Celery.send_task


#: the names of the variable parts in a template's joiner, by marker index
_NAMES = ("task_id", "tag", "body", "args", "kwargs")


@dataclass(frozen=True)
class Template:
    """The stored text of a plain call, cut at its variable parts."""

    #: literal pieces, and between two pieces the index of the marker that goes there
    pieces: tuple[str, ...]
    slots: tuple[int, ...]
    target: Any  # the broker's rendering target (e.g. the list key), opaque here
    queue: str
    #: ``join(task_id, tag, body, args, kwargs)``: the pieces and the values in order
    join: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # one tuple display of constants and arguments, joined: a third of the cost of a
        # ``%`` format of the ~1 kB text, which scans every character
        parts = [repr(self.pieces[0])]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            parts += [_NAMES[slot], repr(piece)]
        source = f"lambda {', '.join(_NAMES)}: ''.join(({', '.join(parts)}))"
        object.__setattr__(self, "join", eval(source, {"__builtins__": {}}))

    def text(self, task_id: str, body: str, args: str, kwargs: str) -> str:
        return self.join(task_id, uuid4_text(), body, args, kwargs)


@dataclass(frozen=True)
class Lane:
    """A task's template with what publishing it takes: the broker's packed publish
    (``broker.pusher``, None where the broker has none) and the publish policy."""

    template: Template
    pusher: Any
    policy: RetryPolicy
    where: str


def _lane_open(app: Celery, task: Task) -> bool:
    """Nothing about this call or app needs the normal path's extra steps."""
    conf = app.conf
    send = type(app).send_task  # a subclass's own send_task sees every call
    plain = _SEND_TASK.get(send)
    if plain is None:
        plain = _SEND_TASK[send] = (send.__module__ == __package__ + ".base"
                                    and send.__qualname__ == "Celery.send_task")
    if not plain:
        return False
    accept = conf.get("accept_content")
    return not (_before._receivers or _after._receivers or hooks._interceptors
                or app.__dict__.get("_security") is not None
                or conf.get("task_routes") or conf.get("task_send_sent_event")
                or conf.get("security_seal") or (accept and not _AUTH.isdisjoint(accept))
                or (_state._task_stack.get() and _state.get_current_worker_task() is not None)
                or task._model_calls is not None)


#: the settings a lane depends on (with the task's options, the broker and the process)
SETTINGS = ("task_default_queue", "task_default_priority", "task_serializer",
            "task_compression", "broker_publish_timeout", "task_publish_retry",
            "task_publish_retry_policy")
_SETTINGS = itemgetter(*SETTINGS)


def _key(app: Celery, task: Task) -> tuple[Any, ...]:
    """Everything a task's lane depends on: the task's options, the settings the normal
    path reads, the broker, the process (``reply_to``, ``origin``)."""
    try:
        settings = _SETTINGS(app.conf)
    except KeyError:  # a setting deleted: read as None, as conf.get would
        settings = tuple(app.conf.get(name) for name in SETTINGS)
    return (_OPTIONS(task), settings, app._broker, getpid())


def _lane(app: Celery, task: Task) -> Lane | None:
    """The task's lane for this thread (built on first use and after any change of what
    it depends on), None when its calls must take the normal path."""
    lanes: dict[Any, tuple[tuple[Any, ...], Lane | None]] = (
        app.__dict__.get("_plain_lanes") or app.__dict__.setdefault("_plain_lanes", {}))
    key = _key(app, task)
    place = (task.name, get_ident())
    found = lanes.get(place)
    if found is None or found[0] != key:
        closed, lane = _new_lane(app, task, key)
        if lane is None and not closed:
            return None  # the queue is not declared yet (the normal path declares it)
        if len(lanes) >= _KEEP:
            lanes.clear()
        # a policy dict changed in place must not look unchanged: keep a copy
        found = lanes[place] = ((key[0], copy.deepcopy(key[1]), *key[2:]), lane)
    return found[1]


def _new_lane(app: Celery, task: Task, key: tuple[Any, ...]) -> tuple[bool, Lane | None]:
    """(closed, lane): closed when the task's calls cannot take the lane with these
    settings; no lane and not closed while the queue is not declared."""
    expires, serializer, compression = key[0][2], key[0][5], key[0][6]
    if expires is not None or compression is not None or app.conf.get("task_compression"):
        return True, None  # a per-call expiry header; a compressed body
    if (serializer or app.conf.get("task_serializer")) != "json":
        return True, None
    broker = app.broker
    if getattr(broker, "publish_rendered", None) is None:
        return True, None
    backend = app.backend  # one that acts before every publish (rpc://: its reply queue)
    if backend is not None and type(backend).on_publish is not ResultStore.on_publish:
        return True, None
    template = _template(app, task)
    if template is None:
        return True, None
    if not broker.declared(template.queue):  # type: ignore[attr-defined]
        return False, None
    pusher = getattr(broker, "pusher", None)
    return False, Lane(template,
                       pusher(template.target, template.queue) if pusher is not None else None,
                       publish_policy(app), f"broker {redact(broker.url)}")


def _template(app: Celery, task: Task) -> Template | None:
    options = task_defaults(task, {"task": task, "argsrepr": _ARGS, "kwargsrepr": _KWARGS})
    message, queue, not_before, priority = build_message(app, task.name or "", [], {}, _ID,
                                                         options)
    if not_before is not None:
        return None
    message = message.with_properties(delivery_tag=_TAG)
    target, text = app.broker.render_envelope(message, queue, priority)  # type: ignore[attr-defined]
    return _cut(text, message, target, queue)


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


def _body(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """``dumps([list(args), kwargs, EMPTY_EMBED], "json")[0]``, with the embed's text
    made once (while ``json`` is the stock serializer; errors are the normal path's)."""
    if stock_json():
        try:
            return f"[{json_dumps(args)}, {json_dumps(kwargs) if kwargs else '{}'}, {_EMBED}]"\
                .encode()
        except Exception:
            pass  # dumps raises the normal path's error
    return dumps([list(args), kwargs, EMPTY_EMBED], "json")[0]


def publish_plain(app: Celery, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
                  task_id: str | None) -> str | None:
    """Publish a plain call through its template; its task id, or None when the call
    must take the normal path (nothing was published).

    The first attempt of a call made outside any other retrying call goes straight to
    the broker's packed publish (``broker.pusher``) with the publish deadline as its
    socket bound; a failure, or a call inside another, goes through
    :func:`celeriac.retry.call` with the same policy (the first attempt counted)."""
    if not _lane_open(app, task):
        return None
    lane = _lane(app, task)
    if lane is None:
        return None
    body = _body(args, kwargs)
    limit = app.conf.get("task_message_max_size")
    if limit and len(body) + HEADER_HEADROOM >= limit:  # measured by the normal path
        return None
    template = lane.template
    if task_id is None:
        task_id = quoted_id = uuid4_text()
    else:
        quoted_id = _quoted(task_id)[1:-1]
    text = template.join(quoted_id, uuid4_text(), b2a_base64(body, newline=False).decode(),
                         _quoted(saferepr(args))[1:-1],
                         _quoted(saferepr(kwargs))[1:-1] if kwargs else "{}")
    failed: BaseException | None = None
    started = monotonic()
    if lane.pusher is not None and at_top():
        try:
            lane.pusher.push(text.encode(), lane.policy.timeout)
        except PUBLISH_ERRORS as exc:
            failed = exc
        else:
            if _failing:
                report_success(lane.where)
            return task_id
    retries = [0]
    broker = app.broker
    publish = broker.publish_rendered  # type: ignore[attr-defined]
    if not broker.declared(template.queue):  # type: ignore[attr-defined]
        return None  # a broker without a pusher: checked on every call
    retry_call(lambda: publish(template.target, template.queue, text), lane.policy,
               retry_on=PUBLISH_ERRORS, what=f"publish of {task.name}[{task_id}]",
               where=lane.where, failed=failed, started=started,
               on_retry=lambda exc, pause: warn_retry(template.queue, exc, pause, retries))
    return task_id
