"""Serializers: Celery/kombu-compatible tagged JSON, and pickle only when allowed.

JSON tags non-JSON types exactly as kombu >= 5.3 does, so values cross between
Celery and celeriac unchanged::

    datetime -> {"__type__": "datetime", "__value__": "2024-01-02T03:04:05+00:00"}
    date, time, decimal -> the same shape with their own marker
    UUID     -> {"__type__": "uuid", "__value__": {"hex": "..."}}
    bytes    -> {"__type__": "bytes", "__value__": "<utf-8 text>"} or "base64"

``accept_content`` is enforced by :func:`loads`: a content type that is not
listed raises :class:`~celeriac.exceptions.ContentDisallowed`, and so does
one switched off by :func:`disable_insecure_serializers` (what
``app.setup_security()`` does, as kombu's registry does for Celery). The
``auth`` serializer is registered by :mod:`celeriac.security`. Bodies may be
compressed as kombu compresses them (``compression`` header).
"""

from __future__ import annotations

import base64
import bz2
import json
import lzma
import pickle
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from .exceptions import ContentDisallowed, DecodeError, EncodeError, MessageTooLarge, SecurityError

JSON = "application/json"
PICKLE = "application/x-python-serialize"


def _tag(marker: str, value: Any) -> dict[str, Any]:
    return {"__type__": marker, "__value__": value}


def _json_default(o: Any) -> Any:
    reducer = getattr(o, "__json__", None)
    if reducer is not None:
        return reducer()
    if isinstance(o, datetime):
        return _tag("datetime", o.isoformat())
    if isinstance(o, date):
        return _tag("date", o.isoformat())
    if isinstance(o, time):
        return _tag("time", o.isoformat())
    if isinstance(o, Decimal):
        return _tag("decimal", str(o))
    if isinstance(o, uuid.UUID):
        return _tag("uuid", {"hex": o.hex})
    if isinstance(o, (bytes, bytearray)):
        try:
            return _tag("bytes", bytes(o).decode("utf-8"))
        except UnicodeDecodeError:
            return _tag("base64", base64.b64encode(bytes(o)).decode("ascii"))
    if isinstance(o, (set, frozenset)):
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")
    if hasattr(o, "__str__") and type(o).__module__.startswith("django.utils.functional"):
        return str(o)
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "decimal": Decimal,
    "uuid": lambda v: uuid.UUID(hex=v["hex"]),
    "bytes": lambda v: v.encode("utf-8"),
    "base64": lambda v: base64.b64decode(v),
}


def _json_hook(obj: dict[str, Any]) -> Any:
    marker = obj.get("__type__")
    if marker is not None and "__value__" in obj and len(obj) == 2:
        decoder = _DECODERS.get(marker)
        if decoder is not None:
            try:
                return decoder(obj["__value__"])
            except Exception as exc:  # {"__type__": "bytes", "__value__": null} and the like
                raise ValueError(f"bad {marker!r} value {obj['__value__']!r:.40}: "
                                 f"{exc}") from None
    return obj


_encoder = json.JSONEncoder(default=_json_default, ensure_ascii=True)


def _one_shot_encoder() -> Callable[[Any, int], Any] | None:
    """The C encoder ``_encoder.encode`` makes on every call, made once, without the
    circular-reference markers (a shared dict would not be thread-safe); None where it
    does not give ``_encoder``'s exact text (no C accelerator, another signature)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        found = make(None, _encoder.default, json.encoder.encode_basestring_ascii, None,
                     _encoder.key_separator, _encoder.item_separator, False, False, True)
        probe: Any = [1.5, float("inf"), -0.0, 10**20, "é\u2028\n", {"a": (None, True)}, {1: 2}]
        if "".join(found(probe, 0)) != _encoder.encode(probe):
            return None
    except Exception:
        return None
    return found


_fast_encode = _one_shot_encoder()


def json_dumps(value: Any) -> str:
    """Encode ``value`` as tagged JSON text (``_encoder``'s; anything the fast encoder
    cannot take, a circular reference among them, is encoded by ``_encoder`` itself,
    which raises its own errors)."""
    if _fast_encode is not None:
        try:
            return "".join(_fast_encode(value, 0))
        except Exception:  # the same call below raises Python's own error, or succeeds
            pass
    return _encoder.encode(value)


def json_loads(text: str | bytes) -> Any:
    """Decode tagged JSON text. Text with no ``__type__`` key (none spelled out, no
    ``\\u`` escape that could spell one) is decoded without the per-object hook: a
    task's body almost always, and the hook is a Python call for every object (and
    by orjson when installed: :func:`loads_exact`)."""
    if isinstance(text, str):
        plain = "__type__" not in text and "\\u" not in text
    else:
        plain = (b"__type__" not in text and b"\\u" not in text  # UTF-16/32: the hook
                 and b"\x00" not in text[:4] and text[:1] not in (b"\xff", b"\xfe"))
    return loads_exact(text) if plain else json.loads(text, object_hook=_json_hook)


def _optional_orjson() -> Any:
    """orjson when installed (``celeriac[fast]``); the stdlib parser is the fallback."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return orjson


