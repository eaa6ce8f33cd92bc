"""Schedules and periodic-task entries: what runs when, and where that is stored.

The public part mirrors ``celery.schedules`` (``from celeriac.schedules import
crontab, schedule, solar``): :mod:`.kinds` with the crontab arithmetic in
:mod:`.cron` and the sun's times in :mod:`.sun`.
Below it, what the beat service (:mod:`celeriac.beat`) and ``app.schedules``
share: :mod:`.entries` (an entry and its stored state), :mod:`.store` (the
schedule store interface; stores live with their engine under
``celeriac.brokers``), :mod:`.stores` (which store an app uses), :mod:`.policy`
(missed runs, fire ids), :mod:`.firing` (sending one fire), :mod:`.clock` and
:mod:`.editing` (``app.schedules``, the runtime-editing API).
"""

from __future__ import annotations

from .kinds import (
    BaseSchedule,
    ParseException,
    app_timezone,
    crontab,
    crontab_parser,
    maybe_make_aware,
    maybe_schedule,
    schedstate,
    schedule,
    schedule_from_json,
    solar,
)

__all__ = ["BaseSchedule", "ParseException", "app_timezone", "crontab", "crontab_parser",
           "maybe_make_aware", "maybe_schedule", "schedstate", "schedule", "schedule_from_json",
           "solar"]
