"""RabbitMQ helpers of the test suite: a plain py-amqp connection to a test's vhost
(to declare and look at what the server holds), used by the ``rabbitmq_channel`` and
``amqp_brokers`` fixtures of ``conftest.py`` and by the RabbitMQ tests."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit


def connect(url: str) -> Any:
    """A connected ``amqp.Connection`` to the vhost of ``url`` (guest/guest)."""
    import amqp

    split = urlsplit(url)
    conn = amqp.Connection(f"{split.hostname}:{split.port}", userid="guest",
                           password="guest", virtual_host=unquote(split.path[1:]))
    conn.connect()
    return conn
