"""The RabbitMQ plain lane's envelope (:mod:`celeriac.brokers.amqp.plain`) without a server.

An envelope filled with a call's values renders the bytes the normal path
renders for that call (:func:`celeriac.brokers.amqp.frames.encode_properties`
of :func:`celeriac.brokers.amqp.wire.encode`); a call's text is read back as
``json.loads`` reads it; a variable part inside a nested header gets no envelope.
"""

from __future__ import annotations

import json
from binascii import b2a_base64

import pytest

pytest.importorskip("amqp")

from celeriac.brokers.amqp import frames, plain, wire
from celeriac.messages import Message, task_message


def call(task_id: str, tag: str, args: tuple[object, ...], **headers: object) -> Message:
    message = task_message("t.echo", task_id, args, {}, **headers)  # type: ignore[arg-type]
    return message.with_properties(delivery_tag=tag)


def rendered(message: Message, values: list[str]) -> bytes:
    """What the envelope of ``message`` renders for a call with ``values``."""
    envelope, text = plain.render(message, wire.encode(message, 3), ("", "q"), ("q",))
    assert envelope is not None
    assert plain.parse(text)[plain.ID] == message.task_id
    body = frames.content_frames(1, b"", b"", 4096)
    head = envelope.content(1, [v.encode("utf-8", "surrogatepass") for v in values], b"", 4096)
    return head[len(body) - 1:]  # the properties (and the frame end), after the header


@pytest.mark.parametrize("args", [(), (1, "two"), ('quote " \\ ☃ \x00 \u2028' * 20,)])
def test_a_filled_envelope_renders_what_the_normal_path_renders(args: tuple[object, ...]) -> None:
    template = call("\x00id\x00", "\x00tag\x00", (), argsrepr="\x00a\x00", kwargsrepr="\x00k\x00")
    real = call("7d1c-id" * 3, "tag-0001" * 4, args, argsrepr=repr(args), kwargsrepr="{}")
    values = [real.task_id, real.properties["delivery_tag"], "", repr(args), "{}"]
    expected = frames.encode_properties(wire.encode(real, 3).properties) + b"\xce"
    assert rendered(template, values) == expected


def test_a_call_text_reads_as_json_reads_it() -> None:
    for values in (["id", "tag", "Ym9keQ==", "()", "{}"],
                   ["i\\d", 'a", "b', "", "('é',)", "{'k': \"v\"}"],
                   ["", "", "", "", ""]):
        text = json.dumps(values)
        assert plain.parse(text) == json.loads(text) == values
    with pytest.raises(ValueError, match="plain call"):
        plain.parse('["only", "four", "of", "them"]')


def test_a_variable_part_inside_a_nested_header_gets_no_envelope() -> None:
    template = call("\x00id-marker\x00", "\x00tag-marker\x00", (), argsrepr="\x00args-m\x00",
                    kwargsrepr="\x00kwargs-m\x00")
    nested = Message(headers={**template.headers, "stamps": {"origin": "\x00id-marker\x00"}},
                     properties=template.properties, body=template.body)
    assert plain.render(nested, wire.encode(nested, 0), ("", "q"), ("q",)) == (None, "")
    envelope, text = plain.render(template, wire.encode(template, 0), ("", "q"), ("q",))
    assert envelope is not None
    assert plain.parse(text)[plain.BODY] == b2a_base64(template.body, newline=False).decode()
