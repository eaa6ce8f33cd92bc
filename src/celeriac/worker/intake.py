"""Opening a delivery into a request: size, seal and decoding checks, each refusal named.

:meth:`Intake.open` is the first thing the worker does with a message. Nothing of the
body is decoded before its size (``task_message_max_size``; measured only when the
envelope the broker read is not small enough to bound it) and, under
``security_seal``, its signature, replay window and encryption are checked; then the
message is validated once into its :class:`~celeriac.app.request.Request`. A message
that cannot run as written raises :class:`Refusal` with the dead-letter reason and a
detail naming the field, which the job runner dead-letters on the first delivery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import serialization
from ..app.request import Request, parse_request
from ..brokers import base
from ..exceptions import ContentDisallowed, DecodeError, MessageTooLarge, SecurityError
from ..message_size import check_size
from ..messages import Message
from ..security.seal import Replayed, Unsigned
from ..security.setup import security_of

if TYPE_CHECKING:
    from ..app.base import Celery


class Refusal(Exception):
    """A message that must be dead-lettered: ``reason`` (a ``brokers.base`` constant),
    ``detail``, the sealed message's ``nonce`` (if it was opened) and, for content and
    decoding errors, the error Celery reports through ``task_rejected``."""

    def __init__(self, reason: str, detail: str, nonce: str | None = None,
                 rejected: BaseException | None = None, message: Message | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.nonce = reason, detail, nonce
        self.rejected, self.message = rejected, message


class Intake:
    """The checks of one worker's settings (accepted content, size limit, security)."""

    def __init__(self, app: Celery, hostname: str) -> None:
        self.hostname = hostname
        self.accept = serialization.accepted_types(app.conf.accept_content)
        #: signed messages required (accept_content=['auth']): others are dead-lettered
        #: as ``unsigned``
        self.signed = self.accept == {serialization.AUTH_NAMES[1]}
        self.max_size = app.conf.task_message_max_size or None
        #: security_seal: every message is opened (verified, replay-checked, decrypted)
        self.security = security_of(app)
        self.sealer = self.security.sealer if self.security is not None else None

    def open(self, delivery: base.Delivery) -> tuple[Message, str | None, Request]:
        """The (opened) message, its seal's nonce and its request; or raise Refusal."""
        message, nonce = delivery.message, None
        try:
            check_size(message, self.max_size, envelope=delivery.envelope_size)
            if self.sealer is not None:
                opened = self.sealer.open(message, self.security.guard(),  # type: ignore[union-attr]
                                          delivery.redelivered)
                message, nonce = opened.message, opened.nonce
            request = parse_request(message, self.accept, delivery=delivery,
                                    hostname=self.hostname, max_size=self.max_size)
        except MessageTooLarge as exc:
            raise Refusal(base.OVERSIZED, str(exc)) from exc
        except SecurityError as exc:
            reason = (base.UNSIGNED if isinstance(exc, Unsigned) else base.REPLAYED
                      if isinstance(exc, Replayed) else base.BAD_SIGNATURE)
            raise Refusal(reason, str(exc)) from exc
        except ContentDisallowed as exc:  # Celery: on_invalid_task
            if self.signed and message.content_type not in self.accept:
                raise Refusal(base.UNSIGNED, f"content type {message.content_type!r}: only "
                              f"signed messages are accepted ({exc})",
                              rejected=exc, message=message) from exc
            raise Refusal(base.CONTENT_DISALLOWED, str(exc), nonce, exc, message) from exc
        except DecodeError as exc:
            raise Refusal(base.DECODE_ERROR, str(exc), nonce, exc, message) from exc
        return message, nonce, request
