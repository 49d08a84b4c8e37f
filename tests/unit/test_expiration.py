"""Expiration policies and cleanup decisions, on hand-built groups of stacks."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from domain.expiration import (
    DEFAULT_EXTENSION,
    DEFAULT_GARBAGE_GRACE,
    DEFAULT_NEW_STACK_GRACE,
    Decision,
    ExpirationPolicy,
    InvalidPolicy,
    StackView,
    Verdict,
    decide,
    default_policy,
    parse_policy,
    protected,
    protection,
    reap_due,
    retained,
    retention,
    review,
)
from domain.states import StackStatus
from domain.versions import Version

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
DAY = timedelta(days=1)
P = ExpirationPolicy
_ids = itertools.count(1)


def stack(
    version: str,
    status: StackStatus = StackStatus.READY,
    *,
    unit: str = "svc",
    ns: str = "dev",
    dc: str = "east",
    traffic: bool = False,
    deprecated: bool = False,
    age: timedelta = DAY,
    expires_in: timedelta | None = -MIN,
    plan: str = "",
) -> StackView:
    return StackView(
        id=next(_ids),
        unit=unit,
        version=Version.parse(version),
        namespace=ns,
        datacenter=dc,
        status=status,
        deprecated=deprecated,
        receiving_traffic=traffic,
        created_at=NOW - age,
        expires_at=NOW + expires_in if expires_in is not None else None,
        plan=plan,
    )


def kept(
    policy: ExpirationPolicy,
    stacks: list[StackView],
    live_dependents: Mapping[int, int] | Iterable[int] = (),
) -> list[str]:
    ids = retained(policy, stacks, live_dependents)
    return sorted(str(s.version) for s in stacks if s.id in ids)


# -- naming -------------------------------------------------------------------------------------


def test_defaults_per_kind() -> None:
    assert default_policy("service") is P.RETAIN_ACTIVE
    assert default_policy("job") is P.RETAIN_LATEST
    with pytest.raises(ValueError, match="'service' or a 'job'"):
        default_policy("daemon")


def test_parse_policy() -> None:
    assert parse_policy("retain-latest-two-major") is P.RETAIN_LATEST_TWO_MAJOR
    assert parse_policy(" Retain-Always ") is P.RETAIN_ALWAYS
    with pytest.raises(InvalidPolicy) as caught:
        parse_policy("retain-some")
    assert str(caught.value) == (
        "'retain-some' is not an expiration policy (choose retain-active, retain-latest, "
        "retain-latest-two-major, retain-latest-two-feature, retain-always, "
        "retain-until-deprecated)"
    )


def test_deprecated_status_sets_the_flag() -> None:
    assert stack("1.0.0", StackStatus.DEPRECATED).deprecated
    assert stack("1.0.0", deprecated=True).deprecated
    assert not stack("1.0.0").deprecated


# -- the "latest" policies -----------------------------------------------------------------------

HISTORY = ("1.0.0", "1.1.0", "1.1.5", "2.0.0", "2.2.9", "2.3.1", "2.3.4", "3.0.0", "3.0.2")


def test_retain_latest_keeps_only_the_newest_version() -> None:
    stacks = [stack(v) for v in HISTORY]
    assert kept(P.RETAIN_LATEST, stacks) == ["3.0.2"]


def test_retain_latest_two_major() -> None:
    stacks = [stack(v) for v in HISTORY]
    assert kept(P.RETAIN_LATEST_TWO_MAJOR, stacks) == ["2.3.4", "3.0.2"]
    only_one_major = [stack(v) for v in ("4.0.0", "4.1.0")]
    assert kept(P.RETAIN_LATEST_TWO_MAJOR, only_one_major) == ["4.1.0"]


def test_retain_latest_two_feature_looks_only_at_the_newest_major() -> None:
    stacks = [stack(v) for v in ("1.9.9", "2.1.0", "2.2.0", "2.2.9", "2.3.0", "2.3.1")]
    assert kept(P.RETAIN_LATEST_TWO_FEATURE, stacks) == ["2.2.9", "2.3.1"]
    # the newest major has a single minor: the previous major's minors do not fill in
    stacks = [stack(v) for v in ("1.8.0", "1.9.0", "2.0.0", "2.0.3")]
    assert kept(P.RETAIN_LATEST_TWO_FEATURE, stacks) == ["2.0.3"]


def test_deprecated_stacks_are_skipped_by_the_latest_policies() -> None:
    stacks = [stack(v) for v in HISTORY]
    stacks.append(stack("3.1.0", StackStatus.DEPRECATED))
    stacks.append(stack("4.0.0", deprecated=True))
    assert kept(P.RETAIN_LATEST, stacks) == ["3.0.2"]
    assert kept(P.RETAIN_LATEST_TWO_MAJOR, stacks) == ["2.3.4", "3.0.2"]
    assert kept(P.RETAIN_LATEST_TWO_FEATURE, stacks) == ["3.0.2"]
    every_one_deprecated = [stack(v, StackStatus.DEPRECATED) for v in ("1.0.0", "2.0.0")]
    assert kept(P.RETAIN_LATEST, every_one_deprecated) == []


def test_stacks_still_deploying_do_not_push_out_the_running_one() -> None:
    # 2.0.0 is still warming: 1.0.0 remains the latest until 2.0.0 is ready
    running, warming = stack("1.0.0"), stack("2.0.0", StackStatus.WARMING)
    failed = stack("3.0.0", StackStatus.FAILED)
    garbage = stack("2.5.0", StackStatus.GARBAGE)
    assert kept(P.RETAIN_LATEST, [running, warming, failed, garbage]) == ["1.0.0"]
    assert retained(P.RETAIN_ALWAYS, [warming, failed, garbage]) == frozenset()


def test_one_stack_per_plan_of_the_latest_version() -> None:
    small, big = stack("2.0.0", plan="small"), stack("2.0.0", plan="big")
    old = stack("1.0.0", plan="small")
    assert retained(P.RETAIN_LATEST, [small, big, old]) == {small.id, big.id}


def test_a_redeploy_replaces_the_older_stack_of_the_same_release_and_plan() -> None:
    first = stack("2.0.0", plan="default", age=2 * DAY)
    second = stack("2.0.0", plan="default", age=DAY)
    assert retained(P.RETAIN_LATEST, [second, first]) == {second.id}
    # without plans the views cannot tell a redeploy from two plans: both are kept
    a, b = stack("2.0.0", age=2 * DAY), stack("2.0.0")
    assert retained(P.RETAIN_LATEST, [a, b]) == {a.id, b.id}


def test_policies_judge_each_datacenter_and_namespace_separately() -> None:
    stacks = [
        stack("1.0.0", ns="dev"),
        stack("2.0.0", ns="qa"),
        stack("1.5.0", ns="dev", dc="west"),
        stack("0.9.0", ns="dev", unit="other"),
    ]
    assert kept(P.RETAIN_LATEST, stacks) == ["0.9.0", "1.0.0", "1.5.0", "2.0.0"]


# -- the other policies -----------------------------------------------------------------------


def test_retain_always_and_until_deprecated() -> None:
    stacks = [
        stack("1.0.0"),
        stack("1.1.0", StackStatus.DEPRECATED),
        stack("1.2.0", deprecated=True),
    ]
    assert kept(P.RETAIN_ALWAYS, stacks) == ["1.0.0", "1.1.0", "1.2.0"]
    assert kept(P.RETAIN_UNTIL_DEPRECATED, stacks) == ["1.0.0"]


def test_retain_active_keeps_traffic_and_dependencies() -> None:
    idle = stack("1.0.0")
    serving = stack("1.1.0", traffic=True)
    called = stack("0.9.0")
    uncalled = stack("0.8.0")
    stacks = [idle, serving, called, uncalled]
    assert kept(P.RETAIN_ACTIVE, stacks, [called.id]) == ["0.9.0", "1.1.0"]
    # dependents may be given as counts; a count of zero is no dependency
    assert kept(P.RETAIN_ACTIVE, stacks, {called.id: 2, uncalled.id: 0}) == ["0.9.0", "1.1.0"]
    assert retention(P.RETAIN_ACTIVE, stacks, [called.id]) == {
        serving.id: "it receives the traffic for svc 1.x",
        called.id: "a live stack depends on it",
    }


def test_retain_active_keeps_the_serving_stack_of_each_major() -> None:
    v1, v2, newer_v2 = stack("1.4.0", traffic=True), stack("2.0.0", traffic=True), stack("2.1.0")
    assert kept(P.RETAIN_ACTIVE, [v1, v2, newer_v2]) == ["1.4.0", "2.0.0"]


# -- protection ---------------------------------------------------------------------------------


def test_protection_ignores_the_policy() -> None:
    serving = stack("1.0.0", traffic=True)
    called = stack("0.5.0")
    both = stack("0.4.0", traffic=True)
    idle = stack("2.0.0")
    stacks = [serving, called, both, idle]
    assert protected(stacks, {called.id: 3, both.id: 1}) == {serving.id, called.id, both.id}
    assert protection(stacks, {called.id: 3, both.id: 1}) == {
        serving.id: "it receives the traffic for svc 1.x",
        called.id: "3 live stacks depend on it",
        both.id: "it receives the traffic for svc 0.x and a live stack depends on it",
    }
    assert protected(stacks, []) == {serving.id, both.id}


# -- decisions ----------------------------------------------------------------------------------


def test_new_stacks_are_left_alone_during_their_grace() -> None:
    young = stack("1.0.0", age=29 * MIN, expires_in=-MIN)
    decision = decide(young, False, NOW, P.RETAIN_LATEST)
    assert decision == Decision(
        Verdict.KEEP, "it is in its first 30 minutes, when new stacks are never cleaned up"
    )
    # at exactly the end of the grace the stack is judged
    judged = stack("1.0.0", age=30 * MIN, expires_in=timedelta(0))
    assert decide(judged, False, NOW, P.RETAIN_LATEST).verdict is Verdict.EXPIRE
    assert decide(young, False, NOW, grace_new=10 * MIN).verdict is Verdict.EXPIRE


def test_retained_stacks_get_a_later_expiry() -> None:
    decision = decide(stack("1.0.0"), True, NOW, P.RETAIN_LATEST)
    assert decision.verdict is Verdict.EXTEND
    assert decision.expires_at == NOW + DEFAULT_EXTENSION == NOW + 30 * MIN
    assert decision.reason == "kept: retain-latest keeps it; extended to 2026-11-25 12:30+00:00"
    longer = decide(stack("1.0.0"), True, NOW, extend_by=timedelta(hours=2))
    assert longer.expires_at == NOW + timedelta(hours=2)
    assert longer.reason.startswith("kept: its policy keeps it;")


def test_extending_never_shortens_an_expiry() -> None:
    far = stack("1.0.0", expires_in=DAY)
    decision = decide(far, True, NOW, P.RETAIN_ALWAYS)
    assert decision.verdict is Verdict.KEEP
    assert decision.reason == (
        "kept: retain-always keeps it; it already runs until 2026-11-26 12:00+00:00"
    )


def test_unretained_stacks_expire_once_their_expiry_passes() -> None:
    pending = stack("1.0.0", expires_in=5 * MIN)
    decision = decide(pending, False, NOW, P.RETAIN_LATEST)
    assert decision == Decision(
        Verdict.KEEP,
        "retain-latest does not keep it: it is not the latest version, "
        "but it does not expire until 2026-11-25 12:05+00:00",
    )
    at_expiry = stack("1.0.0", expires_in=timedelta(0))
    assert decide(at_expiry, False, NOW, P.RETAIN_LATEST) == Decision(
        Verdict.EXPIRE,
        "expired at 2026-11-25 12:00+00:00; "
        "retain-latest does not keep it: it is not the latest version",
    )


def test_expiry_reasons_name_the_cause() -> None:
    deprecated = stack("1.0.0", StackStatus.DEPRECATED)
    assert decide(deprecated, False, NOW, P.RETAIN_LATEST_TWO_MAJOR).reason.endswith(
        "retain-latest-two-major does not keep it: it is deprecated"
    )
    idle = stack("1.0.0")
    assert decide(idle, False, NOW, P.RETAIN_ACTIVE).reason.endswith(
        "nothing live depends on it and it receives no traffic"
    )
    assert decide(idle, False, NOW).reason.endswith("its policy does not keep it")


def test_a_stack_without_an_expiry_expires_when_its_grace_ended() -> None:
    assert decide(stack("1.0.0", expires_in=None), False, NOW).reason.startswith(
        "expired at 2026-11-24 12:30+00:00"
    )


@pytest.mark.parametrize(
    "status",
    [
        StackStatus.PENDING,
        StackStatus.DEPLOYING,
        StackStatus.WARMING,
        StackStatus.FAILED,
        StackStatus.GARBAGE,
        StackStatus.TERMINATED,
    ],
)
def test_only_ready_and_deprecated_stacks_are_judged(status: StackStatus) -> None:
    decision = decide(stack("1.0.0", status), False, NOW, P.RETAIN_LATEST)
    assert decision == Decision(Verdict.KEEP, f"{status} stacks are not judged by expiration")


# -- a whole review ---------------------------------------------------------------------------


def test_review_combines_policy_protection_and_grace() -> None:
    newest = stack("3.0.0")
    serving = stack("2.0.0", traffic=True)  # an older version still takes the traffic
    called = stack("1.5.0")  # something live still calls it
    stale = stack("1.0.0")
    not_yet = stack("0.9.0", expires_in=10 * MIN)
    fresh = stack("0.8.0", age=5 * MIN)
    warming = stack("4.0.0", StackStatus.WARMING)
    stacks = [newest, serving, called, stale, not_yet, fresh, warming]
    decisions = review(P.RETAIN_LATEST, stacks, {called.id: 1}, NOW)
    verdicts = {s.version.major * 10 + s.version.minor: decisions[s.id].verdict for s in stacks}
    assert verdicts == {
        30: Verdict.EXTEND,
        20: Verdict.EXTEND,
        15: Verdict.EXTEND,
        10: Verdict.EXPIRE,
        9: Verdict.KEEP,
        8: Verdict.KEEP,
        40: Verdict.KEEP,
    }
    assert decisions[newest.id].reason.startswith("kept: it is the latest version;")
    assert decisions[serving.id].reason.startswith("kept: it receives the traffic for svc 2.x;")
    assert decisions[called.id].reason.startswith("kept: a live stack depends on it;")
    assert decisions[stale.id].reason == (
        "expired at 2026-11-25 11:59+00:00; "
        "retain-latest does not keep it: it is not the latest version"
    )
    assert {d.expires_at for d in decisions.values() if d.verdict is Verdict.EXTEND} == {
        NOW + DEFAULT_EXTENSION
    }


def test_review_never_collects_a_deprecated_stack_that_still_serves() -> None:
    serving = stack("1.0.0", StackStatus.DEPRECATED, traffic=True)
    decisions = review(P.RETAIN_UNTIL_DEPRECATED, [serving], (), NOW)
    assert decisions[serving.id].verdict is Verdict.EXTEND


def test_review_accepts_dependents_as_a_one_shot_iterator() -> None:
    called, idle = stack("1.0.0"), stack("0.9.0")
    decisions = review(P.RETAIN_ACTIVE, [called, idle], iter([called.id]), NOW)
    assert decisions[called.id].reason.startswith("kept: a live stack depends on it;")
    assert decisions[idle.id].verdict is Verdict.EXPIRE


# -- reaping ------------------------------------------------------------------------------------


def test_garbage_is_reaped_only_after_its_grace() -> None:
    assert timedelta(hours=24) == DEFAULT_GARBAGE_GRACE
    assert timedelta(minutes=30) == DEFAULT_NEW_STACK_GRACE
    assert not reap_due(NOW, NOW)
    assert not reap_due(NOW, NOW + timedelta(hours=24) - timedelta(seconds=1))
    assert reap_due(NOW, NOW + timedelta(hours=24))
    assert reap_due(NOW, NOW + timedelta(days=3))
    assert not reap_due(NOW, NOW + timedelta(hours=2), garbage_grace=timedelta(hours=3))
    assert reap_due(NOW, NOW + timedelta(hours=3), garbage_grace=timedelta(hours=3))
