"""CommCare HQ's "soil" on celeriac: progress and cached downloads backed by tasks.

Seed 000's examples run with only the import changed::

    from celeriac.contrib.soil import DownloadBase            # was: from soil import ...
    from celeriac.contrib.soil.progress import update_task_state
    from celeriac.contrib.soil.util import expose_cached_download

* :meth:`DownloadBase.set_progress` ``(task, current, total)`` stores the task's
  state ``PROGRESS`` with meta ``{"current": ..., "total": ...}`` (as soil does;
  outside a task run it does nothing, as soil's does);
* :func:`~celeriac.contrib.soil.progress.update_task_state` ``(task, state, meta)``
  stores any state (Option 1 of the seed: ``FAILURE`` with ``{"errors": [...]}``
  then ``raise Ignore()``);
* :func:`~celeriac.contrib.soil.util.expose_cached_download` stores the payload in
  the result store (:mod:`celeriac.results.downloads`) for ``expiry`` seconds and
  returns a :class:`CachedDownload` whose ``download_id`` fetches it.

A view starts the task with a :class:`DownloadBase` (``download.set_task(
my_task.delay(download.download_id))``) and answers with the download id; the
client polls it with the Django (:mod:`.django_views`) or Pyramid
(:mod:`.pyramid_views`) helpers, which return the progress JSON and serve the
file once it is there. Importing this package imports no web framework.
"""

from __future__ import annotations

from typing import Any

from ...app import state as _state
from ...results.downloads import (
    DEFAULT_CONTENT_TYPE,
    Download,
    get_download,
    link_download,
    new_download_id,
    result_store,
)
from .progress import get_task_progress, set_task_progress

__all__ = ["CachedDownload", "DownloadBase"]


class DownloadBase:
    """A download in the making: its id, and the task that builds it."""

    def __init__(self, mimetype: str = DEFAULT_CONTENT_TYPE,
                 content_disposition: str | None = None, download_id: str | None = None,
                 message: str | None = None, suffix: str | None = None,
                 owner_ids: Any = None, **extras: Any) -> None:
        self.mimetype = mimetype
        self.content_disposition = content_disposition
        self.download_id = download_id or new_download_id()
        self.message = message
        self.suffix = suffix
        self.owner_ids = tuple(str(o) for o in owner_ids or ())
        self.extras = extras
        self.task_id: str | None = None

    @classmethod
    def set_progress(cls, task: Any, current: float, total: float) -> None:
        """The running ``task``'s state becomes ``PROGRESS`` with ``current``/``total``."""
        set_task_progress(task, current, total)

    def set_task(self, task: Any, expires: float = 3600.0) -> None:
        """Link the task building this download (an ``AsyncResult`` or a task id), so
        the download can be polled by its id."""
        self.task_id = str(getattr(task, "id", task))
        link_download(result_store(_state.get_current_app()), self.download_id, self.task_id,
                      expires=expires, owner_ids=self.owner_ids)

    def get_task(self) -> Any:
        """The ``AsyncResult`` of the task building this download, or None."""
        task_id = self.task_id
        if task_id is None:
            found = get_download(result_store(_state.get_current_app()), self.download_id)
            task_id = found.task_id if found is not None else None
        return None if task_id is None else _state.get_current_app().AsyncResult(task_id)

    def get_progress(self) -> dict[str, Any]:
        """soil's progress dict: ``current``, ``total``, ``percent``, ``error``,
        ``error_message``."""
        return get_task_progress(self.get_task())

    @classmethod
    def get(cls, download_id: str) -> CachedDownload | None:
        """The download ``download_id`` (its payload may not be there yet), or None."""
        found = get_download(result_store(_state.get_current_app()), download_id)
        return None if found is None else CachedDownload.from_download(found)


class CachedDownload(DownloadBase):
    """A download stored in the result store (soil's ``CachedDownload``)."""

    def __init__(self, download: Download) -> None:
        super().__init__(mimetype=download.content_type, download_id=download.download_id,
                         owner_ids=download.owner_ids, **download.extras)
        self.download = download
        self.task_id = download.task_id
        self.filename = download.filename
        if download.filename:
            self.content_disposition = f'attachment; filename="{download.filename}"'

    @classmethod
    def from_download(cls, download: Download) -> CachedDownload:
        return cls(download)

    @property
    def payload(self) -> bytes | None:
        return self.download.payload

    def get_content(self) -> bytes | None:
        return self.download.payload
