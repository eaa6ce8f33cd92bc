"""Malformed messages for the fuzz scenario, built and published raw on each broker's wire.

The suite writes Celery protocol v2 messages itself (not through celeriac's
message builder): :func:`valid` is a correct message, and :data:`CASES` lists,
for every field of the envelope, the headers, the properties, ``delivery_info``
and the body (``args``, ``kwargs``, ``embed`` and its canvas parts), values that
break the protocol's type for that field (a list as content type, ``"high"`` as
priority, ``["x", null]`` as time limits, a callback that is not a signature...),
plus envelopes that are not JSON and bodies that cannot be decoded.
:func:`malformed` turns case ``n`` (cycled) into one message whose marker
``bad-<n>`` appears in several places (header ``x-reliability``, the task id, the
correlation id, the first argument, or the garbage text itself), so whatever the
worker does with it can be traced back.

Publishing is raw: an ``LPUSH`` of kombu's JSON envelope on Redis, an ``INSERT``
of the envelope into the messages table on SQLite and PostgreSQL (the row *is*
the wire there), ``basic_publish`` of headers, properties and body bytes with
py-amqp on RabbitMQ. RabbitMQ's frame format cannot carry some malformations
(a property of the wrong type, an envelope that is not JSON, ``delivery_info``,
which the server sets): those cases are left out on RabbitMQ, and the field
count says how many fields were covered.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TASK = "reliability.work"
QUEUE = "celery"
MARKER = re.compile(r"(bad|valid)-\d+")
NOT_JSON = "not-json"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

#: values that are wrong for each kind of field
BAD: dict[str, list[Any]] = {
    "text": [5, ["x"], {"a": 1}, True],
    "name": [5, "", ["x"], None, {"a": 1}],
    "moment": ["not a date", [1], {"a": 1}, True, "2024-13-45T99:00:00"],
    "count": [-1, "x", 1.5, True, [1]],
    "flag": ["yes", [1], {"a": 1}],
    "timelimit": ["x", ["x", None], [1, 2, 3], {"a": 1}, [-1, None]],
    "text_list": ["x", [1], {"a": 1}],
    "mapping": ["x", [1], 5],
    "priority": ["high", -1, 300, 1.5, [1]],
    "tag": [[1], {"a": 1}, 1.5],
    "expiration": ["soon", -5, [1]],
    "signatures": [[1], ["x"], "x", [{"task": 5}], [{"task": TASK, "args": "x"}]],
    "signature": ["x", [1], {"task": 5}, {"task": TASK, "kwargs": [1]}],
}

HEADERS = {
    "task": "name", "id": "name", "lang": "text", "shadow": "text", "eta": "moment",
    "expires": "moment", "group": "text", "group_index": "count", "retries": "count",
    "timelimit": "timelimit", "root_id": "text", "parent_id": "text", "argsrepr": "text",
    "kwargsrepr": "text", "origin": "text", "ignore_result": "flag",
    "replaced_task_nesting": "count", "stamped_headers": "text_list", "stamps": "mapping",
}
PROPERTIES = {
    "correlation_id": "text", "reply_to": "text", "delivery_mode": "count",
    "priority": "priority", "body_encoding": "text", "delivery_tag": "tag",
    "expiration": "expiration",
}
DELIVERY_INFO = {"exchange": "text", "routing_key": "text", "redelivered": "flag",
                 "priority": "priority"}
EMBED = {"callbacks": "signatures", "errbacks": "signatures", "chain": "signatures",
         "chord": "signature"}


@dataclass(frozen=True)
class Case:
    """One malformation: ``field`` (its path) and how to apply it."""

    field: str
    kind: str  # header / property / delivery_info / embed / body / envelope
    name: str
    value: Any
    #: RabbitMQ's frames can carry it
    amqp: bool = True


def _cases() -> list[Case]:
    cases: list[Case] = []
    for name, kind in HEADERS.items():
        cases += [Case(f"headers.{name}", "header", name, v) for v in BAD[kind]]
    cases.append(Case("headers.task", "header", "task", "reliability.no_such_task"))
    cases += [Case("headers.compression", "header", "compression", v)
              for v in ("zlib", "bzip2", 5)]
    for name, kind in PROPERTIES.items():
        amqp = name not in {"correlation_id", "reply_to", "delivery_mode", "priority",
                            "body_encoding", "delivery_tag", "expiration"}
        cases += [Case(f"properties.{name}", "property", name, v, amqp) for v in BAD[kind]]
    cases += [Case("properties.delivery_info", "property", "delivery_info", v, False)
              for v in ("x", [1], 5)]
    for name, kind in DELIVERY_INFO.items():
        cases += [Case(f"properties.delivery_info.{name}", "delivery_info", name, v, False)
                  for v in BAD[kind]]
    for name, kind in EMBED.items():
        cases += [Case(f"embed.{name}", "embed", name, v) for v in BAD[kind]]
    cases += [Case("body.args", "body", "args", v) for v in ("x", 5, {"a": 1})]
    cases += [Case("body.kwargs", "body", "kwargs", v) for v in ([1], "x", 5)]
    cases += [Case("body.embed", "body", "embed", v) for v in ("x", [1], 5)]
    cases += [Case("body", "body", "shape", v) for v in ({"a": 1}, [1, 2], 5, "x", None)]
    cases += [Case("body", "body", "bytes", v) for v in (b"{not json ", b"\xff\xfe ", b"")]
    cases += [Case("content-type", "envelope", "content-type", v, amqp=isinstance(v, str))
              for v in (["application/json"], 5, "application/x-python-serialize",
                        "application/x-unknown")]
    cases += [Case("content-encoding", "envelope", "content-encoding", v,
                   amqp=isinstance(v, str)) for v in (["utf-8"], 5, "rot13")]
    cases += [Case("headers", "envelope", "headers", v, False) for v in ([1], "x", 5)]
    cases += [Case("properties", "envelope", "properties", v, False) for v in ([1], "x")]
    cases += [Case("envelope", "envelope", NOT_JSON, v, False)
                  for v in ("truncated", "array", "string", "garbage", "empty")]
    return cases


CASES = _cases()


def cases_for(broker: str) -> list[Case]:
    """The cases a broker's wire can carry."""
    return [c for c in CASES if c.amqp] if broker == "amqp" else list(CASES)


