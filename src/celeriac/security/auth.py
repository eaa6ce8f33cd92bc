"""Celery's ``auth`` serializer, byte for byte: signed task bodies that Celery 5.7 reads.

The payload (content type ``application/data``, encoding ``utf-8``) is::

    base64( b64(signer) SEP b64(signature) SEP content_type SEP content_encoding SEP body )

with ``SEP = b"\\x00\\x01"``, ``signer`` the signing certificate's id (see
:mod:`.keys`) and ``signature`` RSA-PSS over the inner serialized ``body``
only. The receiver looks the signer up in its certificate store and checks
the signature *before* decoding the body, so nothing from an unsigned or
tampered body is decoded. Then the inner body is decoded with the
serializers ``setup_security(allowed_serializers=...)`` allows (``json`` by
default); Celery decodes it with any registered serializer (``force=True``).

What this mode does not protect (Celery's design, see docs/security.md): the
message headers (task name, id, eta, retries) are not signed, and a signed
message can be replayed. celeriac's ``sealed`` mode (:mod:`.seal`) covers both.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .. import serialization
from ..exceptions import ContentDisallowed, DecodeError, SecurityError
from .keys import Certificate, CertStore, PrivateKey

#: the content type Celery registers the ``auth`` serializer under
AUTH_CONTENT_TYPE = "application/data"
SEPARATOR = b"\x00\x01"


@dataclass(frozen=True)
class Unpacked:
    """The five fields of an ``auth`` payload."""

    signer: str
    signature: bytes
    content_type: str
    content_encoding: str
    body: bytes


def pack(signer: str, signature: bytes, content_type: str, content_encoding: str,
         body: bytes) -> bytes:
    """Celery's ``SecureSerializer._pack``."""
    fields = SEPARATOR.join([base64.b64encode(signer.encode("utf-8")),
                             base64.b64encode(signature), content_type.encode("utf-8"),
                             content_encoding.encode("utf-8"), body])
    return base64.b64encode(fields)


def unpack(payload: bytes | str) -> Unpacked:
    """Split an ``auth`` payload; DecodeError when it is not one (nothing is verified here)."""
    if isinstance(payload, str):
        payload = payload.encode("ascii", "replace")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("auth payload is not base64") from None
    parts = raw.split(SEPARATOR, 4)
    if len(parts) != 5:
        raise DecodeError(f"auth payload has {len(parts)} fields, expected 5")
    try:
        signer = base64.b64decode(parts[0], validate=True).decode("utf-8")
        signature = base64.b64decode(parts[1], validate=True)
        content_type = parts[2].decode("ascii")
        content_encoding = parts[3].decode("ascii")
    except (binascii.Error, ValueError):
        raise DecodeError("auth payload: malformed signer, signature or content type") from None
    return Unpacked(signer, signature, content_type, content_encoding, parts[4])


class AuthSerializer:
    """Signs with one key/certificate, verifies against a certificate store."""

    def __init__(self, key: PrivateKey | None, cert: Certificate | None,
                 store: CertStore | None, digest: Any, serializer: str = "json",
                 allowed: Iterable[str] = ("json",)) -> None:
        self.key, self.cert, self.store, self.digest = key, cert, store, digest
        self.serializer = serializer
        self.allowed = serialization.accepted_types(allowed)

    def dumps(self, value: Any) -> bytes:
        if self.key is None or self.cert is None:
            raise SecurityError("cannot sign: no security_key/security_certificate")
        body, content_type, encoding = serialization.dumps(value, self.serializer)
        return pack(self.cert.id, self.key.sign(body, self.digest), content_type, encoding,
                    body)

    def verify(self, payload: bytes | str) -> Unpacked:
        """Unpack and check the signature; SecurityError (unknown signer, bad signature)."""
        if self.store is None:
            raise SecurityError("cannot verify: no security_cert_store")
        fields = unpack(payload)
        self.store[fields.signer].verify(fields.body, fields.signature, self.digest)
        return fields

    def loads(self, payload: bytes | str) -> Any:
        fields = self.verify(payload)
        if fields.content_type not in self.allowed:
            raise ContentDisallowed(f"signed body of type {fields.content_type!r} is not "
                                    f"among the allowed serializers")
        return serialization.loads(fields.body, fields.content_type, self.allowed)

    def as_serializer(self) -> serialization.Serializer:
        return serialization.Serializer("auth", AUTH_CONTENT_TYPE, "utf-8", self.dumps,
                                        self.loads)
