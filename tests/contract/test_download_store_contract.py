"""Downloads (``celeriac.results.downloads``) on every result store: stored with their
content type and file name, found by id, linked to a task before the payload, expiring."""

from __future__ import annotations

import time

import pytest

from celeriac.results.downloads import (
    delete_download,
    get_download,
    link_download,
    save_download,
)
from celeriac.results.store import ResultStore


def test_a_download_round_trips(result_store: ResultStore) -> None:
    payload = bytes(range(256)) * 40
    saved = save_download(result_store, payload, expires=60, content_type="text/csv",
                          filename="report.csv", extras={"rows": 3})
    found = get_download(result_store, saved.download_id)
    assert found is not None and found.ready
    assert found.payload == payload
    assert (found.content_type, found.filename, found.extras) == ("text/csv", "report.csv",
                                                                  {"rows": 3})
    assert found.expires_at is not None and found.expires_at > time.time() + 50
    assert get_download(result_store, "0" * 32) is None
    delete_download(result_store, saved.download_id)
    assert get_download(result_store, saved.download_id) is None


def test_a_linked_download_keeps_its_task_and_owners(result_store: ResultStore) -> None:
    pending = link_download(result_store, "d" * 32, "task-1", expires=60, owner_ids=[7])
    assert not pending.ready
    found = get_download(result_store, "d" * 32)
    assert found is not None and found.task_id == "task-1" and not found.ready
    save_download(result_store, "done", download_id="d" * 32, expires=60)
    done = get_download(result_store, "d" * 32)
    assert done is not None and done.payload == b"done"
    assert done.task_id == "task-1" and done.owner_ids == ("7",)
    assert done.allowed(7) and not done.allowed(8)
    assert done.content_type.startswith("text/plain")


def test_a_download_expires(result_store: ResultStore) -> None:
    saved = save_download(result_store, b"soon gone", expires=1)
    assert get_download(result_store, saved.download_id) is not None
    time.sleep(1.3)
    assert get_download(result_store, saved.download_id) is None


def test_bad_ids_and_expiries_are_refused(result_store: ResultStore) -> None:
    assert get_download(result_store, "../etc/passwd") is None
    with pytest.raises(ValueError, match="expires"):
        save_download(result_store, b"x", expires=0)
