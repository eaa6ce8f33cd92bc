"""Pyramid views for soil downloads: progress JSON to poll, then the file.

``config.include("celeriac.contrib.soil.pyramid_views")`` adds the routes
``celeriac_soil_status`` (``/downloads/{download_id}/``, progress JSON, see
:func:`celeriac.contrib.soil.views.poll`) and ``celeriac_soil_file``
(``/downloads/{download_id}/file``); set ``celeriac_soil_prefix`` in the settings
to mount them elsewhere. Only whoever holds the download id can use them; a
download saved with ``owner_ids`` is also refused (403) to another
``request.authenticated_userid``.
"""

from __future__ import annotations

from typing import Any

from pyramid.response import Response

from .views import fetch, file_headers, poll


def _json(status: int, body: dict[str, Any]) -> Response:
    response = Response(json_body=body, status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def download_status(request: Any) -> Response:
    download_id = request.matchdict["download_id"]
    url = request.route_path("celeriac_soil_file", download_id=download_id)
    status, body = poll(download_id, request.authenticated_userid, file_url=url)
    return _json(status, body)


def download_file(request: Any) -> Response:
    status, found = fetch(request.matchdict["download_id"], request.authenticated_userid)
    if isinstance(found, dict):
        return _json(status, found)
    response = Response(body=found.payload, status=200)
    response.content_type = found.content_type.split(";")[0]
    if "charset=" in found.content_type:
        response.charset = found.content_type.split("charset=")[1].strip()
    for name, value in file_headers(found).items():
        response.headers[name] = value
    return response


def includeme(config: Any) -> None:
    prefix = config.get_settings().get("celeriac_soil_prefix", "/downloads").rstrip("/")
    config.add_route("celeriac_soil_status", f"{prefix}/{{download_id}}/")
    config.add_route("celeriac_soil_file", f"{prefix}/{{download_id}}/file")
    config.add_view(download_status, route_name="celeriac_soil_status", request_method="GET")
    config.add_view(download_file, route_name="celeriac_soil_file", request_method="GET")