_orjson = _optional_orjson()
#: every ASCII digit to ``0``, every other byte to a space: a run of 19 digits in the
#: text is a run of 19 ``0`` in its translation (found by a plain substring search,
#: many times faster than a regular expression over the whole text)
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_RUN = b"0" * 19


def long_numbers(raw: bytes) -> bool:
    """True when ``raw`` holds a run of 19 or more digits: a number orjson may not keep
    (it reads integers past 64 bits as floats; the stdlib parser, and Celery's, keeps
    them exact)."""
    return _LONG_RUN in raw.translate(_DIGITS)


def loads_exact(text: str | bytes) -> Any:
    """``json.loads(text)``, by orjson when installed and the result is the same: text
    with a number that may not fit 64 bits (:func:`long_numbers`), or that orjson
    refuses (``NaN``, a lone surrogate, a byte order mark), is the stdlib's."""
    if _orjson is not None:
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        if not long_numbers(raw):
            try:
                return _orjson.loads(raw)
            except _orjson.JSONDecodeError:
                pass  # not strict JSON for orjson: the stdlib decides
    return json.loads(text)


@dataclass(frozen=True)
class Serializer:
    """One registered serializer: its name, content type, encoding and functions."""

    name: str
    content_type: str
    content_encoding: str
    dumps: Callable[[Any], bytes]
    loads: Callable[[bytes], Any]


_SERIALIZERS: dict[str, Serializer] = {}
#: content types no message may be decoded with (see :func:`disable_insecure_serializers`)
_DISABLED: set[str] = set()
#: registered by ``app.setup_security()`` (:mod:`celeriac.security`)
AUTH_NAMES = ("auth", "application/data")


def register(serializer: Serializer) -> None:
    """Register a serializer under its name and content type (and enable it)."""
    _SERIALIZERS[serializer.name] = serializer
    _SERIALIZERS[serializer.content_type] = serializer
    _DISABLED.discard(serializer.content_type)


def disable_insecure_serializers(allowed: Iterable[str] | None = ("json",)) -> None:
    """Switch off decoding with every registered serializer but ``allowed`` (kombu's
    function of that name); ``None`` switches all of them off."""
    keep = accepted_types(allowed or ())
    _DISABLED.clear()
    _DISABLED.update(s.content_type for s in _SERIALIZERS.values()
                     if s.content_type not in keep)


def enable_all_serializers() -> None:
    """Undo :func:`disable_insecure_serializers`."""
    _DISABLED.clear()


#: the ``json`` serializer as shipped (a project may register its own under that name)
STOCK_JSON = Serializer("json", JSON, "utf-8", lambda v: json_dumps(v).encode("utf-8"),
                        json_loads)
register(STOCK_JSON)


def stock_json() -> bool:
    """True while ``json`` is :data:`STOCK_JSON` (its text is :func:`json_dumps`'s)."""
    return _SERIALIZERS.get("json") is STOCK_JSON
register(
    Serializer(
        "pickle",
        PICKLE,
        "binary",
        lambda v: pickle.dumps(v, protocol=4),
        pickle.loads,
    )
)


