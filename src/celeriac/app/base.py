"""The ``Celery`` application: configuration, task registry, broker, result store, sending.

``Celery(main, broker=, backend=, include=, **settings)`` mirrors Celery's constructor. Without a
broker the app uses the embedded SQLite broker and result store (one file:
``$CELERIAC_SQLITE_PATH`` or ``./celeriac.sqlite3``). Brokers and stores are created lazily, once
per process (again after a fork), from ``broker_url``/``result_backend``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from .. import clock, config, signals, states
from ..brokers.base import QUEUE_SETTINGS, Broker
from ..brokers.registry import broker_for_url, is_embedded, store_for_url
from ..brokers.sqlite.db import default_path
from ..canvas.signature import maybe_signature, signature
from ..config.settings import Settings
from ..events import Events
from ..results.async_result import AsyncResult
from ..results.group import GroupResult
from ..results.store import ResultStore
from ..schedules.editing import Schedules
from ..schedules.entries import entry_for_task
from ..security.setup import setup_security
from ..signals import Signal
from . import state as _state
from .annotations import apply_annotations
from .builtins import register_builtins
from .control import Control
from .loaders import discover_packages, import_object, import_related
from .publish import send_task
from .registry import TaskRegistry, task_from_fun
from .report import bugreport
from .task import Task

logger = logging.getLogger("celeriac.app")

#: The module of the ``celeriac`` command, which ``start``/``worker_main`` run.
COMMAND_LINE = "celeriac.cli"
#: Fixups every app applies (Celery's ``builtin_fixups``), called with the app at creation;
#: each is idle unless its framework is in use (Django: ``DJANGO_SETTINGS_MODULE`` set).
BUILTIN_FIXUPS = ("celeriac.contrib.django.fixup:fixup",)


class Celery:
    """A celeriac application (Celery's name, so imports only change the package)."""

    def __init__(self, main: str | None = None, broker: str | None = None,
                 backend: str | None = None, include: Iterable[str] | None = None,
                 task_cls: type[Task] | str | None = None, set_as_current: bool = True,
                 config_source: Any = None, namespace: str | None = None,
                 autofinalize: bool = True, fixups: Iterable[str] | None = None,
                 **kwargs: Any) -> None:
        self.main = main
        self.conf = Settings()
        self.namespace = namespace
        self._tasks = TaskRegistry()
        self._finalized, self.autofinalize = False, autofinalize
        self._configured = False
        self._finalize_lock = threading.RLock()
        self._autodiscover: list[tuple[Any, str]] = []
        self._broker: Broker | None = None
        self._backend: ResultStore | None = None
        self._pid = os.getpid()
        self._oids: dict[tuple[int, int], str] = {}
        self._resources_lock = threading.Lock()
        self.on_configure = Signal("app.on_configure")
        self.on_after_configure = Signal("app.on_after_configure")
        self.on_after_finalize = Signal("app.on_after_finalize")
        self.on_after_fork = Signal("app.on_after_fork")
        self.user_options: dict[str, set[Any]] = {"preload": set(), "worker": set(), "beat": set()}
        self.Task = self._make_task_base(task_cls)
        if broker:
            self.conf.broker_url = broker
        if backend:
            self.conf.result_backend = backend
        if include:
            self.conf.include = include if isinstance(include, str) else tuple(include)
        if config_source is not None:
            self.config_from_object(config_source, namespace=namespace)
        config.constructor_settings(self.conf, kwargs)
        _state.register_app(self, set_as_current)
        self.fixups = [*BUILTIN_FIXUPS, *(fixups or ())]
        self._fixups = [fixup(self) for fixup in map(import_object, self.fixups)]

    def _make_task_base(self, task_cls: type[Task] | str | None) -> type[Task]:
        base = task_cls or Task
        if isinstance(base, str):
            module, _, attr = base.partition(":")
            base = getattr(importlib.import_module(module), attr)
        assert isinstance(base, type)
        return type("Task", (base,), {"_app": self, "abstract": True,
                                       "__module__": base.__module__})

    # -- configuration ------------------------------------------------------------
    def config_from_object(self, obj: Any, silent: bool = False, force: bool = False,
                           namespace: str | None = None) -> None:
        if isinstance(obj, str):
            try:
                obj = import_object(obj)
            except ImportError:
                if silent:
                    return
                raise
        self.namespace = namespace or self.namespace
        self.conf.update(config.from_mapping(obj, namespace, self.conf))

    def config_from_envvar(self, variable_name: str, silent: bool = False,
                           force: bool = False) -> None:
        module = os.environ.get(variable_name)
        if not module:
            if silent:
                return
            raise ImportError(f"environment variable {variable_name} is not set")
        self.config_from_object(module, silent=silent, force=force)

    def add_defaults(self, mapping: Any) -> None:
        self.conf.add_defaults(mapping() if callable(mapping) else mapping)

    @property
    def timezone(self) -> ZoneInfo:
        name = self.conf.timezone or "UTC"
        return name if isinstance(name, ZoneInfo) else ZoneInfo(str(name))

    def now(self) -> Any:
        return clock.now().astimezone(self.timezone)

    # -- tasks --------------------------------------------------------------------
    def task(self, *args: Any, **opts: Any) -> Any:
        """Decorator: ``@app.task`` or ``@app.task(name=..., bind=True, ...)``."""
        keep = opts.pop("filter", None) or (lambda task: task)  # Celery's: what is returned
        if len(args) == 1 and callable(args[0]):  # @app.task, or app.task(fun, **opts)
            return keep(task_from_fun(self, args[0], **opts))
        if args:
            raise TypeError("app.task() takes keyword options only")

        def inner(fun: Callable[..., Any]) -> Task:
            return keep(task_from_fun(self, fun, **opts))

        return inner

    def register_task(self, task: Task | type[Task], **options: Any) -> Task:
        """Register a class-based task (``app.register_task(MyTask())``)."""
        instance = task() if isinstance(task, type) else task
        cls = type(instance)
        if not cls.name:
            cls.name = f"{cls.__module__}.{cls.__name__}"
        cls.bind_app(self)
        cls._app = self
        self._tasks.register(instance)
        return instance

    @property
    def tasks(self) -> TaskRegistry:
        self.finalize(auto=True)
        return self._tasks

    def finalize(self, auto: bool = False) -> None:
        """Import included modules, autodiscover, bind shared tasks, fire the app signals."""
        with self._finalize_lock:
            if self._finalized:
                return
            if auto and not self.autofinalize:  # Celery's Celery(autofinalize=False)
                raise RuntimeError("Contract breach: app not finalized")
            self._finalized = True
            register_builtins(self)
            for make in _state.app_finalizers():
                make(self)
            # as Celery's loader: receivers (Django's django.setup()) run before task imports
            signals.import_modules.send(sender=self)
            self._import_modules()
            self._run_autodiscover()
            for make in _state.app_finalizers():
                make(self)
            apply_annotations(self)  # task_annotations, on every task now registered
            self._configured = True
            self.on_after_configure.send(sender=self, source=self.conf)
            self.on_after_finalize.send(sender=self)

    def _import_modules(self) -> None:
        for name in [*(self.conf.get("imports") or ()), *(self.conf.get("include") or ())]:
            importlib.import_module(name)

    def autodiscover_tasks(self, packages: Any = None, related_name: str = "tasks",
                           force: bool = False) -> None:
        """Import ``<package>.<related_name>`` for each package (Django apps by default)."""
        self._autodiscover.append((packages, related_name))
        if force or self._finalized:
            self._discover(packages, related_name)

    def _run_autodiscover(self) -> None:
        for packages, related_name in self._autodiscover:
            self._discover(packages, related_name)

    def _discover(self, packages: Any, related_name: str) -> None:
        for package in discover_packages(packages):
            import_related(package, related_name)

    # -- periodic tasks -------------------------------------------------------------
    def add_periodic_task(self, schedule: Any, sig: Any, args: Iterable[Any] = (),
                          kwargs: Any = (), name: str | None = None, **opts: Any) -> str:
        """Add a beat entry for ``sig`` (usually inside ``on_after_configure``)."""
        sig = maybe_signature(sig, app=self) if isinstance(sig, dict) else sig
        key = name or repr(sig)
        self.conf.beat_schedule[key] = {
            "schedule": schedule, "task": sig.name, "args": tuple(sig.args) or tuple(args),
            "kwargs": dict(sig.kwargs) or dict(kwargs or {}),
            "options": {**sig.options, **opts},
        }
        return key

    def periodic_task(self, *args: Any, run_every: Any = None, **opts: Any) -> Any:
        """Decorator: a task and its beat entry in one place (CommCare's ``@periodic_task``)."""
        if run_every is None:
            raise TypeError("periodic_task() needs run_every=")
        schedule_opts = {k: opts[k] for k in ("queue", "priority", "expires", "options")
                         if k in opts}
        entry_options = dict(schedule_opts.pop("options", {}) or {})
        entry_options.update(schedule_opts)
        for key in ("relative", "missed", "max_lateness"):
            if key in opts:
                entry_options[key] = opts.pop(key)
        opts.pop("options", None)

        def inner(fun: Callable[..., Any]) -> Task:
            task = task_from_fun(self, fun, **opts)
            self.conf.beat_schedule[task.name or fun.__name__] = entry_for_task(
                task, run_every, entry_options)
            return task

        if len(args) == 1 and callable(args[0]):
            return inner(args[0])
        return inner

    @property
    def schedules(self) -> Any:
        """Runtime schedule editing (see docs/beat.md)."""
        return Schedules(self)

    # -- broker and results ------------------------------------------------------------
    def _check_fork(self) -> None:
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._broker = self._backend = None
            self.on_after_fork.send(sender=self)

    @property
    def broker_url(self) -> str:
        """The broker URL: ``$CELERY_BROKER_URL`` wins, as in Celery, then ``broker_url``.

        Unset, it is the embedded SQLite file ``$CELERIAC_SQLITE_PATH`` (or ``./celeriac.sqlite3``),
        made absolute now so a worker started from another directory finds the same file.
        """
        url = (os.environ.get("CELERIAC_BROKER_URL") or os.environ.get("CELERY_BROKER_URL")
               or self.conf.broker_url)
        return str(url) if url else "sqlite:///" + default_path()

    @property
    def broker(self) -> Broker:
        self._check_fork()
        if self._broker is None:
            with self._resources_lock:
                if self._broker is None:
                    self._broker = broker_for_url(
                        self.broker_url,
                        lease_seconds=float(self.conf.worker_lease_seconds),
                        options=self._broker_options())
        return self._broker

    def _broker_options(self) -> dict[str, Any]:
        """Transport options plus the Celery settings a broker driver understands."""
        conf = self.conf
        options: dict[str, Any] = {"retry_policy": conf.task_publish_retry_policy,
                                   **{n: conf.get(n) for n in QUEUE_SETTINGS if n in conf.changes}}
        if conf.broker_use_ssl:
            options["ssl"] = conf.broker_use_ssl
        options.update(conf.broker_transport_options or {})
        return options

    def _backend_options(self) -> dict[str, Any]:
        """Result transport options plus Celery's ``redis_*`` result settings, when set."""
        conf = self.conf
        options: dict[str, Any] = {}
        for setting, option in (("redis_backend_use_ssl", "ssl"),
                                ("redis_max_connections", "max_connections"),
                                ("redis_socket_timeout", "socket_timeout"),
                                ("redis_socket_connect_timeout", "socket_connect_timeout"),
                                ("redis_socket_keepalive", "socket_keepalive")):
            if setting in conf.changes and conf.get(setting) is not None:
                options[option] = conf.get(setting)  # only what the user set: keep our defaults
        options.update(conf.result_backend_transport_options or {})
        if str(self.backend_url or "").startswith("rpc:"):  # results through the broker
            options.update(broker_url=self.broker_url, broker_options=self._broker_options(),
                           reply_queue=lambda: self.thread_oid, persistent=conf.result_persistent)
        return options

    @property
    def backend_url(self) -> str | None:
        """The result store URL; embedded brokers (SQLite, memory) store results too."""
        url = (os.environ.get("CELERIAC_RESULT_BACKEND") or os.environ.get("CELERY_RESULT_BACKEND")
               or self.conf.result_backend)
        if url:
            return str(url)
        return self.broker_url if is_embedded(self.broker_url) else None

    @property
    def backend(self) -> ResultStore | None:
        """The result store, or None when results are disabled (no result_backend)."""
        self._check_fork()
        if self._backend is None:
            url = self.backend_url
            if url is None:
                return None
            with self._resources_lock:
                if self._backend is None:
                    self._backend = store_for_url(
                        url, expires=config.seconds(self.conf.result_expires),
                        options=self._backend_options())
        return self._backend

    def result_expires_for(self, state: str) -> float | None:
        if state == states.FAILURE and self.conf.result_failure_expires is not None:
            return config.seconds(self.conf.result_failure_expires)
        return config.seconds(self.conf.result_expires)

    @property
    def thread_oid(self) -> str:
        """Celery's per-thread ``reply_to`` id (uuid3 of node, pid, thread, app)."""
        key = (os.getpid(), threading.get_ident())
        oid = self._oids.get(key)
        if oid is None:
            oid = self._oids[key] = str(uuid.uuid3(
                uuid.NAMESPACE_OID, f"{uuid.getnode()}-{key[0]}-{key[1]}-{id(self)}"))
        return oid

    def send_task(self, name: str, args: Any = None, kwargs: Any = None,
                  **options: Any) -> AsyncResult:
        """Publish a task by name (the task code need not be importable here)."""
        result_cls = options.pop("result_cls", None)  # Celery's: the class of the result
        task_id = send_task(self, name, args, kwargs, **options)
        return result_cls(task_id) if result_cls else self.AsyncResult(task_id, task_name=name)

    def AsyncResult(self, id: str, **kwargs: Any) -> AsyncResult:
        return AsyncResult(id, app=self, **kwargs)

    @functools.cached_property
    def GroupResult(self) -> type:
        return type("GroupResult", (GroupResult,), {"_default_app": self})  # bound here

    def signature(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("app", self)
        return signature(*args, **kwargs)

    control = property(lambda self: Control(self), doc="``app.control``: remote control")
    events = property(lambda self: Events(self), doc="``app.events``: monitoring events")

    def close(self) -> None:
        if self._broker is not None:
            self._broker.close()
            self._broker = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def set_current(self) -> None:
        _state.set_current_app(self)

    set_default = set_current

    def worker_main(self, argv: Sequence[str] | None = None) -> None:
        """``celeriac worker`` with ``argv`` (default ``sys.argv[1:]``), as Celery's."""
        if "worker" not in (argv := sys.argv[1:] if argv is None else argv):
            raise ValueError("The worker sub-command must be specified in argv.\n"
                             "Use app.start() to programmatically start other commands.")
        self.start(argv)

    def start(self, argv: Sequence[str] | None = None) -> None:
        """The command line with ``argv`` (default ``sys.argv[1:]``), imported by name now."""
        command_line = importlib.import_module(COMMAND_LINE)
        command_line.main(list(sys.argv[1:] if argv is None else argv) or ["--help"], app=self)

    setup_security = setup_security  # Celery's: message signing (docs/security.md)
    #: Celery's ``app.bugreport()``: versions, platform, broker and changed settings
    bugreport = bugreport

    def __repr__(self) -> str:
        return f"<Celery {self.main or '__main__'} at {id(self):#x}>"


_state.set_default_app_factory(lambda: Celery("default", set_as_current=True))
