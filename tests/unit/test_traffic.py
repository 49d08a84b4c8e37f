"""Traffic shifting at its boundaries; time is always a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.traffic import (
    ALL_NEW,
    ALL_OLD,
    DEFAULT_DURATION,
    DEFAULT_POLICY,
    Direction,
    ShiftPolicy,
    Weights,
    elapsed,
    ends_at,
    is_complete,
    progress,
    reverse_duration,
    steps,
    weights_at,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
TEN = 10 * MIN
LINEAR, ATOMIC = ShiftPolicy.LINEAR, ShiftPolicy.ATOMIC


def test_defaults() -> None:
    assert DEFAULT_POLICY is ShiftPolicy.LINEAR
    assert DEFAULT_DURATION == TEN
    assert ShiftPolicy("atomic") is ATOMIC


# -- weights --------------------------------------------------------------------------------------


def test_weights_must_be_fractions_summing_to_one() -> None:
    assert Weights(0.25, 0.75).old == 0.25
    for old, new in [(0.5, 0.6), (1.2, -0.2), (-0.1, 1.1), (float("nan"), 1.0), (0.0, 0.0)]:
        with pytest.raises(ValueError, match="summing to 1"):
            Weights(old, new)


def test_of_new_clamps() -> None:
    assert Weights.of_new(0.25) == Weights(0.75, 0.25)
    assert Weights.of_new(-3) == ALL_OLD
    assert Weights.of_new(7) == ALL_NEW


@pytest.mark.parametrize(
    ("new", "percent"),
    [
        (0.0, (100, 0)),
        (1.0, (0, 100)),
        (1 / 3, (67, 33)),
        (2 / 3, (34, 66)),  # the new stack gets only whole percents it has reached
        (0.3, (70, 30)),  # float noise (0.3 * 100 < 30) does not cost a percent
        (0.004, (100, 0)),
        (0.995, (1, 99)),  # the old stack keeps a share until the shift is really over
        (0.5, (50, 50)),
    ],
)
def test_as_percent(new: float, percent: tuple[int, int]) -> None:
    assert Weights.of_new(new).as_percent() == percent


# -- progress and elapsed time ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "spent", "expected"),
    [
        (LINEAR, -MIN, 0.0),
        (LINEAR, timedelta(0), 0.0),
        (LINEAR, 2 * MIN, 0.2),
        (LINEAR, TEN, 1.0),
        (LINEAR, 3 * TEN, 1.0),
        (ATOMIC, timedelta(0), 0.0),
        (ATOMIC, TEN - timedelta(microseconds=1), 0.0),
        (ATOMIC, TEN, 1.0),
        (ATOMIC, 3 * TEN, 1.0),
    ],
)
def test_progress(policy: ShiftPolicy, spent: timedelta, expected: float) -> None:
    assert progress(policy, spent, TEN) == pytest.approx(expected)


def test_a_zero_duration_is_instant_and_a_negative_one_is_refused() -> None:
    assert progress(LINEAR, timedelta(0), timedelta(0)) == 1.0
    assert progress(ATOMIC, timedelta(0), timedelta(0)) == 1.0
    with pytest.raises(ValueError, match="negative"):
        progress(LINEAR, MIN, -MIN)


def test_elapsed_skips_paused_time_and_is_never_negative() -> None:
    assert elapsed(T0, T0 + 7 * MIN) == 7 * MIN
    assert elapsed(T0, T0 - MIN) == timedelta(0)  # not started yet
    assert elapsed(T0, T0 + 7 * MIN, paused_total=3 * MIN) == 4 * MIN
    # paused since minute 2, now minute 7: the clock stopped at 2
    assert elapsed(T0, T0 + 7 * MIN, paused_since=T0 + 2 * MIN) == 2 * MIN
    # an earlier 1-minute pause, and paused again since minute 5
    assert elapsed(T0, T0 + 9 * MIN, MIN, T0 + 5 * MIN) == 4 * MIN
    # a pause recorded as starting after now does not add time
    assert elapsed(T0, T0 + 3 * MIN, paused_since=T0 + 5 * MIN) == 3 * MIN
    assert elapsed(T0, T0 + MIN, paused_total=5 * MIN) == timedelta(0)
    with pytest.raises(ValueError, match="negative"):
        elapsed(T0, T0, paused_total=-MIN)


# -- weights over time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "at", "new"),
    [
        (LINEAR, -MIN, 0.0),  # before start
        (LINEAR, timedelta(0), 0.0),  # at start
        (LINEAR, 3 * MIN, 0.3),
        (LINEAR, 5 * MIN, 0.5),  # mid
        (LINEAR, TEN, 1.0),  # at end
        (LINEAR, 2 * TEN, 1.0),  # after end
        (ATOMIC, -MIN, 0.0),
        (ATOMIC, timedelta(0), 0.0),
        (ATOMIC, 5 * MIN, 0.0),
        (ATOMIC, TEN - timedelta(seconds=1), 0.0),
        (ATOMIC, TEN, 1.0),
        (ATOMIC, 2 * TEN, 1.0),
    ],
)
def test_forward_weights(policy: ShiftPolicy, at: timedelta, new: float) -> None:
    w = weights_at(policy, T0, TEN, T0 + at)
    assert w.new == pytest.approx(new)
    assert w.old == pytest.approx(1 - new)


def test_the_end_is_exact() -> None:
    assert weights_at(LINEAR, T0, TEN, T0 + TEN) == ALL_NEW
    assert weights_at(LINEAR, T0, TEN, T0 + TEN, start_weights=Weights.of_new(0.1)) == ALL_NEW
    assert weights_at(ATOMIC, T0, TEN, T0 + TEN) == ALL_NEW


def test_paused_shift_holds_its_weights() -> None:
    paused = T0 + 2 * MIN
    for now in (paused, T0 + 5 * MIN, T0 + 30 * MIN):
        w = weights_at(LINEAR, T0, TEN, now, paused_since=paused)
        assert w.as_percent() == (80, 20)
        assert not is_complete(LINEAR, T0, TEN, now, paused_since=paused)
    assert ends_at(T0, TEN, paused_since=paused) is None
    # an atomic shift paused just before its end does not flip
    assert weights_at(ATOMIC, T0, TEN, T0 + 20 * MIN, paused_since=T0 + 9 * MIN) == ALL_OLD


def test_paused_then_resumed_continues_where_it_stopped() -> None:
    # paused from minute 2 to minute 8 (6 minutes), resumed: at minute 8 still 20%
    paused = 6 * MIN
    assert weights_at(LINEAR, T0, TEN, T0 + 8 * MIN, paused).new == pytest.approx(0.2)
    assert weights_at(LINEAR, T0, TEN, T0 + 11 * MIN, paused).new == pytest.approx(0.5)
    assert ends_at(T0, TEN, paused) == T0 + 16 * MIN
    assert not is_complete(LINEAR, T0, TEN, T0 + 16 * MIN - timedelta(seconds=1), paused)
    assert is_complete(LINEAR, T0, TEN, T0 + 16 * MIN, paused)
    assert weights_at(LINEAR, T0, TEN, T0 + 16 * MIN, paused) == ALL_NEW
    # atomic waits the full duration of unpaused time too
    assert weights_at(ATOMIC, T0, TEN, T0 + 15 * MIN, paused) == ALL_OLD
    assert weights_at(ATOMIC, T0, TEN, T0 + 16 * MIN, paused) == ALL_NEW


def test_forward_from_a_partial_start() -> None:
    start = Weights.of_new(0.2)
    assert weights_at(LINEAR, T0, TEN, T0, start_weights=start) == start
    assert weights_at(LINEAR, T0, TEN, T0 + 5 * MIN, start_weights=start).new == pytest.approx(0.6)


def test_reverse_from_mid_shift() -> None:
    # a linear shift caught at 60% new is sent back
    stood = weights_at(LINEAR, T0, TEN, T0 + 6 * MIN)
    assert stood.as_percent() == (40, 60)
    back = T0 + 6 * MIN
    took = reverse_duration(stood, TEN)
    assert took == 6 * MIN  # back at the forward rate
    at = weights_at(LINEAR, back, took, back, start_weights=stood, direction="reverse")
    assert at.new == pytest.approx(0.6)  # from where it stands, no jump
    at = weights_at(LINEAR, back, took, back + 3 * MIN, start_weights=stood, direction="reverse")
    assert at.new == pytest.approx(0.3)
    at = weights_at(LINEAR, back, took, back + 6 * MIN, start_weights=stood, direction="reverse")
    assert at == ALL_OLD
    assert is_complete(LINEAR, back, took, back + 6 * MIN)
    # the same reverse spread over the full duration instead
    half = weights_at(
        LINEAR, back, TEN, back + 5 * MIN, start_weights=stood, direction=Direction.REVERSE
    )
    assert half.new == pytest.approx(0.3)


def test_reverse_with_the_atomic_policy() -> None:
    # atomic holds the weights where they stand until the duration ends, then all old
    stood = ALL_NEW
    assert weights_at(ATOMIC, T0, TEN, T0 + 9 * MIN, start_weights=stood, direction="reverse") == (
        ALL_NEW
    )
    assert weights_at(ATOMIC, T0, TEN, T0 + TEN, start_weights=stood, direction="reverse") == (
        ALL_OLD
    )
    # reversing an atomic shift that had not flipped yet: nothing to move, over at once
    assert reverse_duration(ALL_OLD, TEN) == timedelta(0)
    assert is_complete(ATOMIC, T0, reverse_duration(ALL_OLD, TEN), T0)


def test_older_keyword_spellings_still_work() -> None:
    start = Weights.of_new(0.6)
    w = weights_at(LINEAR, T0, TEN, T0 + 5 * MIN, start=start, reverse=True)
    assert w.new == pytest.approx(0.3)


def test_ends_at() -> None:
    assert ends_at(T0, TEN) == T0 + TEN
    assert ends_at(T0, TEN, 2 * MIN) == T0 + 12 * MIN


# -- schedules --------------------------------------------------------------------------------


def test_linear_steps() -> None:
    schedule = steps(LINEAR, TEN, 2 * MIN)
    assert [offset for offset, _ in schedule] == [2 * MIN, 4 * MIN, 6 * MIN, 8 * MIN, TEN]
    assert [w.as_percent() for _, w in schedule] == [
        (80, 20),
        (60, 40),
        (40, 60),
        (20, 80),
        (0, 100),
    ]
    assert schedule[-1][1] == ALL_NEW


def test_linear_steps_when_the_interval_does_not_divide_the_duration() -> None:
    schedule = steps(LINEAR, TEN, 3 * MIN)
    assert [offset for offset, _ in schedule] == [3 * MIN, 6 * MIN, 9 * MIN, TEN]
    assert [w.as_percent()[1] for _, w in schedule] == [30, 60, 90, 100]
    # an interval longer than the duration: straight to the end
    assert steps(LINEAR, TEN, 2 * TEN) == [(TEN, ALL_NEW)]


def test_atomic_is_a_single_step_at_the_end() -> None:
    assert steps(ATOMIC, TEN, MIN) == [(TEN, ALL_NEW)]
    assert steps(ATOMIC, TEN, MIN, ALL_NEW, "reverse") == [(TEN, ALL_OLD)]


def test_reverse_steps_from_where_the_shift_stands() -> None:
    schedule = steps(LINEAR, 4 * MIN, MIN, Weights.of_new(0.8), Direction.REVERSE)
    assert [w.as_percent()[1] for _, w in schedule] == [60, 40, 20, 0]
    assert schedule[-1] == (4 * MIN, ALL_OLD)


def test_steps_agree_with_weights_at() -> None:
    for offset, w in steps(LINEAR, TEN, 90 * timedelta(seconds=1)):
        assert w.new == pytest.approx(weights_at(LINEAR, T0, TEN, T0 + offset).new)


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="interval must be positive"):
        steps(LINEAR, TEN, timedelta(0))
    with pytest.raises(ValueError, match="negative"):
        steps(LINEAR, -TEN, MIN)
    with pytest.raises(ValueError, match="longer interval"):
        steps(LINEAR, timedelta(days=30), timedelta(seconds=1))
    assert steps(LINEAR, timedelta(0), MIN) == [(timedelta(0), ALL_NEW)]


# -- properties -------------------------------------------------------------------------------

seconds = st.integers(-600, 3600)
fractions = st.floats(0, 1)
policies = st.sampled_from(list(ShiftPolicy))


@given(policies, seconds, seconds, fractions, st.integers(0, 1200))
def test_forward_weights_sum_to_one_and_never_go_back(
    policy: ShiftPolicy, a: int, b: int, start_new: float, length: int
) -> None:
    early, late = sorted((a, b))
    start, duration = Weights.of_new(start_new), timedelta(seconds=length)
    w1 = weights_at(policy, T0, duration, T0 + timedelta(seconds=early), start_weights=start)
    w2 = weights_at(policy, T0, duration, T0 + timedelta(seconds=late), start_weights=start)
    for w in (w1, w2):
        assert w.old + w.new == pytest.approx(1)
        assert sum(w.as_percent()) == 100
        assert start.new - 1e-12 <= w.new <= 1
    assert w1.new <= w2.new
    assert w1.as_percent()[1] <= w2.as_percent()[1]


@given(policies, seconds, seconds, fractions, st.integers(0, 1200))
def test_reverse_weights_only_fall(
    policy: ShiftPolicy, a: int, b: int, start_new: float, length: int
) -> None:
    early, late = sorted((a, b))
    start, duration = Weights.of_new(start_new), timedelta(seconds=length)
    w1 = weights_at(
        policy,
        T0,
        duration,
        T0 + timedelta(seconds=early),
        start_weights=start,
        direction="reverse",
    )
    w2 = weights_at(
        policy, T0, duration, T0 + timedelta(seconds=late), start_weights=start, direction="reverse"
    )
    assert 0 <= w2.new <= w1.new <= start.new + 1e-12
    assert w1.old + w1.new == pytest.approx(1)


@given(policies, st.integers(1, 3600), st.integers(1, 600))
def test_schedules_are_monotonic_and_end_at_the_destination(
    policy: ShiftPolicy, length: int, every: int
) -> None:
    duration, interval = timedelta(seconds=length), timedelta(seconds=every)
    schedule = steps(policy, duration, interval)
    offsets = [offset for offset, _ in schedule]
    assert offsets == sorted(set(offsets))
    assert schedule[-1] == (duration, ALL_NEW)
    news = [w.new for _, w in schedule]
    assert news == sorted(news)
