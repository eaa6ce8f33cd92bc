"""Django views for soil downloads: progress JSON to poll, then the file.

In ``urls.py``::

    from celeriac.contrib.soil.django_views import download_urls

    urlpatterns = [..., path("downloads/", include(download_urls()))]

gives ``downloads/<download_id>/`` (progress JSON, see
:func:`celeriac.contrib.soil.views.poll`) and ``downloads/<download_id>/file``
(the file). Only whoever holds the download id can use them; a download saved
with ``owner_ids`` is also refused (403) to any other signed-in user.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, reverse
from django.urls.exceptions import NoReverseMatch
from django.views.decorators.http import require_GET

from .views import fetch, file_headers, poll


def _owner(request: HttpRequest) -> Any:
    user = getattr(request, "user", None)
    return user.pk if user is not None and user.is_authenticated else None


@require_GET
def download_status(request: HttpRequest, download_id: str) -> JsonResponse:
    """The progress JSON of a download (poll it until ``is_ready``)."""
    try:
        url: str | None = reverse("celeriac-soil-file", args=[download_id])
    except NoReverseMatch:
        url = None
    status, body = poll(download_id, _owner(request), file_url=url)
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def download_file(request: HttpRequest, download_id: str) -> HttpResponse:
    """The finished file, as an attachment."""
    status, found = fetch(download_id, _owner(request))
    if isinstance(found, dict):
        return JsonResponse(found, status=status)
    response = HttpResponse(found.payload, content_type=found.content_type)
    for name, value in file_headers(found).items():
        response[name] = value
    return response


def download_urls() -> list[Any]:
    """URL patterns of both views (include them under any prefix)."""
    return [path("<str:download_id>/", download_status, name="celeriac-soil-status"),
            path("<str:download_id>/file", download_file, name="celeriac-soil-file")]
