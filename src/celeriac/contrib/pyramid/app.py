"""Binding a celeriac app to a Pyramid application and its ini file.

* :data:`celery_app`: the app pyramid_celery users know (``pyramid_celery.
  celery_app``), with the ``--ini``/``-i`` and ``--ini-var`` options on every
  ``celeriac`` command: ``celeriac -A celeriac.contrib.pyramid.celery_app worker
  --ini development.ini``. :func:`add_ini_options` gives them to any other app.
* ``--ini FILE`` (:func:`on_preload`): reads the file's celeriac sections
  (:mod:`.ini`), loads the Pyramid application from it (``pyramid.paster.
  bootstrap``, so its ``main()`` runs and tasks see its registry), and leaves
  logging to the file's ``[loggers]`` unless ``[celery]`` sets
  ``worker_hijack_root_logger = true`` (pyramid_celery's rule).
* :func:`includeme` (``config.include('celeriac.contrib.pyramid')``): binds the
  registry to the app and adds the ``config.configure_celery(ini_path)``
  directive; with the setting ``celeriac.ini`` (e.g. ``celeriac.ini =
  %(__file__)s`` in ``[app:main]``) the file is read at once.

The Pyramid objects are kept in ``app.conf`` under pyramid_celery's names:
``PYRAMID_APP``, ``PYRAMID_ROOT``, ``PYRAMID_REQUEST``, ``PYRAMID_REGISTRY``,
``PYRAMID_CLOSER``.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import click

from celeriac import signals
from celeriac.app.base import Celery
from celeriac.config.old_names import OLD_NAMES
from celeriac.exceptions import ImproperlyConfigured

from . import ini as _ini
from .commit import defer_app
from .request import dispose_engines

logger = logging.getLogger("celeriac.contrib.pyramid")

_INI_APPS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_LOGGING: list[_ini.IniFile] = []


def add_ini_options(app: Celery, required: bool = True) -> Celery:
    """Give ``app`` the ``--ini`` and ``--ini-var`` options of every command."""
    if app not in _INI_APPS:
        app.user_options["preload"].add(click.Option(
            ("-i", "--ini"), default=None, help="Pyramid (PasteDeploy) ini file to configure "
                                                "from (its [celery] sections, its app)."))
        app.user_options["preload"].add(click.Option(
            ("--ini-var",), default=None,
            help="Comma-separated key=value pairs for the ini file's %(key)s variables."))
    _INI_APPS[app] = required
    defer_app(app)
    return app


def configure(app: Celery, path: str, variables: dict[str, str] | None = None) -> _ini.IniFile:
    """Configure ``app`` from the ini file at ``path`` (settings, schedule, routes)."""
    source = _ini.read(path, variables)
    settings = dict(source.settings)
    if settings.pop("use_celeryconfig", False) or settings.pop("USE_CELERYCONFIG", False):
        app.config_from_object("celeryconfig")
    else:
        app.config_from_object(settings)
    defer_app(app)
    return source


def log_from(source: _ini.IniFile) -> None:
    """Let the file's ``[loggers]`` configure the worker's and beat's logging (through
    ``setup_logging``), unless ``[celery]`` sets ``worker_hijack_root_logger = true``."""
    hijack = any(OLD_NAMES.get(k, k) == "worker_hijack_root_logger" and v is True
                 for k, v in source.settings.items())
    if source.has_logging and not hijack:
        _LOGGING[:] = [source]
        signals.setup_logging.connect(_configure_logging)


def _configure_logging(**kwargs: Any) -> None:
    for source in _LOGGING:
        _ini.apply_logging(source)


def bind(app: Celery, registry: Any, *, wsgi_app: Any = None, root: Any = None,
         request: Any = None, closer: Any = None) -> None:
    """Keep the Pyramid objects in ``app.conf`` (pyramid_celery's keys)."""
    app.conf.update({"PYRAMID_REGISTRY": registry})
    for key, value in (("PYRAMID_APP", wsgi_app), ("PYRAMID_ROOT", root),
                       ("PYRAMID_REQUEST", request), ("PYRAMID_CLOSER", closer)):
        if value is not None or key not in app.conf:
            app.conf.update({key: value})
    defer_app(app)


@signals.user_preload_options.connect
def on_preload(sender: Any = None, app: Any = None, options: Any = None, **kwargs: Any) -> None:
    """``--ini``: configure the app and load the Pyramid application from the file."""
    if app not in _INI_APPS:
        return
    path = (options or {}).get("ini")
    if not path:
        if _INI_APPS.get(app):
            raise click.UsageError("this app is configured from a Pyramid ini file: give "
                                   "--ini development.ini")
        return
    variables = _ini.parse_variables((options or {}).get("ini_var"))
    log_from(configure(app, path, variables))
    from pyramid.paster import bootstrap

    try:
        env = bootstrap(path, options=variables)
    except ImproperlyConfigured:
        raise
    except Exception as exc:
        raise ImproperlyConfigured(
            f"--ini {path}: loading the Pyramid application failed: "
            f"{type(exc).__name__}: {exc}") from exc
    bind(app, env["registry"], wsgi_app=env.get("app"), root=env.get("root"),
         request=env.get("request"), closer=env.get("closer"))
    env["closer"]()  # tasks make their own current request; leave none behind


@signals.worker_process_init.connect
def _after_fork(**kwargs: Any) -> None:
    for app in list(_INI_APPS):
        registry = app.conf.get("PYRAMID_REGISTRY")
        if registry is not None:
            dispose_engines(registry)


def includeme(config: Any, app: Celery | None = None) -> None:
    """``config.include('celeriac.contrib.pyramid')``."""
    target = app or celery_app
    bind(target, config.registry)

    def configure_celery(config: Any, ini_path: str, app: Celery | None = None) -> None:
        chosen = app or target
        configure(chosen, ini_path)
        bind(chosen, config.registry)

    config.add_directive("configure_celery", configure_celery)
    path = (config.registry.settings or {}).get("celeriac.ini")
    if path:
        configure(target, str(path))


#: pyramid_celery's ``celery_app``: configured by ``--ini`` or ``config.include``
celery_app = add_ini_options(Celery())
