"""Sealed messages: celeriac's own signing of headers and body, replay window, encryption.

With ``security_seal = True`` every task message a producer publishes gets a
``celeriac_seal`` header::

    {"v": 1, "kid": "<certificate id>", "ts": <epoch seconds>, "nonce": "<32 hex>",
     "enc": null | "fernet", "ct": <inner content type>, "ce": <inner encoding>,
     "sig": "<base64 RSA-PSS signature>"}

The signature covers, as one canonical JSON document followed by a newline
and the body bytes: every other header (task name, id, eta, expires, retries,
the canvas...), the seal without ``sig``, the ``correlation_id`` and
``reply_to`` properties, the content type and encoding. So a changed header,
a moved body or a changed field fails verification, and the ``kid`` names the
certificate to check with, so keys rotate as with the ``auth`` serializer
(several certificates in the store, one signing key).

With ``security_encryption_keys`` the body is encrypted first (Fernet:
AES-128-CBC and HMAC-SHA256, from ``cryptography``; the first key encrypts,
every key decrypts, so encryption keys rotate too) and the content type
becomes ``application/x-celeriac-encrypted``: task arguments are unreadable in
the broker. The ``argsrepr``/``kwargsrepr`` headers (Celery's readable copy of
the arguments) become ``"<encrypted>"``, their values travel encrypted in the
seal (``reprs``) and are restored by the worker. The signature covers the
ciphertext, so nothing is decrypted before the signature is checked.

:meth:`Sealer.open` is the worker's side: verify, then refuse a message older
than ``security_replay_window`` seconds (counted from its ETA when it has
one) or whose nonce was seen before (:mod:`.replay`), then decrypt.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..exceptions import DecodeError, ImproperlyConfigured, SecurityError
from ..messages import Message, to_timestamp
from .keys import Certificate, CertStore, PrivateKey, read_file

SEAL_HEADER = "celeriac_seal"
ENCRYPTED = "application/x-celeriac-encrypted"
VERSION = 1
#: the argsrepr/kwargsrepr headers of an encrypted message (the originals are in the seal)
HIDDEN = "<encrypted>"


class Unsigned(SecurityError):
    """A message without a seal where one is required."""


class Replayed(SecurityError):
    """A sealed message seen before, or older than the replay window."""


class Guard(Protocol):
    """The store of nonces already seen (see :mod:`.replay`)."""

    def claim(self, nonce: str, ttl: float) -> bool:
        """Record ``nonce`` for ``ttl`` seconds; False when it was already recorded."""

    def forget(self, nonce: str) -> None:
        """Drop ``nonce`` (its message went to the dead-letter store unrun)."""


def load_fernet(value: Any) -> Any:
    """``security_encryption_keys`` -> a MultiFernet: a file of keys (one a line, the first
    encrypts) or a list of keys. ImproperlyConfigured names the setting."""
    from cryptography.fernet import Fernet, MultiFernet

    setting = "security_encryption_keys"
    if isinstance(value, str):
        text = read_file(value, setting).decode("utf-8", "replace")
        keys = [line.strip() for line in text.splitlines()
                if line.strip() and not line.strip().startswith("#")]
        where = f"{setting} ({value})"
    elif isinstance(value, (list, tuple)):
        keys, where = list(value), setting
    else:
        raise ImproperlyConfigured(f"setting {setting}: expected a file path or a list of "
                                   f"Fernet keys, got {type(value).__name__}")
    if not keys:
        raise ImproperlyConfigured(f"setting {where}: no key found")
    try:
        return MultiFernet([Fernet(k) for k in keys])
    except (ValueError, TypeError, binascii.Error):
        raise ImproperlyConfigured(f"setting {where}: not Fernet keys (32 url-safe base64 "
                                   f"bytes each; make one with "
                                   f"cryptography.fernet.Fernet.generate_key())") from None


def signed_bytes(headers: dict[str, Any], seal: dict[str, Any], properties: dict[str, Any],
                 content_type: str, content_encoding: str, body: bytes) -> bytes:
    """What the seal's signature covers (canonical JSON, a newline, the body)."""
    try:
        meta = json.dumps({"headers": {k: v for k, v in headers.items() if k != SEAL_HEADER},
                           "seal": {k: v for k, v in seal.items() if k != "sig"},
                           "correlation_id": properties.get("correlation_id"),
                           "reply_to": properties.get("reply_to"),
                           "content_type": content_type, "content_encoding": content_encoding},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"headers cannot be sealed (not plain JSON): {exc}") from None
    return meta.encode("ascii") + b"\n" + body


@dataclass(frozen=True)
class Opened:
    """A verified, decrypted message and its seal's nonce."""

    message: Message
    nonce: str