@dataclass
class Raw:
    """A message as it goes on the wire: envelope parts plus the marker."""

    marker: str
    field: str
    headers: Any
    properties: Any
    body: Any  # the decoded body (list), or bytes/str for raw bodies
    content_type: Any = "application/json"
    content_encoding: Any = "utf-8"
    garbage: str | None = None  # a whole envelope that is not a JSON object

    def body_bytes(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode("utf-8", "surrogatepass")
        return json.dumps(self.body).encode()

    def envelope(self, queue: str = QUEUE) -> str:
        """kombu's JSON envelope (Redis list element, SQL ``envelope`` column)."""
        if self.garbage is not None:
            return self.garbage
        props = self.properties
        if isinstance(props, dict):
            props = {"body_encoding": "base64", "delivery_tag": self.marker,
                     "delivery_info": {"exchange": "", "routing_key": queue}, **props}
        return json.dumps({"body": base64.b64encode(self.body_bytes()).decode(),
                           "content-encoding": self.content_encoding,
                           "content-type": self.content_type, "headers": self.headers,
                           "properties": props})


def valid(marker: str, ms: int = 1) -> Raw:
    """A correct Celery protocol v2 message calling ``work(marker, ms)``."""
    headers: dict[str, Any] = {
        "lang": "py", "task": TASK, "id": marker, "shadow": None, "eta": None,
        "expires": None, "group": None, "group_index": None, "retries": 0,
        "timelimit": [None, None], "root_id": marker, "parent_id": None,
        "argsrepr": repr((marker, ms)), "kwargsrepr": "{}", "origin": "gen0@reliability",
        "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None,
        "stamps": {}, "x-reliability": marker}
    props = {"correlation_id": marker, "reply_to": marker, "delivery_mode": 2, "priority": 0}
    return Raw(marker, "", headers, props, [[marker, ms], {}, dict(_EMBED)])


def malformed(n: int, cases: list[Case]) -> Raw:
    """Case ``n % len(cases)`` applied to a valid message marked ``bad-<n>``."""
    case = cases[n % len(cases)]
    raw = valid(f"bad-{n}")
    raw.field = case.field
    if case.kind == "header":
        if case.value is None:
            raw.headers.pop(case.name)
        else:
            raw.headers[case.name] = case.value
    elif case.kind == "property":
        raw.properties[case.name] = case.value
    elif case.kind == "delivery_info":
        raw.properties["delivery_info"] = {"exchange": "", "routing_key": QUEUE,
                                           case.name: case.value}
    elif case.kind == "embed":
        raw.body[2][case.name] = case.value
    elif case.kind == "body":
        index = {"args": 0, "kwargs": 1, "embed": 2}.get(case.name)
        if index is not None:
            raw.body[index] = case.value
        elif case.name == "shape":
            raw.body = {"marker": raw.marker, "value": case.value}
        else:
            raw.body = case.value + (raw.marker.encode() if case.value else b"")
    elif case.name == NOT_JSON:
        raw.garbage = {"truncated": raw.envelope()[:-40],
                       "array": json.dumps([raw.marker, 1]),
                       "string": json.dumps(f"just a string {raw.marker}"),
                       "garbage": f"\x01\x02 {raw.marker} }}{{",
                       "empty": json.dumps({"body": raw.marker})}[case.value]
    elif case.name == "headers":  # the marker survives in the properties
        raw.headers = case.value
    elif case.name == "properties":  # ... and here in the headers
        raw.properties = case.value
    else:  # content-type / content-encoding
        setattr(raw, case.name.replace("-", "_"), case.value)
    return raw


def stops_celery(case: Case) -> bool:
    """Cases that stop a Celery 5.7 worker for good: a list or an object as the task
    name or id ("Unrecoverable error": used as a dict key), a missing id (the consumer
    restarts on ``KeyError('id')`` until "Frequent restarts detected"), any malformed
    time limits ("not enough values to unpack", "could not convert string to
    float"...). The message
    comes back to the restarted worker, since kombu gives unacknowledged messages
    back when a worker stops."""
    if case.field == "headers.timelimit":  # unpacked as (hard, soft), then float()
        return True
    return (case.field in ("headers.task", "headers.id")
            and (case.value is None or isinstance(case.value, (list, dict))))


def interleaved(bad: int, good: int, broker: str, skip: Callable[[Case], bool] | None = None
                ) -> list[Raw]:
    """``bad`` malformed and ``good`` valid messages, alternating; ``skip`` leaves cases out."""
    cases = [c for c in cases_for(broker) if skip is None or not skip(c)]
    out: list[Raw] = []
    for i in range(max(bad, good)):
        if i < bad:
            out.append(malformed(i, cases))
        if i < good:
            out.append(valid(f"valid-{i}"))
    return out


def find_marker(*parts: Any) -> str | None:
    """The first ``bad-N``/``valid-N`` marker in ``parts`` (any objects, via repr)."""
    for part in parts:
        text = part.decode("utf-8", "replace") if isinstance(part, bytes) else repr(part)
        found = MARKER.search(text)
        if found:
            return found.group(0)
    return None


# -- raw publishing ------------------------------------------------------------------------
def publish_raw(broker: str, url: str, messages: list[Raw], queue: str = QUEUE) -> None:
    """Put ``messages`` on ``url``'s wire without any client library's checks."""
    if broker == "redis":
        import redis

        client = redis.Redis.from_url(url)
        try:
            for start in range(0, len(messages), 200):
                client.lpush(queue, *[m.envelope(queue) for m in messages[start:start + 200]])
        finally:
            client.close()
    elif broker == "sqlite":
        import sqlite3

        with sqlite3.connect(url.split("sqlite:///", 1)[1], timeout=60) as conn:
            conn.executemany("INSERT INTO messages (queue, priority, not_before, envelope, "
                             "published_at) VALUES (?, 0, NULL, ?, ?)",
                             [(queue, m.envelope(queue), time.time()) for m in messages])
    elif broker == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.cursor().executemany(
                "INSERT INTO celeriac.messages (queue, priority, envelope) VALUES (%s, 0, %s)",
                [(queue, m.envelope(queue)) for m in messages])
            conn.execute("SELECT pg_notify(celeriac.channel('q', %s), '')", (queue,))
    elif broker == "amqp":
        _publish_amqp(url, messages, queue)
    else:
        raise ValueError(f"no raw publisher for {broker}")


def _publish_amqp(url: str, messages: list[Raw], queue: str) -> None:
    import amqp

    hostport = url.split("@", 1)[1].split("/", 1)[0]
    conn = amqp.Connection(host=hostport, userid="guest", password="guest", virtual_host="/")
    conn.connect()
    try:
        channel = conn.channel()
        for raw in messages:
            props: dict[str, Any] = {"delivery_mode": 2}
            if isinstance(raw.properties, dict):
                props.update({k: v for k, v in raw.properties.items()
                              if k in ("correlation_id", "reply_to", "priority")})
            body = raw.body_bytes()
            channel.basic_publish(
                amqp.Message(body, content_type=raw.content_type,
                             content_encoding=raw.content_encoding,
                             application_headers=raw.headers, **props),
                exchange="", routing_key=queue)
    finally:
        conn.close()
