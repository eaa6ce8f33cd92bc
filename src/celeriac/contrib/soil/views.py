"""What the download views answer, without a web framework (Django and Pyramid wrap it).

``poll(download_id, owner)`` -> ``(HTTP status, JSON body)``: 200 with
:func:`~celeriac.contrib.soil.util.get_download_context` plus ``download_url`` once
the file is there; 404 for an unknown or expired id; 403 when the download names
its owners and ``owner`` is not one of them. ``fetch(download_id, owner)`` ->
``(status, Download or JSON body)``: 200 with the stored download, 404, 403, or
409 while the file is not there yet. Files are served as attachments, never
cached by proxies (``Cache-Control: private, no-store``), with an ``Expires``
header at the download's expiry.
"""

from __future__ import annotations

from email.utils import formatdate
from typing import Any

from ...app import state as _state
from ...results.downloads import Download, get_download, result_store
from .util import get_download_context


def poll(download_id: str, owner: Any = None, *, app: Any = None,
         file_url: str | None = None) -> tuple[int, dict[str, Any]]:
    app = app or _state.get_current_app()
    found = get_download(result_store(app), download_id)
    if found is None:
        return 404, {"download_id": download_id, "error": "unknown or expired download"}
    if not found.allowed(owner):
        return 403, {"download_id": download_id, "error": "not yours"}
    context = get_download_context(download_id, app)
    context["download_url"] = file_url if context["is_ready"] else None
    return 200, context


def fetch(download_id: str, owner: Any = None, *, app: Any = None
          ) -> tuple[int, Download | dict[str, Any]]:
    app = app or _state.get_current_app()
    found = get_download(result_store(app), download_id)
    if found is None:
        return 404, {"download_id": download_id, "error": "unknown or expired download"}
    if not found.allowed(owner):
        return 403, {"download_id": download_id, "error": "not yours"}
    if not found.ready:
        return 409, {"download_id": download_id, "error": "not ready yet"}
    return 200, found


def file_headers(download: Download) -> dict[str, str]:
    """Headers of a served file: attachment with its name, no caching, its expiry."""
    name = (download.filename or f"{download.download_id}").replace('"', "")
    headers = {"Content-Disposition": f'attachment; filename="{name}"',
               "Cache-Control": "private, no-store",
               "X-Content-Type-Options": "nosniff"}
    if download.expires_at is not None:
        headers["Expires"] = formatdate(download.expires_at, usegmt=True)
    return headers
