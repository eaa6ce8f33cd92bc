"""Seed 000's soil download on a real worker, served by the Django helpers: a client
polls progress 0 -> 50 -> 100 by download id while the task runs, then gets the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from djangosite import Site, wait_until

START = """
import json
from celeriac.contrib.soil import DownloadBase
from shop.tasks import build_report
download = DownloadBase()
download.set_task(build_report.delay(download.download_id, {gate!r}))
print(json.dumps(download.download_id))
"""

GET = """
import json
from django.test import Client
response = Client().get({url!r})
body = response.json() if response["Content-Type"] == "application/json" else None
print(json.dumps([response.status_code, body, response.content.decode(),
                  dict(response.headers)]))
"""


def get(site: Site, url: str) -> tuple[int, Any, str, dict[str, str]]:
    status, body, content, headers = site.result(GET.format(url=url))
    return status, body, content, headers


def percent(site: Site, download_id: str) -> float | None:
    status, body, _, _ = get(site, f"/downloads/{download_id}/")
    assert status == 200, body
    return (body["progress"] or {}).get("percent")


def test_download_progress_then_file(sqlite_site: Site, tmp_path: Path) -> None:
    site = sqlite_site
    with site.running_worker("-P", "threads", "-c", "2"):
        download_id = site.result(START.format(gate=str(tmp_path)))
        wait_until(lambda: percent(site, download_id) == 0.0, timeout=60, interval=0.2)
        status, body, _, _ = get(site, f"/downloads/{download_id}/")
        assert body["state"] == "PROGRESS" and body["is_ready"] is False
        assert body["download_url"] is None
        assert get(site, f"/downloads/{download_id}/file")[0] == 409
        (tmp_path / "go-50").touch()
        wait_until(lambda: percent(site, download_id) == 50.0, timeout=60, interval=0.2)
        (tmp_path / "go-100").touch()
        wait_until(lambda: get(site, f"/downloads/{download_id}/")[1]["is_ready"],
                   timeout=60, interval=0.2)
    status, body, _, _ = get(site, f"/downloads/{download_id}/")
    assert body["progress"]["percent"] == 100.0
    assert body["download_url"] == f"/downloads/{download_id}/file"
    status, _, content, headers = get(site, body["download_url"])
    assert status == 200 and content == "id,name\n1,ada\n"
    assert headers["Content-Type"] == "text/csv"
    assert headers["Content-Disposition"] == 'attachment; filename="download.csv"'
    assert headers["Cache-Control"] == "private, no-store"
    assert get(site, f"/downloads/{'0' * 32}/")[0] == 404
