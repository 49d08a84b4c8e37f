"""The pure rules of locks and freezes: what a lock covers, `until` moments, weekly windows."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.locks import FREEZE, LOCK, Lock, UntilError, parse_until, window_end

WED = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def lock(kind: str, unit: str | None, namespace: str | None, dc: str | None = None) -> Lock:
    return Lock(1, kind, unit, namespace, dc, "why", "U1", WED, WED + timedelta(hours=1))


def test_what_a_lock_and_a_freeze_cover() -> None:
    assert lock(LOCK, "a", "prod").covers("a", "prod/eu", "dc-east")
    assert not lock(LOCK, "a", "prod").covers("b", "prod", None)
    assert not lock(LOCK, "a", "prod").covers("a", "production", None)
    assert lock(LOCK, "a", None).covers("a", "dev", None)
    assert lock(FREEZE, None, "prod", "dc-east").covers("any", "prod", "dc-east")
    assert not lock(FREEZE, None, "prod", "dc-east").covers("any", "prod", "dc-west")
    assert lock(FREEZE, None, "prod", "dc-east").covers("any", "prod", None)
    held = lock(LOCK, "a", "prod")
    assert held.active(WED) and not held.active(WED + timedelta(hours=1))


def test_until_moments() -> None:
    assert parse_until("18:00").resolve(WED) == datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    assert parse_until("08:00").resolve(WED) == datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    assert parse_until("2026-12-01").resolve(WED) == datetime(2026, 12, 1, tzinfo=UTC)
    moment = parse_until("2026-12-01 7:05")
    assert moment.text == "2026-12-01T07:05"
    assert moment.resolve(WED) == datetime(2026, 12, 1, 7, 5, tzinfo=UTC)
    for bad in ("24:00", "2026-13-01", "tomorrow", "12:60"):
        with pytest.raises(UntilError):
            parse_until(bad)


def test_weekly_windows() -> None:
    weekend = ("sat", "sun")
    assert window_end(weekend, 0, 1440, WED) is None
    saturday = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)
    assert window_end(weekend, 0, 1440, saturday) == datetime(2026, 11, 30, tzinfo=UTC)
    # Friday 18:00 to 06:00: Saturday 05:00 is inside (it began the day before)
    night = datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    assert window_end(("fri",), 18 * 60, 6 * 60, night) == datetime(2026, 11, 28, 6, tzinfo=UTC)
    assert window_end(("fri",), 18 * 60, 6 * 60, night + timedelta(hours=1)) is None


@given(
    st.lists(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1),
    st.integers(0, 1439),
    st.integers(1, 1440),
    st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)).map(lambda d: d.replace(tzinfo=UTC)),
)
def test_an_open_window_ends_later_and_is_open_until_then(
    days: list[str], start: int, end: int, now: datetime
) -> None:
    closes = window_end(days, start, end, now)
    if closes is None:
        return
    assert now < closes <= now + timedelta(days=9)  # a window open all week: about a week
    assert window_end(days, start, end, closes - timedelta(seconds=1)) is not None


def test_dates_round_trip() -> None:
    assert parse_until(date(2026, 1, 2).isoformat()).day == date(2026, 1, 2)
