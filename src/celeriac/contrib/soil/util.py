"""soil's ``util`` module: exposing a task's output as a cached download, and the
polling context a page shows.

``expose_cached_download(payload, expiry, file_extension)`` is seed 000's call: it
stores ``payload`` (bytes or text) in the app's result store for ``expiry``
seconds (:mod:`celeriac.results.downloads`) and returns a
:class:`~celeriac.contrib.soil.CachedDownload` whose ``download_id`` fetches it.
Inside a task run the download records that task, so it can be polled by
download id too.
"""

from __future__ import annotations

import mimetypes
import re
from typing import Any

from ... import states
from ...app import state as _state
from ...results.downloads import get_download, result_store, save_download
from . import CachedDownload
from .progress import error_messages

_FILENAME = re.compile(r'filename\*?=(?:UTF-8\'\')?"?([^";]+)"?', re.IGNORECASE)


def expose_cached_download(payload: bytes | str, expiry: float, file_extension: str | None,
                           mimetype: str | None = None,
                           content_disposition: str | None = None,
                           download_id: str | None = None, extras: dict[str, Any] | None = None,
                           owner_ids: Any = None) -> CachedDownload:
    """Store ``payload`` for ``expiry`` seconds; return the download (``.download_id``)."""
    app = _state.get_current_app()
    task = _state.get_current_task()
    task_id = task.request.id if task is not None else None
    extension = (file_extension or "").lstrip(".")
    filename = _filename_of(content_disposition)
    if filename is None and extension:
        filename = f"download.{extension}"
    if mimetype is None:
        guessed = mimetypes.guess_type(f"x.{extension}")[0] if extension else None
        mimetype = guessed or ("text/plain; charset=utf-8" if isinstance(payload, str)
                               else "application/octet-stream")
    download = save_download(result_store(app), payload, expires=float(expiry),
                             content_type=mimetype, filename=filename,
                             download_id=download_id, task_id=task_id,
                             owner_ids=owner_ids, extras=extras)
    return CachedDownload(download)


def _filename_of(content_disposition: str | None) -> str | None:
    if not content_disposition:
        return None
    match = _FILENAME.search(content_disposition)
    return match.group(1) if match else None


def get_download_context(download_id: str, app: Any = None) -> dict[str, Any]:
    """What a polling page needs: ``is_ready`` (the file is there), ``is_alive``
    (the download exists), ``state``, ``progress`` (``current``, ``total``,
    ``percent``), ``failed``/``errors`` and the file's name and type."""
    app = app or _state.get_current_app()
    found = get_download(result_store(app), download_id)
    context: dict[str, Any] = {"download_id": download_id, "is_alive": found is not None,
                               "is_ready": bool(found and found.ready), "task_id": None,
                               "state": None, "progress": None, "failed": False,
                               "errors": [], "filename": None, "content_type": None,
                               "expires_at": None}
    if found is None:
        return context
    context.update(task_id=found.task_id, filename=found.filename,
                   content_type=found.content_type, expires_at=found.expires_at)
    if found.task_id is not None:
        result = app.AsyncResult(found.task_id)
        context["state"] = result.state
        context["progress"] = result.progress
        if result.state == states.FAILURE:
            context["failed"] = True
            context["errors"] = error_messages(result)
    if found.ready:
        context["progress"] = {"current": 100, "total": 100, "percent": 100.0}
    return context
