"""Core extension points used by integrations (``celeriac.hooks``, fix-ups, scheduler and
store registries), checked without any framework."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celery, hooks, signals
from celeriac.beat.scheduler import Scheduler, scheduler_class
from celeriac.exceptions import ImproperlyConfigured


@pytest.fixture
def app() -> Iterator[Celery]:
    made = Celery("hooks", broker="memory://")
    yield made
    made.close()


def test_django_fixup_is_inactive_without_settings_module(app: Celery,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    assert "celeriac.contrib.django.fixup:fixup" in app.fixups
    assert Celery("again", broker="memory://")._fixups == [None]


def test_custom_fixups_are_called_with_the_app(app: Celery) -> None:
    seen: list[Any] = []
    import sys
    import types

    module = types.ModuleType("fixup_probe")
    module.fixup = lambda a: seen.append(a) or "installed"  # type: ignore[attr-defined]
    sys.modules["fixup_probe"] = module
    try:
        made = Celery("with-fixup", broker="memory://", fixups=["fixup_probe:fixup"])
    finally:
        del sys.modules["fixup_probe"]
    assert seen == [made] and made._fixups[-1] == "installed"


def test_import_modules_is_sent_before_task_modules_are_imported(app: Celery) -> None:
    seen: list[Any] = []

    def receiver(sender: Any = None, **kwargs: Any) -> None:
        seen.append(sender)

    signals.import_modules.connect(receiver)
    try:
        app.finalize()
    finally:
        signals.import_modules.disconnect(receiver)
    assert seen == [app]


def test_publish_interceptor_takes_the_message(app: Celery) -> None:
    add = app.task(lambda x, y: x + y, name="add")
    taken: list[Any] = []

    def interceptor(a: Any, items: Any) -> bool:
        taken.extend(items)
        return a is app

    hooks.register_publish_interceptor(interceptor)
    try:
        result = add.delay(1, 2)
    finally:
        hooks.unregister_publish_interceptor(interceptor)
    assert [item.message.task_id for item in taken] == [result.id]
    assert app.broker.stats("celery").ready == 0
    add.delay(3, 4)
    assert app.broker.stats("celery").ready == 1


def test_admission_check_drops_a_message_without_running_it(app: Celery) -> None:
    from celeriac.worker.job import JobRunner
    from celeriac.worker.leases import LeaseKeeper

    add = app.task(lambda x, y: x + y, name="add")
    dropped = add.delay(1, 1)
    kept = add.delay(2, 2)

    def check(a: Any, call: Any) -> str | None:
        return "seen before" if call.id == dropped.id else None

    runner = JobRunner(app, LeaseKeeper(app.broker, 10.0), "w@test")
    deliveries = app.broker.receive(["celery"], owner="w", limit=5, timeout=1)
    hooks.register_admission_check(check)
    try:
        jobs = [runner.prepare(d, set()) for d in deliveries]
    finally:
        hooks.unregister_admission_check(check)
    assert [j.request.id for j in jobs if j is not None] == [kept.id]
    assert app.broker.stats("celery").leased == 1  # the dropped one was acknowledged


def test_a_failing_admission_check_lets_the_task_run(app: Celery) -> None:
    from celeriac.app.request import parse_request as parse_task

    add = app.task(lambda x, y: x + y, name="add")
    add.delay(1, 1)
    [delivery] = app.broker.receive(["celery"], owner="w", limit=1, timeout=1)

    def broken(a: Any, call: Any) -> str | None:
        raise RuntimeError("database down")

    hooks.register_admission_check(broken)
    try:
        assert hooks.refuse_reason(app, parse_task(delivery.message, None)) is None
    finally:
        hooks.unregister_admission_check(broken)


def test_scheduler_class_resolution() -> None:
    assert scheduler_class(None) is Scheduler
    assert scheduler_class("celery.beat:PersistentScheduler") is Scheduler
    django = scheduler_class("django_celery_beat.schedulers:DatabaseScheduler")
    assert django.__module__ == "celeriac.contrib.django.beat.schedulers"
    assert scheduler_class("celeriac.contrib.django.beat.schedulers:DatabaseScheduler") is django
    with pytest.raises(ImproperlyConfigured, match="cannot import"):
        scheduler_class("no.such.module:Scheduler")
    with pytest.raises(ImproperlyConfigured, match="not a celeriac scheduler"):
        scheduler_class("celeriac.app.base:Celery")


def test_django_stores_are_registered(app: Celery) -> None:
    """Every app imports the Django integration through its built-in fix-up, which adds its
    rows to the scheme table (the table itself never imports it)."""
    from celeriac.brokers.registry import BEAT, RESULTS, serves, store_for_url
    from celeriac.schedules.stores import store_for_url as schedule_store

    assert serves("django-db", RESULTS) and serves("django-cache", RESULTS)
    assert serves("django://", BEAT) and not serves("django-db", BEAT)
    assert type(store_for_url("django-db")).__name__ == "DatabaseResultStore"
    assert type(store_for_url("django-cache", options={"cache": "x"})).__name__ == \
        "CacheResultStore"
    store = schedule_store("django://other")
    assert type(store).__name__ == "DjangoScheduleStore" and store.alias == "other"


def test_a_scheme_row_cannot_be_taken_over() -> None:
    from celeriac.brokers.registry import RESULTS, SCHEMES, Scheme, register_scheme

    register_scheme("redis", SCHEMES["redis"])  # the same row again: nothing changes
    with pytest.raises(ImproperlyConfigured, match="already served"):
        register_scheme("redis", Scheme(SCHEMES["memory"].load, roles=frozenset({RESULTS})))


def test_plugin_commands_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """``celeriac outbox`` is the Django integration's entry point in ``celeriac.commands``;
    a plugin that fails to import becomes a command that says why, never a silent gap."""
    import importlib.metadata

    import click
    from click.testing import CliRunner

    from celeriac.cli import cli
    from celeriac.cli.main import PLUGIN_GROUP, add_plugin_commands

    assert cli.commands["outbox"].name == "outbox"
    assert {"relay", "status"} <= set(cli.commands["outbox"].commands)  # type: ignore[attr-defined]

    broken = importlib.metadata.EntryPoint("broken", "no_such_module:command", PLUGIN_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [broken] if group == PLUGIN_GROUP else [])
    group = click.Group("probe")
    add_plugin_commands(group)
    outcome = CliRunner().invoke(group, ["broken"])
    assert outcome.exit_code == 1
    assert "command 'broken' (no_such_module:command) failed to load" in outcome.output
    assert "No module named 'no_such_module'" in outcome.output
