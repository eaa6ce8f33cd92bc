"""The request a Pyramid task gets as its first argument in the worker.

:func:`task_request` builds one real Pyramid request per run, from the
registry the worker loaded (``--ini``), with the application's request factory
and request extensions (``config.add_request_method``), made current
(``pyramid.threadlocal``) for the run:

* ``request.registry``, ``request.settings`` (the registry's settings);
* ``request.tm``: a fresh explicit ``transaction.TransactionManager`` (the one
  ``pyramid_tm``'s ``request.tm`` returns, so code shared with views works);
* ``request.dbsession``: the application's own request method when it has one
  (the cookiecutter's ``get_tm_session``), else, when the registry holds a
  session factory at ``registry["dbsession_factory"]``, a session joined to
  ``request.tm`` by ``zope.sqlalchemy``;
* URL generation (``route_url``, ``static_url``, ``resource_url``, ``request.url``)
  against the site's address, the ``app.url`` setting (``app.url =
  https://example.com`` in ``[app:main]``). Without it, generating an absolute URL raises
  :class:`pyramid.exceptions.ConfigurationError` saying so, instead of
  producing ``http://localhost/...`` links (``route_path`` always works).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import transaction
from pyramid.exceptions import ConfigurationError
from pyramid.interfaces import IRequestFactory
from pyramid.request import Request
from pyramid.scripting import prepare

#: the Pyramid setting naming the site's base URL for URLs generated in tasks
URL_SETTING = "app.url"
_CLASSES: dict[type, type] = {}


def _no_address() -> ConfigurationError:
    return ConfigurationError(
        f"A task's request has no site address to build absolute URLs: set "
        f"{URL_SETTING} = https://your.site in the [app:main] settings (or use "
        f"request.route_path for a path)")


def _partial_application_url(self: Any, scheme: Any = None, host: Any = None,
                             port: Any = None) -> str:
    if host is None and not self.environ.get("celeriac.base_url"):
        raise _no_address()
    base: str = self._celeriac_base_partial(scheme, host, port)
    return base


def _host_url(self: Any) -> str:
    if not self.environ.get("celeriac.base_url"):
        raise _no_address()
    url: str = self._celeriac_base_host_url  # the original property, read through self
    return url


def request_class(factory: type) -> type:
    """``factory`` (the app's request class) with the guard on URL generation."""
    cls = _CLASSES.get(factory)
    if cls is None:
        cls = type(f"Task{factory.__name__}", (factory,), {
            "_celeriac_base_partial": factory._partial_application_url,  # type: ignore[attr-defined]
            "_partial_application_url": _partial_application_url,
            "_celeriac_base_host_url": factory.host_url,  # type: ignore[attr-defined]
            "host_url": property(_host_url),
        })
        _CLASSES[factory] = cls
    return cls


def make_request(registry: Any, path: str = "/") -> Any:
    """A request for ``registry``, addressed at the ``app.url`` setting when there is one."""
    settings = registry.settings or {}
    factory: Any = registry.queryUtility(IRequestFactory, default=Request)
    if not (isinstance(factory, type) and issubclass(factory, Request)):
        factory = Request
    base_url = str(settings.get(URL_SETTING) or "").rstrip("/")
    cls: Any = request_class(factory)
    request = cls.blank(path, base_url=base_url) if base_url else cls.blank(path)
    request.environ["celeriac.base_url"] = base_url
    request.registry = registry
    request.environ["tm.manager"] = transaction.TransactionManager(explicit=True)
    return request


@contextlib.contextmanager
def task_request(registry: Any) -> Iterator[Any]:
    """A fresh request for one task run, current (threadlocal) until the block ends."""
    request = make_request(registry)
    env = prepare(request=request, registry=registry)
    try:
        if "tm" not in dir(request):  # pyramid_tm not included: still offer request.tm
            request.tm = request.environ["tm.manager"]
        if "settings" not in dir(request):
            request.settings = registry.settings
        _add_dbsession(request, registry)
        yield request
    finally:
        env["closer"]()


def _add_dbsession(request: Any, registry: Any) -> None:
    if "dbsession" in dir(request):
        return
    factory = registry.get("dbsession_factory") if hasattr(registry, "get") else None
    if factory is None:
        return
    import zope.sqlalchemy

    session = factory()
    zope.sqlalchemy.register(session, transaction_manager=request.tm)
    request.dbsession = session
    request.add_finished_callback(lambda _request: session.close())


def dispose_engines(registry: Any) -> None:
    """After a fork: drop the parent's pooled connections (SQLAlchemy's advice)."""
    factory = registry.get("dbsession_factory") if hasattr(registry, "get") else None
    engine = getattr(factory, "kw", {}).get("bind") if factory is not None else None
    dispose = getattr(engine, "dispose", None)
    if dispose is not None:
        dispose(close=False)
