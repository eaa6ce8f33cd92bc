"""Solar event times (sunrise, sunset, dawn, dusk, solar noon): pure functions, no I/O.

Celery's ``solar`` schedule uses the ``ephem`` library; celeriac computes the
same events with NOAA's solar position equations (the "NOAA Solar Calculator",
after Meeus, *Astronomical Algorithms*), which agree with ``ephem`` to within
about a minute between the polar circles. Each event is defined by the sun's
centre crossing an altitude, as Celery defines them:

=====================  ==============================  =================
event                  sun's centre at                 direction
=====================  ==============================  =================
``dawn_astronomical``  -18°                            rising
``dawn_nautical``      -12°                            rising
``dawn_civil``         -6°                             rising
``sunrise``            -0.833° (upper limb, refracted) rising
``solar_noon``         highest point (transit)         -
``sunset``             -0.833°                         setting
``dusk_civil``         -6°                             setting
``dusk_nautical``      -12°                            setting
``dusk_astronomical``  -18°                            setting
=====================  ==============================  =================

On a day where the sun never reaches the altitude (polar day or night) the
event does not happen and that day is skipped, as Celery skips it.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

UTC = timezone.utc

#: event -> (altitude of the sun's centre in degrees, +1 rising / -1 setting / 0 transit)
EVENTS: dict[str, tuple[float, int]] = {
    "dawn_astronomical": (-18.0, 1),
    "dawn_nautical": (-12.0, 1),
    "dawn_civil": (-6.0, 1),
    "sunrise": (-0.833, 1),
    "solar_noon": (0.0, 0),
    "sunset": (-0.833, -1),
    "dusk_civil": (-6.0, -1),
    "dusk_nautical": (-12.0, -1),
    "dusk_astronomical": (-18.0, -1),
}
#: How far ahead :func:`next_event` looks (a polar night lasts under half a year).
SEARCH_DAYS = 400
_J2000 = 2451545.0
_EPOCH_JD = 2440587.5  # Julian day of 1970-01-01T00:00Z


def _sun(jd: float) -> tuple[float, float]:
    """(declination in degrees, equation of time in minutes) at Julian day ``jd``."""
    t = (jd - _J2000) / 36525.0
    mean_long = (280.46646 + t * (36000.76983 + t * 0.0003032)) % 360
    anomaly = math.radians(357.52911 + t * (35999.05029 - 0.0001537 * t))
    ecc = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    centre = (math.sin(anomaly) * (1.914602 - t * (0.004817 + 0.000014 * t))
              + math.sin(2 * anomaly) * (0.019993 - 0.000101 * t)
              + math.sin(3 * anomaly) * 0.000289)
    omega = math.radians(125.04 - 1934.136 * t)
    apparent = math.radians(mean_long + centre - 0.00569 - 0.00478 * math.sin(omega))
    seconds = 21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))
    obliquity = math.radians(23 + (26 + seconds / 60) / 60 + 0.00256 * math.cos(omega))
    declination = math.degrees(math.asin(math.sin(obliquity) * math.sin(apparent)))
    y = math.tan(obliquity / 2) ** 2
    l0 = math.radians(mean_long)
    eq_time = 4 * math.degrees(
        y * math.sin(2 * l0) - 2 * ecc * math.sin(anomaly)
        + 4 * ecc * y * math.sin(anomaly) * math.cos(2 * l0)
        - 0.5 * y * y * math.sin(4 * l0) - 1.25 * ecc * ecc * math.sin(2 * anomaly))
    return declination, eq_time


def _minutes(day: date, event: str, lat: float, lon: float, guess: float) -> float | None:
    """Minutes after ``day`` 00:00 UTC of ``event`` near ``guess``; None if it does not occur."""
    altitude, direction = EVENTS[event]
    midnight_jd = (datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() / 86400
                   + _EPOCH_JD)
    declination, eq_time = _sun(midnight_jd + guess / 1440)
    noon = 720 - 4 * lon - eq_time
    if direction == 0:
        return noon
    phi, delta = math.radians(lat), math.radians(declination)
    cos_h = ((math.sin(math.radians(altitude)) - math.sin(phi) * math.sin(delta))
             / (math.cos(phi) * math.cos(delta)))
    if not -1.0 <= cos_h <= 1.0:
        return None
    hour_angle = math.degrees(math.acos(cos_h))
    return noon - direction * 4 * hour_angle


def event_time(day: date, event: str, lat: float, lon: float) -> datetime | None:
    """The UTC instant of ``event`` on the solar day centred on ``day`` (to the second)."""
    guess: float | None = 720 - 4 * lon
    for _ in range(3):  # refine: the sun's position at the event, not at noon
        assert guess is not None
        guess = _minutes(day, event, lat, lon, guess)
        if guess is None:
            return None
    assert guess is not None
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start + timedelta(seconds=round(guess * 60))


def next_event(after: datetime, event: str, lat: float, lon: float) -> datetime | None:
    """The first ``event`` strictly after the aware instant ``after``, or None within a year."""
    after = after.astimezone(UTC)
    day = after.date() - timedelta(days=2)
    for _ in range(SEARCH_DAYS):
        when = event_time(day, event, lat, lon)
        if when is not None and when > after:
            return when
        day += timedelta(days=1)
    return None