def get_serializer(name_or_type: str) -> Serializer:
    """Look up a serializer by name (``json``) or content type (``application/json``)."""
    try:
        return _SERIALIZERS[name_or_type]
    except KeyError:
        if name_or_type in AUTH_NAMES:
            raise ContentDisallowed("the 'auth' serializer needs app.setup_security() (or the "
                                    "security_* settings in a worker) first") from None
        raise ContentDisallowed(f"unknown serializer or content type {name_or_type!r}") from None


def accepted_types(accept_content: Iterable[str]) -> frozenset[str]:
    """Turn an ``accept_content`` list (names or content types) into content types."""
    types = set()
    for item in accept_content:
        if item in _SERIALIZERS:
            types.add(_SERIALIZERS[item].content_type)
        else:
            types.add(item)
    return frozenset(types)


def dumps(value: Any, serializer: str = "json") -> tuple[bytes, str, str]:
    """Serialize ``value``; return ``(payload, content_type, content_encoding)``."""
    s = get_serializer(serializer)
    try:
        return s.dumps(value), s.content_type, s.content_encoding
    except EncodeError:
        raise
    except Exception as exc:  # kombu raises EncodeError for what the serializer refuses
        raise EncodeError(f"cannot serialize with {s.name}: {exc}") from exc


def loads(payload: bytes | str, content_type: str, accept: frozenset[str] | None) -> Any:
    """Deserialize ``payload`` of ``content_type``, refusing types not in ``accept``."""
    content_type = content_type or JSON
    if accept is not None and content_type not in accept:
        raise ContentDisallowed(f"refusing to deserialize content of type {content_type}")
    if content_type in _DISABLED:
        raise ContentDisallowed(f"refusing to deserialize content of type {content_type}: "
                                f"disabled by setup_security(allowed_serializers=...)")
    s = get_serializer(content_type)
    data = payload.encode("utf-8") if isinstance(payload, str) and s.name != "json" else payload
    try:
        return s.loads(data)  # type: ignore[arg-type]
    except (SecurityError, ContentDisallowed, DecodeError):
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decode {content_type} payload: {exc}") from exc


# -- compression (kombu's content types, so Celery's compressed messages decode) ----------
#: Decompressed bodies larger than this are refused (a compressed "bomb" cannot exhaust memory).
MAX_DECOMPRESSED = 256 * 1024 * 1024
_ALIASES = {"gzip": "application/x-gzip", "zlib": "application/x-gzip",
            "bzip2": "application/x-bz2", "bzip": "application/x-bz2",
            "lzma": "application/x-lzma", "xz": "application/x-lzma"}
_COMPRESSORS: dict[str, tuple[Callable[[bytes], bytes], Callable[[], Any]]] = {
    "application/x-gzip": (zlib.compress, zlib.decompressobj),
    "application/x-bz2": (bz2.compress, bz2.BZ2Decompressor),
    "application/x-lzma": (lzma.compress, lzma.LZMADecompressor),
}


def compression_type(method: str) -> str:
    """``gzip``/``zlib``/``bzip2``/``lzma`` (or a content type) -> kombu's content type."""
    content_type = _ALIASES.get(method, method)
    if content_type not in _COMPRESSORS:
        raise ContentDisallowed(f"unknown compression {method!r}")
    return content_type


def compress(body: bytes, method: str) -> tuple[bytes, str]:
    """Compress ``body`` as kombu does; return ``(body, content type for the header)``."""
    content_type = compression_type(method)
    return _COMPRESSORS[content_type][0](body), content_type


def decompress(body: bytes, content_type: str, limit: int = MAX_DECOMPRESSED) -> bytes:
    """Undo :func:`compress`; raise DecodeError on garbage or past ``limit`` bytes."""
    try:
        decompressor = _COMPRESSORS[compression_type(content_type)][1]()
        out = decompressor.decompress(body, limit + 1)
    except ContentDisallowed:
        raise
    except Exception as exc:
        raise DecodeError(f"cannot decompress {content_type} body: {exc}") from exc
    if len(out) > limit:
        raise MessageTooLarge(f"decompressed body exceeds {limit} bytes")
    return bytes(out)
