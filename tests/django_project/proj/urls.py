"""URLs of the test project: the admin, soil's download views."""

from django.contrib import admin
from django.urls import include, path

from celeriac.contrib.soil.django_views import download_urls

urlpatterns = [path("admin/", admin.site.urls), path("downloads/", include(download_urls()))]
