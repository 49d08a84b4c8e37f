"""Expiration policies: which stacks a unit keeps, and what happens to the rest.

Pure functions over `StackView`s; time is always a parameter."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from domain.states import StackStatus
from domain.versions import Version

DEFAULT_NEW_STACK_GRACE = timedelta(minutes=30)
DEFAULT_GARBAGE_GRACE = timedelta(hours=24)


class ExpirationPolicy(StrEnum):
    RETAIN_ACTIVE = "retain-active"
    RETAIN_LATEST = "retain-latest"
    RETAIN_LATEST_TWO_MAJOR = "retain-latest-two-major"
    RETAIN_LATEST_TWO_FEATURE = "retain-latest-two-feature"
    RETAIN_ALWAYS = "retain-always"
    RETAIN_UNTIL_DEPRECATED = "retain-until-deprecated"


def default_policy(kind: str) -> ExpirationPolicy:
    """Services keep what is used; jobs keep their latest version."""
    return ExpirationPolicy.RETAIN_LATEST if kind == "job" else ExpirationPolicy.RETAIN_ACTIVE


def parse_policy(text: str) -> ExpirationPolicy:
    try:
        return ExpirationPolicy(text.strip().lower())
    except ValueError:
        known = ", ".join(p.value for p in ExpirationPolicy)
        raise ValueError(f"'{text}' is not an expiration policy ({known})") from None


@dataclass(frozen=True, slots=True)
class StackView:
    id: int
    unit: str
    version: Version
    namespace: str
    datacenter: str
    status: StackStatus
    created_at: datetime
    expires_at: datetime | None
    receiving_traffic: bool = False

    @property
    def deprecated(self) -> bool:
        return self.status is StackStatus.DEPRECATED


def _latest(stacks: Iterable[StackView]) -> list[StackView]:
    """The stacks of the newest version among those given (several plans share a version)."""
    candidates = [s for s in stacks if not s.deprecated]
    if not candidates:
        return []
    newest = max(s.version for s in candidates)
    return [s for s in candidates if s.version == newest]


def _retained_in_group(
    policy: ExpirationPolicy, group: Sequence[StackView], depended_on: frozenset[int]
) -> set[int]:
    if policy is ExpirationPolicy.RETAIN_ALWAYS:
        return {s.id for s in group}
    if policy is ExpirationPolicy.RETAIN_UNTIL_DEPRECATED:
        return {s.id for s in group if not s.deprecated}
    if policy is ExpirationPolicy.RETAIN_ACTIVE:
        return {s.id for s in group if s.id in depended_on or s.receiving_traffic}
    if policy is ExpirationPolicy.RETAIN_LATEST:
        return {s.id for s in _latest(group)}
    live = [s for s in group if not s.deprecated]
    if policy is ExpirationPolicy.RETAIN_LATEST_TWO_MAJOR:
        majors = sorted({s.version.major for s in live}, reverse=True)[:2]
        return {s.id for m in majors for s in _latest(x for x in live if x.version.major == m)}
    # retain-latest-two-feature: the two newest minors of the newest major
    if not live:
        return set()
    top = max(s.version.major for s in live)
    minors = sorted({s.version.minor for s in live if s.version.major == top}, reverse=True)[:2]
    return {
        s.id
        for minor in minors
        for s in _latest(x for x in live if x.version.feature == (top, minor))
    }


def retained(
    policy: ExpirationPolicy, stacks: Sequence[StackView], depended_on: Iterable[int] = ()
) -> frozenset[int]:
    """Ids the policy keeps, judged per (unit, datacenter, namespace). `depended_on` holds the
    ids of stacks with an incoming dependency from a live stack."""
    needed = frozenset(depended_on)
    groups: dict[tuple[str, str, str], list[StackView]] = defaultdict(list)
    for stack in stacks:
        groups[(stack.unit, stack.datacenter, stack.namespace)].append(stack)
    kept: set[int] = set()
    for group in groups.values():
        kept |= _retained_in_group(policy, group, needed)
    return frozenset(kept)


def protected(stacks: Sequence[StackView], depended_on: Iterable[int] = ()) -> frozenset[int]:
    """Never collected, whatever the policy: the stack receiving traffic, and anything a live
    stack depends on."""
    needed = frozenset(depended_on)
    return frozenset(s.id for s in stacks if s.receiving_traffic or s.id in needed)


class Verdict(StrEnum):
    KEEP = "keep"  # nothing to do (grace period, or not collectable)
    EXTEND = "extend"  # retained: push the expiry out
    EXPIRE = "expire"  # becomes garbage


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str
    expires_at: datetime | None = None


def decide(
    stack: StackView,
    is_retained: bool,
    now: datetime,
    policy: ExpirationPolicy,
    *,
    grace_new: timedelta = DEFAULT_NEW_STACK_GRACE,
    extend_by: timedelta = timedelta(hours=1),
) -> Decision:
    if stack.status not in (StackStatus.READY, StackStatus.DEPRECATED):
        return Decision(Verdict.KEEP, f"{stack.status} stacks are not judged by expiration")
    if now < stack.created_at + grace_new:
        return Decision(Verdict.KEEP, "within the grace period for new stacks")
    if is_retained:
        return Decision(Verdict.EXTEND, f"kept by {policy}", now + extend_by)
    if stack.expires_at is not None and now < stack.expires_at:
        return Decision(Verdict.KEEP, "not kept by its policy, but not expired yet")
    why = "it is deprecated" if stack.deprecated else f"{policy} does not keep it"
    return Decision(Verdict.EXPIRE, f"expired: {why}")


def reap_due(
    garbage_since: datetime, now: datetime, grace: timedelta = DEFAULT_GARBAGE_GRACE
) -> bool:
    return now >= garbage_since + grace
