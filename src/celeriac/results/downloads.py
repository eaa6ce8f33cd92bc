"""Expiring downloads in the result store: a task's output file, fetched by download id.

A :class:`Download` is one record in the app's result store (every store: memory,
SQLite, Redis, PostgreSQL, Django's database and cache), under the store's own key
``celeriac-download-<id>`` with the store's expiry, so it disappears by itself. It
holds the payload (bytes, base64 in the record), its content type and file name,
and the id of the task that builds it. A record may exist before its payload: a
view that starts a task saves the pair ``download id -> task id``
(:func:`link_download`) so a client can poll progress by download id; the task
then stores the payload under the same id (:func:`save_download`,
``Task.save_download``, soil's ``expose_cached_download``).

The download id is a random 128-bit value: whoever holds it can fetch the file,
nobody can guess it. ``owner_ids`` optionally names who may (checked by the view
helpers in ``celeriac.contrib.soil``).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import ImproperlyConfigured
from ..results.store import ResultStore

KEY_PREFIX = "celeriac-download-"
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Download:
    """One stored download (``payload`` is None until the task exposed it)."""

    download_id: str
    payload: bytes | None = None
    content_type: str = DEFAULT_CONTENT_TYPE
    filename: str | None = None
    task_id: str | None = None
    expires_at: float | None = None
    owner_ids: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.payload is not None

    def allowed(self, owner: Any) -> bool:
        """Whether ``owner`` (a user id) may fetch it: anyone holding the id, unless
        ``owner_ids`` names who may."""
        return not self.owner_ids or str(owner) in self.owner_ids


def result_store(app: Any) -> ResultStore:
    """``app``'s result store, where downloads live; a clear error without one."""
    store: ResultStore | None = app.backend
    if store is None:
        raise ImproperlyConfigured("downloads are kept in the result store; set "
                                   "result_backend")
    return store


def new_download_id() -> str:
    return uuid.uuid4().hex


def _key(store: ResultStore, download_id: str) -> str:
    if not download_id or any(c in download_id for c in "\r\n\0 /"):
        raise ValueError(f"not a download id: {download_id!r}")
    return store.own_key(KEY_PREFIX + download_id)


def _write(store: ResultStore, download: Download, expires: float | None) -> Download:
    record = {"download_id": download.download_id, "content_type": download.content_type,
              "filename": download.filename, "task_id": download.task_id,
              "expires_at": download.expires_at, "owner_ids": list(download.owner_ids),
              "extras": download.extras,
              "payload": None if download.payload is None
              else base64.b64encode(download.payload).decode("ascii")}
    store._set_raw(_key(store, download.download_id), json.dumps(record), expires)
    return download


def get_download(store: ResultStore, download_id: str) -> Download | None:
    """The live download ``download_id``, or None (never stored, or expired)."""
    try:
        raw = store._get_raw(_key(store, download_id))
    except ValueError:
        return None
    if raw is None:
        return None
    record = json.loads(raw)
    expires_at = record.get("expires_at")
    if expires_at is not None and expires_at <= time.time():
        return None
    payload = record.get("payload")
    return Download(download_id=str(record["download_id"]),
                    payload=None if payload is None else base64.b64decode(payload),
                    content_type=str(record.get("content_type") or DEFAULT_CONTENT_TYPE),
                    filename=record.get("filename"), task_id=record.get("task_id"),
                    expires_at=expires_at, owner_ids=tuple(record.get("owner_ids") or ()),
                    extras=dict(record.get("extras") or {}))


def link_download(store: ResultStore, download_id: str, task_id: str, *,
                  expires: float = 3600.0, owner_ids: Iterable[Any] = ()) -> Download:
    """Record that task ``task_id`` builds download ``download_id`` (no payload yet), so
    a client can poll it by download id."""
    found = get_download(store, download_id)
    if found is not None and found.ready:
        return found
    return _write(store, Download(download_id, task_id=task_id,
                                  expires_at=time.time() + float(expires),
                                  owner_ids=tuple(str(o) for o in owner_ids)), expires)


def save_download(store: ResultStore, payload: bytes | str, *, expires: float = 3600.0,
                  content_type: str | None = None, filename: str | None = None,
                  download_id: str | None = None, task_id: str | None = None,
                  owner_ids: Iterable[Any] | None = None,
                  extras: Mapping[str, Any] | None = None) -> Download:
    """Store ``payload`` for ``expires`` seconds; return the download (its
    ``download_id`` is what a client fetches it by). A download already linked to a
    task keeps that task id and owners."""
    if float(expires) <= 0:
        raise ValueError(f"a download needs expires > 0 seconds, not {expires!r}")
    data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    download_id = download_id or new_download_id()
    linked = get_download(store, download_id)
    if content_type is None:
        content_type = "text/plain; charset=utf-8" if isinstance(payload, str) \
            else DEFAULT_CONTENT_TYPE
    owners = tuple(str(o) for o in owner_ids) if owner_ids is not None else (
        linked.owner_ids if linked is not None else ())
    return _write(store, Download(
        download_id, payload=data, content_type=content_type, filename=filename,
        task_id=task_id or (linked.task_id if linked is not None else None),
        expires_at=time.time() + float(expires), owner_ids=owners,
        extras=dict(extras or {})), expires)


def delete_download(store: ResultStore, download_id: str) -> None:
    store._delete_raw(_key(store, download_id))
