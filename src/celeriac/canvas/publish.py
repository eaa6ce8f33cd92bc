"""Publishing many frozen signatures at once (group members, chord headers).

Plain task members become messages published in one ``broker.publish_many``
call; composite members (chains, chords, groups) are applied one by one.
Building a full message per member (routing, defaults, lineage) dominates
the cost of a large group, so when routing cannot depend on the arguments
(no router callables in ``task_routes``) a member whose task and options
equal the previous member's reuses that member's message as a template:
only the id, ``group_index``, ``root_id``, args/kwargs (body and reprs),
``correlation_id`` and ``delivery_tag`` differ. The result is the message
:func:`celeriac.app.publish.build_message` would build (checked by tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import serialization, signals
from ..app.publish import build_message, publish_items, report_ignored, task_defaults
from ..brokers.base import Publish
from ..messages import Message, decode_body, saferepr, task_properties

if TYPE_CHECKING:
    from ..app.base import Celery
    from .signature import Signature

#: options that differ between members of one group without changing the template
_PER_MEMBER = frozenset({"task_id", "group_index"})
COMPOSITE = frozenset({"chain", "group", "chord"})


class _Template:
    def __init__(self, name: str, rest: dict[str, Any], message: Message, queue: str,
                 not_before: float | None, priority: int | None, serializer: str) -> None:
        self.name, self.rest, self.message = name, rest, message
        self.queue, self.not_before, self.priority = queue, not_before, priority
        self.serializer = serializer
        self.embed = decode_body(message)[2]
        self.compression = message.headers.get("compression")
        self.default_root = message.headers.get("root_id") == message.headers.get("id")
        self.routing_key = message.properties["delivery_info"]["routing_key"]

    def matches(self, name: str, rest: dict[str, Any]) -> bool:
        return name == self.name and rest == self.rest

    def derive(self, task_id: str, args: list[Any], kwargs: dict[str, Any],
               group_index: Any) -> Publish:
        base = self.message
        body, content_type, encoding = serialization.dumps([args, kwargs, self.embed],
                                                           self.serializer)
        if self.compression:  # task_compression / compression=: as build_message does
            body, _ = serialization.compress(body, str(self.compression))
        headers = {**base.headers, "id": task_id, "group_index": group_index,
                   "argsrepr": saferepr(tuple(args)), "kwargsrepr": saferepr(kwargs)}
        if self.default_root:
            headers["root_id"] = task_id
        props = task_properties(task_id, reply_to=base.properties.get("reply_to"),
                                queue=self.routing_key, priority=base.properties.get("priority"),
                                expiration=base.properties.get("expiration"))
        return Publish(Message(headers, props, body, content_type, encoding), self.queue,
                       self.not_before, self.priority)


def static_routes(app: Celery) -> bool:
    """True when no router callable could route members of one task differently."""
    routes = app.conf.get("task_routes")
    if routes is None:
        return True
    items = routes if isinstance(routes, (list, tuple)) else [routes]
    return not any(callable(r) and not isinstance(r, dict) for r in items)


def member_publish(app: Celery, member: Signature, options: dict[str, Any],
                   template: _Template | None, reuse: bool) -> tuple[Publish, _Template | None]:
    """The Publish item of one plain member, and the template for the next one."""
    opts = {**options, **member["options"]}
    rest = {k: v for k, v in opts.items() if k not in _PER_MEMBER}
    args, kwargs = list(member.args), member.kwargs
    task_id = opts.pop("task_id")
    if reuse and template is not None and template.matches(member.task, rest):
        return template.derive(task_id, args, kwargs, opts.get("group_index")), template
    opts["task"] = app.tasks.get(member.task)
    opts = task_defaults(opts["task"], opts)
    message, queue, not_before, priority = build_message(app, member.task, args, kwargs,
                                                         task_id, opts)
    serializer = opts.get("serializer") or app.conf.task_serializer
    fresh = _Template(member.task, rest, message, queue, not_before, priority, serializer)
    return Publish(message, queue, not_before, priority), fresh


def publish_members(app: Celery, members: list[Signature], options: dict[str, Any]) -> None:
    """Publish frozen members: plain tasks in one batch, composite canvases one by one."""
    batch: list[Publish] = []
    template: _Template | None = None
    report_ignored(app, "group member", options)
    reuse = static_routes(app)
    announce = bool(signals.before_task_publish._receivers)
    for member in members:
        if member.subtask_type in COMPOSITE:
            member.apply_async(**options)
            continue
        item, template = member_publish(app, member, options, template, reuse)
        if announce:
            msg = item.message
            signals.before_task_publish.send(sender=msg.task_name, body=msg.body, exchange="",
                                             routing_key=item.queue, headers=msg.headers,
                                             properties=msg.properties, declare=[],
                                             retry_policy=options.get("retry_policy"))
        batch.append(item)
    if not batch:
        return
    publish_items(app, batch, retry=options.get("retry"), policy=options.get("retry_policy"),
                  connection=options.get("connection"))
    if signals.after_task_publish._receivers:
        for item in batch:
            signals.after_task_publish.send(sender=item.message.task_name,
                                            body=item.message.body, exchange="",
                                            routing_key=item.queue, headers=item.message.headers)
