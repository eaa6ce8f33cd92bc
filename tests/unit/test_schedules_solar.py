"""``celeriac.schedules.solar``: Celery's events and validation, times checked against
``ephem`` (what Celery computes them with) at several places and seasons."""

from __future__ import annotations

import importlib.util
import os
from datetime import date, datetime, timedelta, timezone

import pytest

from celeriac.schedules import schedule_from_json, solar
from celeriac.schedules.sun import EVENTS, event_time, next_event

UTC = timezone.utc
PLACES = [(51.5074, -0.1278), (40.7128, -74.0060), (-33.8688, 151.2093), (64.1466, -21.9426),
          (0.0, 0.0)]
DAYS = [date(2026, 3, 20), date(2026, 6, 21), date(2026, 9, 23), date(2026, 12, 21)]
#: ephem horizon and use_center per event, as Celery's solar schedule sets them
EPHEM = {"dawn_astronomical": ("-18", True, True), "dawn_nautical": ("-12", True, True),
         "dawn_civil": ("-6", True, True), "sunrise": ("-0:34", False, True),
         "sunset": ("-0:34", False, False), "dusk_civil": ("-6", True, False),
         "dusk_nautical": ("-12", True, False), "dusk_astronomical": ("-18", True, False)}


def ephem_module():  # type: ignore[no-untyped-def]
    if importlib.util.find_spec("ephem") is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("ephem is a test dependency (pip install -e '.[test]')")
        pytest.skip("ephem is not installed")
    import ephem

    return ephem


def test_events_and_validation_are_celery_s() -> None:
    assert set(EVENTS) == {"dawn_astronomical", "dawn_nautical", "dawn_civil", "sunrise",
                           "solar_noon", "sunset", "dusk_civil", "dusk_nautical",
                           "dusk_astronomical"}
    with pytest.raises(ValueError, match="unknown event"):
        solar("moonrise", 0, 0)
    with pytest.raises(ValueError, match="latitude"):
        solar("sunrise", 91, 0)
    with pytest.raises(ValueError, match="longitude"):
        solar("sunrise", 0, 181)
    s = solar("sunset", 51.5, -0.12)
    assert schedule_from_json(s.to_json()) == s
    assert repr(s) == "<solar: sunset at latitude 51.5, longitude: -0.12>"


@pytest.mark.parametrize("lat,lon", PLACES)
def test_times_agree_with_ephem(lat: float, lon: float) -> None:
    ephem = ephem_module()
    for day in DAYS:
        observer = ephem.Observer()
        observer.lat, observer.lon, observer.pressure = str(lat), str(lon), 0
        noon_utc = datetime(day.year, day.month, day.day, 12, tzinfo=UTC) - timedelta(
            hours=lon / 15)
        for event, (horizon, center, rising) in EPHEM.items():
            ours = event_time(day, event, lat, lon)
            observer.horizon = horizon
            observer.date = ephem.Date(noon_utc.replace(tzinfo=None) - timedelta(hours=12))
            try:
                found = (observer.next_rising if rising else observer.next_setting)(
                    ephem.Sun(), use_center=center).datetime().replace(tzinfo=UTC)
            except (ephem.AlwaysUpError, ephem.NeverUpError):
                assert ours is None, (event, day, lat)
                continue
            assert ours is not None, (event, day, lat)
            assert abs((ours - found).total_seconds()) < 120, (event, day, lat, ours, found)
        observer.horizon = "0"
        observer.date = ephem.Date(noon_utc.replace(tzinfo=None) - timedelta(hours=12))
        transit = observer.next_transit(ephem.Sun()).datetime().replace(tzinfo=UTC)
        noon = event_time(day, "solar_noon", lat, lon)
        assert noon is not None and abs((noon - transit).total_seconds()) < 60


def test_next_fire_is_strictly_after_and_daily() -> None:
    s = solar("sunrise", 48.8566, 2.3522)
    first = s.next_fire_after(datetime(2026, 6, 1, tzinfo=UTC))
    assert first is not None and first.date() == date(2026, 6, 1)
    second = s.next_fire_after(first)
    assert second is not None and 23 < (second - first).total_seconds() / 3600 < 25
    assert s.next_fire_after(first - timedelta(microseconds=1)) == first


def test_polar_night_skips_days_without_the_event() -> None:
    # Tromsø: no sunrise from late November to mid January
    after = datetime(2026, 12, 1, tzinfo=UTC)
    found = next_event(after, "sunrise", 69.6492, 18.9553)
    assert found is not None and found > datetime(2027, 1, 10, tzinfo=UTC)
