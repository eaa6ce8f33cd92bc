"""``celeriac.utils.time`` and ``celeriac.utils.functional`` (Celery's
``celery.utils.time`` / ``celery.utils.functional``): each name behaves as Celery
5.7's, checked against Celery itself where it is installed."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta
from datetime import timezone as fixed
from zoneinfo import ZoneInfo

import pytest

from celeriac import utils
from celeriac.utils import functional as F
from celeriac.utils import time as T

PARIS = ZoneInfo("Europe/Paris")


def test_maybe_make_aware_and_friends() -> None:
    naive = datetime(2024, 1, 2, 3, 4, 5)
    assert T.maybe_make_aware(naive) == naive.replace(tzinfo=fixed.utc)
    assert T.maybe_make_aware(naive).utcoffset() == timedelta(0)
    in_paris = T.maybe_make_aware(naive, PARIS)
    assert in_paris.tzinfo == PARIS and in_paris.hour == 4  # 03:04 UTC is 04:04 there
    local_naive = T.maybe_make_aware(naive, PARIS, naive_as_utc=False)
    assert local_naive.hour == 3 and local_naive.utcoffset() == timedelta(hours=1)
    aware = datetime(2024, 1, 1, tzinfo=PARIS)
    assert T.maybe_make_aware(aware) is aware
    assert T.is_naive(naive) and not T.is_naive(aware)
    assert T.to_utc(naive).tzinfo == ZoneInfo("UTC")
    assert T.timezone.utc == ZoneInfo("UTC") and T.timezone.get_timezone("Europe/Paris") == PARIS
    assert T.timezone.to_local(naive, PARIS).hour == 4


def test_dst_gap_and_fold() -> None:
    gap = T.make_aware(datetime(2024, 3, 31, 2, 30), PARIS)  # clocks jump 02:00 -> 03:00
    assert (gap.hour, gap.minute, gap.utcoffset()) == (3, 30, timedelta(hours=2))
    twice = T.make_aware(datetime(2024, 10, 27, 2, 30), PARIS)  # 02:30 happens twice
    assert twice.fold == 0 and twice.utcoffset() == timedelta(hours=2)


def test_remaining_and_resolution() -> None:
    start = datetime(2024, 1, 1, 10, 59, 30, tzinfo=fixed.utc)
    now = datetime(2024, 1, 1, 11, 0, 0, tzinfo=fixed.utc)
    assert T.remaining(start, timedelta(minutes=1), now) == timedelta(seconds=30)
    assert T.remaining(start, timedelta(minutes=1), now, relative=True) == timedelta(0)
    assert T.delta_resolution(start, timedelta(hours=2)) == start.replace(minute=0, second=0)
    assert T.delta_resolution(start, timedelta(days=1)).hour == 0
    assert T.delta_resolution(start, timedelta(seconds=5)) == start
    assert T.maybe_timedelta(30) == timedelta(seconds=30)
    assert T.maybe_timedelta(timedelta(1)) == timedelta(1)


def test_small_helpers() -> None:
    assert T.rate("100/m") == pytest.approx(100 / 60) and T.rate("2/h") == 2 / 3600
    assert T.rate("5") == 5 and T.rate(None) == 0 and T.rate(3) == 3
    assert (T.weekday("sunday"), T.weekday("Mon"), T.yearmonth("may")) == (0, 1, 5)
    with pytest.raises(KeyError, match="someday"):
        T.weekday("someday")
    assert T.humanize_seconds(60) == "1.00 minute"
    assert T.humanize_seconds(7200, prefix="in ") == "in 2.00 hours"
    assert T.humanize_seconds(0) == "now"
    assert T.humanize_seconds(0.5, microseconds=True) == "0.50 seconds"
    assert T.maybe_iso8601("2024-01-02T03:04:05Z") == datetime(2024, 1, 2, 3, 4, 5,
                                                                 tzinfo=fixed.utc)
    assert T.maybe_iso8601(None) is None
    assert datetime(2024, 1, 31) + T.ffwd(month=2) == datetime(2024, 2, 29)
    assert datetime(2024, 1, 1) + T.ffwd(weekday=4) == datetime(2024, 1, 5)  # a Friday
    assert T.adjust_timestamp(1000.0, T.utcoffset()) == 1000.0
    assert T.get_exponential_backoff_interval(2, 3, 100) == 16
    assert T.get_exponential_backoff_interval(2, 10, 100) == 100
    assert 0 <= T.get_exponential_backoff_interval(2, 3, 100, full_jitter=True) <= 16
    later = datetime(2024, 1, 1, 1, tzinfo=PARIS)
    assert T.subtract_datetimes(later, datetime(2024, 1, 1)) == timedelta(0)
    assert T.add_seconds_to_datetime(datetime(2024, 3, 31, 1, 30, tzinfo=PARIS),
                                      3600).hour == 3  # one elapsed hour across the gap


def test_functional_helpers() -> None:
    assert list(F.chunks(iter(range(7)), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(utils.chunks(iter("ab"), 5)) == [["a", "b"]]
    assert F.maybe_list("a") == ["a"] and F.maybe_list(None) is None
    assert F.maybe_list(("a",)) == ("a",) and F.maybe_list({"k": 1}) == [{"k": 1}]
    assert F.is_list([1]) and not F.is_list("ab") and not F.is_list({})
    assert F.first(None, [None, F.lazy(lambda: 3), 4]) == 3
    assert F.first(lambda v: v > 3, [1, 5, 7]) == 5
    assert F.padlist(["a"], 3, "x") == ["a", "x", "x"] and F.padlist([1, 2, 3], 2) == [1, 2]
    assert F.mattrgetter("real", "nope")(1) == {"real": 1, "nope": None}
    assert list(F.uniq([3, 1, 3, 2, 1])) == [3, 1, 2]
    assert list(F.lookahead(iter([1, 2]))) == [(1, 2), (2, None)]
    assert F.dictfilter({"a": 1, "b": None}, c=None, e=2) == {"a": 1, "e": 2}
    assert F.maybe(int, "3") == 3 and F.maybe(int, None) is None
    assert F.seq_concat_item((1,), 2) == (1, 2) and F.seq_concat_seq([1], (2, 3)) == (1, 2, 3)
    assert F.fun_accepts_kwargs(lambda **kw: None) and not F.fun_accepts_kwargs(lambda a: a)
    assert F.fun_takes_argument("b", lambda a, b: None)
    assert F.arity_greater(lambda a, b: None, 1) and not F.arity_greater(lambda a: a, 1)
    assert F.pass1(1, 2) == 1
    calls: list[int] = []
    mlazy = F.mlazy(lambda: len(calls.append(1) or calls))  # type: ignore[func-returns-value]
    assert mlazy() == 1 and mlazy() == 1 and calls == [1]
    finder = F.firstmethod("get")
    assert finder([object(), {"k": None}, {"k": 7}], "k") == 7


def test_regen_can_be_iterated_again_and_is_a_list() -> None:
    gen = F.regen(x * 2 for x in range(3))
    assert list(gen) == [0, 2, 4] and list(gen) == [0, 2, 4]
    assert isinstance(gen, list) and len(gen) == 3 and gen[1] == 2 and gen
    gen.map(lambda x: x + 1)  # type: ignore[attr-defined]
    assert gen == [1, 3, 5]
    same = [1]
    assert F.regen(same) is same


def test_lru_cache_and_memoize() -> None:
    cache = F.LRUCache(limit=2)
    cache["a"], cache["b"] = 1, 2
    assert cache["a"] == 1  # "a" used last: "b" goes
    cache["c"] = 3
    assert sorted(cache) == ["a", "c"]
    cache["n"] = "1"
    assert cache.incr("n", 2) == 3
    calls: list[int] = []

    @F.memoize(maxsize=10)
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    assert square(3) == 9 and square(3) == 9 and calls == [3]
    assert (square.hits, square.misses) == (1, 1)
    square.clear()
    assert square(3) == 9 and calls == [3, 3]
    assert len(utils.uuid()) == 36 and utils.gen_unique_id() != utils.gen_unique_id()


def test_the_same_answers_as_celery() -> None:
    ctime = pytest.importorskip("celery.utils.time")
    cfun = pytest.importorskip("celery.utils.functional")
    rng = random.Random(7)
    for _ in range(200):
        secs = rng.choice([0, 0.004, 0.5, 1, 59.999, 60, 3599, 3600, 86399, 90000])
        secs *= rng.choice([1, 1.5, 7])
        for kw in ({}, {"prefix": "in ", "sep": ""}, {"microseconds": True}):
            assert T.humanize_seconds(secs, **kw) == ctime.humanize_seconds(secs, **kw)
    for text in ("100/m", "2/h", "0.5/s", "7", "", None, 4):
        assert T.rate(text) == ctime.rate(text)
    naive = datetime(2024, 6, 1, 12, 30)
    for tz in (None, PARIS, "America/New_York"):
        for as_utc in (True, False):
            ours = T.maybe_make_aware(naive, tz, naive_as_utc=as_utc)
            theirs = ctime.maybe_make_aware(naive, tz, naive_as_utc=as_utc)
            assert ours == theirs and ours.utcoffset() == theirs.utcoffset()
    for wall in (datetime(2024, 3, 31, 2, 30), datetime(2024, 10, 27, 2, 30)):
        ours, theirs = T.make_aware(wall, PARIS), ctime.make_aware(wall, PARIS)
        assert ours.replace(tzinfo=None) == theirs.replace(tzinfo=None)
        assert ours.utcoffset() == theirs.utcoffset()
    start = datetime(2024, 1, 1, 10, 59, 30, tzinfo=fixed.utc)
    for delta in (timedelta(seconds=30), timedelta(minutes=1), timedelta(hours=3),
                  timedelta(days=1)):
        now = start + timedelta(seconds=10)
        for relative in (False, True):
            assert T.remaining(start, delta, now, relative) == ctime.remaining(
                start, delta, now, relative)
    assert T.utcoffset() == ctime.utcoffset()
    stamp = time.time()
    assert T.adjust_timestamp(stamp, 3) == ctime.adjust_timestamp(stamp, 3)
    items = list(range(10))
    assert list(F.chunks(iter(items), 4)) == list(cfun.chunks(iter(items), 4))
    for value in ("a", ["a"], ("a",), {"a": 1}, None, {1}):
        assert F.maybe_list(value) == cfun.maybe_list(value)
    assert F.dictfilter({"a": None, "b": 0}) == cfun.dictfilter({"a": None, "b": 0})
