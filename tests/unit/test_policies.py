"""Traffic-shift and expiration policies at their boundaries, with time as a parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.expiration import (
    ExpirationPolicy,
    StackView,
    Verdict,
    decide,
    default_policy,
    parse_policy,
    protected,
    reap_due,
    retained,
)
from domain.states import StackStatus
from domain.traffic import (
    ALL_NEW,
    ALL_OLD,
    ShiftPolicy,
    Weights,
    elapsed,
    is_complete,
    steps,
    weights_at,
)
from domain.versions import Version

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TEN = timedelta(minutes=10)
minute = timedelta(minutes=1)


@pytest.mark.parametrize(
    ("policy", "at", "new"),
    [
        (ShiftPolicy.LINEAR, -minute, 0.0),  # before start
        (ShiftPolicy.LINEAR, timedelta(0), 0.0),  # at start
        (ShiftPolicy.LINEAR, 5 * minute, 0.5),
        (ShiftPolicy.LINEAR, TEN, 1.0),  # at end
        (ShiftPolicy.LINEAR, 2 * TEN, 1.0),  # after end
        (ShiftPolicy.ATOMIC, 9 * minute, 0.0),
        (ShiftPolicy.ATOMIC, TEN, 1.0),
    ],
)
def test_forward_weights(policy: ShiftPolicy, at: timedelta, new: float) -> None:
    assert weights_at(policy, T0, TEN, T0 + at).new == pytest.approx(new)


def test_paused_time_does_not_count() -> None:
    # paused from minute 2 and still paused at minute 8: stuck at 20%
    w = weights_at(ShiftPolicy.LINEAR, T0, TEN, T0 + 8 * minute, paused_since=T0 + 2 * minute)
    assert w.new == pytest.approx(0.2)
    # resumed after 6 paused minutes: at minute 8 only 2 minutes counted
    w = weights_at(ShiftPolicy.LINEAR, T0, TEN, T0 + 8 * minute, paused_total=6 * minute)
    assert w.new == pytest.approx(0.2)
    assert elapsed(T0, T0 - minute) == timedelta(0)
    assert not is_complete(ShiftPolicy.LINEAR, T0, TEN, T0 + 11 * minute, paused_total=2 * minute)
    assert is_complete(ShiftPolicy.LINEAR, T0, TEN, T0 + 12 * minute, paused_total=2 * minute)


def test_reverse_from_mid_shift() -> None:
    start = Weights.of_new(0.6)
    assert weights_at(
        ShiftPolicy.LINEAR, T0, TEN, T0, start=start, reverse=True
    ).new == pytest.approx(0.6)
    half = weights_at(ShiftPolicy.LINEAR, T0, TEN, T0 + 5 * minute, start=start, reverse=True)
    assert half.new == pytest.approx(0.3)
    assert weights_at(ShiftPolicy.LINEAR, T0, TEN, T0 + TEN, start=start, reverse=True) == ALL_OLD
    atomic = weights_at(ShiftPolicy.ATOMIC, T0, TEN, T0 + 9 * minute, start=start, reverse=True)
    assert atomic.new == pytest.approx(0.6)


def test_percentages_sum_to_100() -> None:
    assert Weights.of_new(1 / 3).as_percent() == (67, 33)
    with pytest.raises(ValueError):
        Weights(0.5, 0.6)


def test_step_schedules() -> None:
    linear = steps(ShiftPolicy.LINEAR, TEN, 2 * minute)
    assert [offset for offset, _ in linear] == [2 * minute * k for k in range(1, 6)]
    assert [w.as_percent()[1] for _, w in linear] == [20, 40, 60, 80, 100]
    assert steps(ShiftPolicy.ATOMIC, TEN, minute) == [(TEN, ALL_NEW)]
    with pytest.raises(ValueError):
        steps(ShiftPolicy.LINEAR, TEN, timedelta(0))


@given(st.integers(0, 1200), st.integers(0, 1200), st.floats(0, 1))
def test_weights_valid_and_monotonic(a: int, b: int, start_new: float) -> None:
    early, late = sorted((a, b))
    start = Weights.of_new(start_new)
    w1 = weights_at(ShiftPolicy.LINEAR, T0, TEN, T0 + timedelta(seconds=early), start=start)
    w2 = weights_at(ShiftPolicy.LINEAR, T0, TEN, T0 + timedelta(seconds=late), start=start)
    assert w1.new <= w2.new + 1e-12
    assert abs(w1.old + w1.new - 1) < 1e-9


# -- expiration ----------------------------------------------------------------------------------

_ids = iter(range(1, 10_000))


def view(
    version: str,
    status: StackStatus = StackStatus.READY,
    unit: str = "svc",
    traffic: bool = False,
    age: timedelta = timedelta(days=1),
    expires: timedelta | None = -minute,
    ns: str = "dev",
) -> StackView:
    return StackView(
        id=next(_ids),
        unit=unit,
        version=Version.parse(version),
        namespace=ns,
        datacenter="dc",
        status=status,
        created_at=T0 - age,
        expires_at=T0 + expires if expires is not None else None,
        receiving_traffic=traffic,
    )


def kept(
    policy: ExpirationPolicy, stacks: list[StackView], depended: tuple[int, ...] = ()
) -> set[str]:
    ids = retained(policy, stacks, depended)
    return {str(s.version) for s in stacks if s.id in ids}


def test_defaults_and_parsing() -> None:
    assert default_policy("service") is ExpirationPolicy.RETAIN_ACTIVE
    assert default_policy("job") is ExpirationPolicy.RETAIN_LATEST
    assert parse_policy(" Retain-Latest ") is ExpirationPolicy.RETAIN_LATEST
    with pytest.raises(ValueError, match="retain-always"):
        parse_policy("retain-some")


def test_latest_policies() -> None:
    stacks = [
        view(v) for v in ("1.0.0", "1.1.0", "1.1.5", "2.0.0", "2.3.1", "2.3.4", "2.4.0", "3.0.0")
    ]
    stacks.append(view("3.1.0", StackStatus.DEPRECATED))
    assert kept(ExpirationPolicy.RETAIN_LATEST, stacks) == {"3.0.0"}
    assert kept(ExpirationPolicy.RETAIN_LATEST_TWO_MAJOR, stacks) == {"3.0.0", "2.4.0"}
    two_feature = [view(v) for v in ("2.2.0", "2.2.9", "2.3.0", "2.3.1", "1.9.9")]
    assert kept(ExpirationPolicy.RETAIN_LATEST_TWO_FEATURE, two_feature) == {"2.3.1", "2.2.9"}
    assert kept(ExpirationPolicy.RETAIN_UNTIL_DEPRECATED, stacks) == {
        str(s.version) for s in stacks if s.status is StackStatus.READY
    }
    assert len(kept(ExpirationPolicy.RETAIN_ALWAYS, stacks)) == len(stacks)


def test_retain_active_keeps_traffic_and_dependencies() -> None:
    old, serving, needed = view("1.0.0"), view("1.1.0", traffic=True), view("0.9.0")
    assert kept(ExpirationPolicy.RETAIN_ACTIVE, [old, serving, needed], (needed.id,)) == {
        "1.1.0",
        "0.9.0",
    }
    assert protected([old, serving, needed], (needed.id,)) == {serving.id, needed.id}


def test_policies_apply_per_namespace() -> None:
    stacks = [view("1.0.0", ns="dev"), view("2.0.0", ns="qa")]
    assert kept(ExpirationPolicy.RETAIN_LATEST, stacks) == {"1.0.0", "2.0.0"}


def test_decisions() -> None:
    policy = ExpirationPolicy.RETAIN_LATEST
    young = view("1.0.0", age=10 * minute)
    assert decide(young, False, T0, policy).verdict is Verdict.KEEP
    old = view("1.0.0")
    extend = decide(old, True, T0, policy, extend_by=timedelta(hours=2))
    assert extend.verdict is Verdict.EXTEND and extend.expires_at == T0 + timedelta(hours=2)
    expire = decide(old, False, T0, policy)
    assert expire.verdict is Verdict.EXPIRE and "retain-latest does not keep it" in expire.reason
    not_yet = view("1.0.0", expires=minute)
    assert decide(not_yet, False, T0, policy).verdict is Verdict.KEEP
    deprecated = view("1.0.0", StackStatus.DEPRECATED)
    assert "deprecated" in decide(deprecated, False, T0, policy).reason
    assert decide(view("1.0.0", StackStatus.WARMING), False, T0, policy).verdict is Verdict.KEEP


def test_reaping_waits_for_the_garbage_grace() -> None:
    assert not reap_due(T0, T0 + timedelta(hours=23))
    assert reap_due(T0, T0 + timedelta(hours=24))