class Sealer:
    """Seals messages with one key; opens those sealed by any certificate of the store."""

    def __init__(self, key: PrivateKey, cert: Certificate, store: CertStore, digest: Any,
                 window: float, fernet: Any = None) -> None:
        self.key, self.cert, self.store, self.digest = key, cert, store, digest
        self.window = float(window)
        self.fernet = fernet

    def seal(self, message: Message, now: float | None = None) -> Message:
        headers = {k: v for k, v in message.headers.items() if k != SEAL_HEADER}
        body, content_type, encoding = message.body, message.content_type, \
            message.content_encoding
        seal: dict[str, Any] = {"v": VERSION, "kid": self.cert.id,
                                "ts": round(time.time() if now is None else now, 3),
                                "nonce": uuid.uuid4().hex, "enc": None}
        if self.fernet is not None:  # the argsrepr/kwargsrepr headers are encrypted too
            reprs = json.dumps([headers.get("argsrepr"), headers.get("kwargsrepr")])
            seal.update(enc="fernet", ct=content_type, ce=encoding,
                        reprs=self.fernet.encrypt(reprs.encode("utf-8")).decode("ascii"))
            headers.update(argsrepr=HIDDEN, kwargsrepr=HIDDEN)
            body, content_type, encoding = self.fernet.encrypt(body), ENCRYPTED, "utf-8"
        data = signed_bytes(headers, seal, message.properties, content_type, encoding, body)
        seal["sig"] = base64.b64encode(self.key.sign(data, self.digest)).decode("ascii")
        return Message({**headers, SEAL_HEADER: seal}, message.properties, body, content_type,
                       encoding)

    def verify(self, message: Message) -> dict[str, Any]:
        """Check the seal; return it. Unsigned / SecurityError (nothing is decoded)."""
        seal = message.headers.get(SEAL_HEADER) if isinstance(message.headers, dict) else None
        if seal is None:
            raise Unsigned(f"no {SEAL_HEADER} header: only sealed messages are accepted")
        if not isinstance(seal, dict) or seal.get("v") != VERSION:
            raise SecurityError(f"malformed {SEAL_HEADER} header (or unknown version)")
        kid, sig, ts, nonce = seal.get("kid"), seal.get("sig"), seal.get("ts"), seal.get("nonce")
        if not (isinstance(kid, str) and isinstance(sig, str) and isinstance(nonce, str)
                and nonce and isinstance(ts, (int, float)) and not isinstance(ts, bool)):
            raise SecurityError(f"malformed {SEAL_HEADER} header: kid, sig, ts and nonce "
                                f"are required")
        try:
            signature = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            raise SecurityError(f"malformed {SEAL_HEADER} signature (not base64)") from None
        if not isinstance(message.content_type, str) or not isinstance(
                message.content_encoding, str) or not isinstance(message.properties, dict):
            raise SecurityError("malformed envelope: content type, encoding or properties")
        try:
            data = signed_bytes(message.headers, seal, message.properties,
                                message.content_type, message.content_encoding, message.body)
        except DecodeError as exc:
            raise SecurityError(str(exc)) from None
        self.store[kid].verify(data, signature, self.digest)
        return seal

    def open(self, message: Message, guard: Guard | None, redelivered: bool = False,
             now: float | None = None) -> Opened:
        """Verify, check the replay window and the nonce, decrypt."""
        seal = self.verify(message)
        now = time.time() if now is None else now
        nonce = str(seal["nonce"])
        if self.window > 0:
            since = float(seal["ts"])
            try:
                eta = to_timestamp(message.headers.get("eta"))
            except (TypeError, ValueError):
                eta = None
            if eta is not None and eta > since:
                since = eta
            age = now - since
            if age > self.window:
                raise Replayed(f"sealed {age:.0f}s ago (or after its ETA), more than "
                               f"security_replay_window ({self.window:.0f}s)")
            fresh = guard is None or guard.claim(nonce, self.window + max(0.0, -age))
            if not fresh and not redelivered:  # a redelivery of the same stored message is not
                raise Replayed(f"nonce {nonce} seen before: a replayed message")
        return Opened(self.decrypt(message, seal), nonce)

    def decrypt(self, message: Message, seal: dict[str, Any]) -> Message:
        """The message with its body decrypted (unchanged when not encrypted)."""
        if seal.get("enc") is None:
            return message
        if seal.get("enc") != "fernet" or message.content_type != ENCRYPTED:
            raise SecurityError(f"unknown encryption {seal.get('enc')!r}")
        if self.fernet is None:
            raise SecurityError("encrypted message but no security_encryption_keys here")
        from cryptography.fernet import InvalidToken

        try:
            body = self.fernet.decrypt(message.body)
            argsrepr, kwargsrepr = json.loads(self.fernet.decrypt(str(seal.get("reprs"))))
        except (InvalidToken, TypeError, ValueError):
            raise SecurityError("cannot decrypt the body with any of "
                                "security_encryption_keys") from None
        ct, ce = seal.get("ct"), seal.get("ce")
        if not isinstance(ct, str) or not isinstance(ce, str):
            raise SecurityError(f"malformed {SEAL_HEADER} header: ct/ce")
        headers = {**message.headers, "argsrepr": argsrepr, "kwargsrepr": kwargsrepr}
        return replace(message, headers=headers, body=body, content_type=ct,
                       content_encoding=ce)
