"""Settings of the test Django project.

The database comes from ``CELERIAC_TEST_DATABASE``: a SQLite file path, or a
``postgresql://`` URL. ``CELERIAC_TEST_PG_DATABASE`` (a URL) adds the alias
``pg`` for in-process PostgreSQL tests. ``CELERIAC_TEST_OUTBOX=1`` turns the
transactional outbox on.
"""

import importlib.util
import os
from urllib.parse import urlparse

import django

SECRET_KEY = "celeriac-test-project"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "proj.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def database(url):
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlparse(url)
        return {"ENGINE": "django.db.backends.postgresql", "NAME": parts.path.lstrip("/"),
                "USER": parts.username or "postgres", "PASSWORD": parts.password or "",
                "HOST": parts.hostname or "127.0.0.1", "PORT": str(parts.port or 5432)}
    options = {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;"}
    if django.VERSION >= (5, 1):
        # the worker, beat and dashboard write to this file too: a deferred BEGIN that
        # reads and then writes (select_for_update, the admin's change form) would get
        # "database is locked" at once, without waiting, whenever one of them committed
        # in between; IMMEDIATE takes the write lock first and waits its turn
        options["transaction_mode"] = "IMMEDIATE"
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": url, "OPTIONS": options}


DATABASES = {"default": database(os.environ.get("CELERIAC_TEST_DATABASE", "db.sqlite3"))}
if os.environ.get("CELERIAC_TEST_PG_DATABASE"):
    DATABASES["pg"] = database(os.environ["CELERIAC_TEST_PG_DATABASE"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "celeriac.contrib.django",
    "celeriac.contrib.django.results",
    "celeriac.contrib.django.beat",
    "shop",
]
if importlib.util.find_spec("django.tasks") is None and importlib.util.find_spec("django_tasks"):
    INSTALLED_APPS.append("django_tasks")  # the backport, on Django < 6

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages"]},
}]

TASKS = {"default": {"BACKEND": "celeriac.contrib.django.tasks.CeleriacBackend",
                     "QUEUES": ["default", "reports"]}}

# celeriac, through app.config_from_object('django.conf:settings', namespace='CELERY')
CELERY_RESULT_EXTENDED = True
CELERY_TASK_OUTBOX = os.environ.get("CELERIAC_TEST_OUTBOX") == "1"
CELERY_TASK_OUTBOX_CLAIM_TIMEOUT = float(os.environ.get("CELERIAC_TEST_OUTBOX_CLAIM", "30"))
CELERY_BEAT_MAX_LOOP_INTERVAL = 0.5
CELERY_WORKER_LEASE_SECONDS = 6.0
