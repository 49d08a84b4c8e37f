"""Expiration policies: which stacks a unit keeps, and what happens to the rest.

Every stack has an expiry time. A periodic review extends the expiry of the stacks their
policy retains; a stack whose expiry passes becomes garbage, and garbage is reaped after a
further grace period. Everything here is a pure function of `StackView`s and the time given.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeAlias

from domain.states import StackStatus
from domain.versions import Version

DEFAULT_NEW_STACK_GRACE = timedelta(minutes=30)
DEFAULT_GARBAGE_GRACE = timedelta(hours=24)
DEFAULT_NOTICE = timedelta(hours=4)  # least time between announcing a removal and doing it
# Each review pushes a retained stack's expiry this far ahead. It must comfortably exceed the
# time between reviews, or a retained stack could expire between two of them.
DEFAULT_EXTENSION = timedelta(minutes=30)

# Only stacks that serve (or could serve) traffic are judged. Earlier states are still being
# deployed, failed stacks are cleaned up by their own path, and garbage is already condemned.
JUDGED = frozenset({StackStatus.READY, StackStatus.DEPRECATED})


class ExpirationPolicy(StrEnum):
    RETAIN_ACTIVE = "retain-active"
    RETAIN_LATEST = "retain-latest"
    RETAIN_LATEST_TWO_MAJOR = "retain-latest-two-major"
    RETAIN_LATEST_TWO_FEATURE = "retain-latest-two-feature"
    RETAIN_ALWAYS = "retain-always"
    RETAIN_UNTIL_DEPRECATED = "retain-until-deprecated"


class InvalidPolicy(ValueError):
    pass


def default_policy(kind: str) -> ExpirationPolicy:
    """Services keep what is in use; a job has no callers, so only its latest version runs."""
    if kind == "service":
        return ExpirationPolicy.RETAIN_ACTIVE
    if kind == "job":
        return ExpirationPolicy.RETAIN_LATEST
    raise ValueError(f"a unit is a 'service' or a 'job', not '{kind}'")


def parse_policy(text: str) -> ExpirationPolicy:
    try:
        return ExpirationPolicy(text.strip().lower())
    except ValueError:
        known = ", ".join(p.value for p in ExpirationPolicy)
        raise InvalidPolicy(f"'{text}' is not an expiration policy (choose {known})") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class StackView:
    """What the policies need to know about one stack.

    A stack counts as deprecated when `deprecated` is set or its status is DEPRECATED; the
    flag is normalised so `deprecated` can be read directly. `plan` is optional: when given,
    two stacks of the same version and plan (a redeploy) keep only the newer one."""

    id: int
    unit: str
    version: Version
    namespace: str
    datacenter: str
    status: StackStatus
    deprecated: bool = False
    receiving_traffic: bool = False
    created_at: datetime
    expires_at: datetime | None = None
    plan: str = ""

    def __post_init__(self) -> None:
        if self.status is StackStatus.DEPRECATED and not self.deprecated:
            object.__setattr__(self, "deprecated", True)

    @property
    def group(self) -> tuple[str, str, str]:
        """Policies compare a stack only with others of its unit in its datacenter and
        namespace: each of those is a separate world."""
        return (self.unit, self.datacenter, self.namespace)


LiveDependents: TypeAlias = Mapping[int, int] | Iterable[int]


def _depended_on(live_dependents: LiveDependents) -> frozenset[int]:
    """Ids of stacks a live stack depends on: a mapping id -> number of live dependents, or
    simply the ids themselves."""
    if isinstance(live_dependents, Mapping):
        return frozenset(i for i, count in live_dependents.items() if count > 0)
    return frozenset(live_dependents)


# -- which stacks a policy keeps ----------------------------------------------------------------


def retention(
    policy: ExpirationPolicy, stacks: Sequence[StackView], live_dependents: LiveDependents = ()
) -> dict[int, str]:
    """The stacks `policy` retains, each with the reason, judged per (unit, datacenter,
    namespace). Only ready and deprecated stacks are judged."""
    depended_on = _depended_on(live_dependents)
    groups: dict[tuple[str, str, str], list[StackView]] = defaultdict(list)
    for stack in stacks:
        if stack.status in JUDGED:
            groups[stack.group].append(stack)
    kept: dict[int, str] = {}
    for group in groups.values():
        kept.update(_retain(policy, group, depended_on))
    return kept


def retained(
    policy: ExpirationPolicy, stacks: Sequence[StackView], live_dependents: LiveDependents = ()
) -> frozenset[int]:
    """Ids of the stacks `policy` retains (see `retention` for the reasons)."""
    return frozenset(retention(policy, stacks, live_dependents))


def protection(stacks: Sequence[StackView], live_dependents: LiveDependents = ()) -> dict[int, str]:
    """Stacks never collected whatever the policy, with the reason: collecting the stack that
    receives traffic, or one a live stack calls, would break a running service."""
    depended_on = _depended_on(live_dependents)
    counts = live_dependents if isinstance(live_dependents, Mapping) else {}
    why: dict[int, str] = {}
    for stack in stacks:
        reasons = []
        if stack.receiving_traffic:
            reasons.append(f"it receives the traffic for {stack.unit} {stack.version.major}.x")
        if stack.id in depended_on:
            count = counts.get(stack.id, 0)
            callers = f"{count} live stacks depend" if count > 1 else "a live stack depends"
            reasons.append(f"{callers} on it")
        if reasons:
            why[stack.id] = " and ".join(reasons)
    return why


def protected(stacks: Sequence[StackView], live_dependents: LiveDependents = ()) -> frozenset[int]:
    """Ids of the stacks no policy may collect (see `protection`)."""
    return frozenset(protection(stacks, live_dependents))


def _retain(
    policy: ExpirationPolicy, group: Sequence[StackView], depended_on: frozenset[int]
) -> dict[int, str]:
    if policy is ExpirationPolicy.RETAIN_ALWAYS:
        return {s.id: "retain-always keeps every stack" for s in group}
    if policy is ExpirationPolicy.RETAIN_UNTIL_DEPRECATED:
        return {s.id: "it is not deprecated" for s in group if not s.deprecated}
    if policy is ExpirationPolicy.RETAIN_ACTIVE:
        kept: dict[int, str] = {}
        for s in group:
            if s.receiving_traffic:
                kept[s.id] = f"it receives the traffic for {s.unit} {s.version.major}.x"
            elif s.id in depended_on:
                kept[s.id] = "a live stack depends on it"
        return kept
    # The "latest" policies: deprecated stacks neither count as kept nor stand in the way,
    # so the newest version that is not deprecated is the latest.
    current = [s for s in group if not s.deprecated]
    if not current:
        return {}
    if policy is ExpirationPolicy.RETAIN_LATEST:
        return {s.id: "it is the latest version" for s in _newest(current)}
    if policy is ExpirationPolicy.RETAIN_LATEST_TWO_MAJOR:
        majors = sorted({s.version.major for s in current}, reverse=True)[:2]
        return {
            s.id: f"it is the latest {major}.x.x"
            for major in majors
            for s in _newest([c for c in current if c.version.major == major])
        }
    top = max(s.version.major for s in current)
    minors = sorted({s.version.minor for s in current if s.version.major == top}, reverse=True)
    return {
        s.id: f"it is the latest {top}.{minor}.x"
        for minor in minors[:2]
        for s in _newest([c for c in current if c.version.feature == (top, minor)])
    }


def _newest(stacks: Sequence[StackView]) -> list[StackView]:
    """The stacks of the newest version. Several stacks of one version can coexist: one per
    plan, all kept. Two of the same version and plan mean a redeploy: only the newer stays."""
    newest = max(s.version for s in stacks)
    chosen: dict[tuple[str, int], StackView] = {}
    for s in stacks:
        if s.version != newest:
            continue
        key = (s.plan, 0) if s.plan else ("", s.id)  # without a plan, no stack replaces another
        known = chosen.get(key)
        if known is None or (s.created_at, s.id) > (known.created_at, known.id):
            chosen[key] = s
    return list(chosen.values())


_NOT_KEPT = {
    ExpirationPolicy.RETAIN_ACTIVE: "nothing live depends on it and it receives no traffic",
    ExpirationPolicy.RETAIN_LATEST: "it is not the latest version",
    ExpirationPolicy.RETAIN_LATEST_TWO_MAJOR: "it is not the latest of the two newest majors",
    ExpirationPolicy.RETAIN_LATEST_TWO_FEATURE: (
        "it is not the latest of the two newest feature versions of the newest major"
    ),
    ExpirationPolicy.RETAIN_ALWAYS: "it was not retained",
    ExpirationPolicy.RETAIN_UNTIL_DEPRECATED: "it is deprecated",
}


# -- what to do with one stack ------------------------------------------------------------------


class Verdict(StrEnum):
    KEEP = "keep"  # nothing to write: new, not judged, or not expired yet
    EXTEND = "extend"  # retained: push the expiry out to `expires_at`
    EXPIRE = "expire"  # its expiry passed and nothing keeps it: it becomes garbage


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    reason: str  # a sentence for the audit log and for `inspect`
    expires_at: datetime | None = None  # the new expiry, for EXTEND


def decide(
    stack: StackView,
    retained: bool,
    now: datetime,
    policy: ExpirationPolicy | None = None,
    *,
    grace_new: timedelta = DEFAULT_NEW_STACK_GRACE,
    extend_by: timedelta = DEFAULT_EXTENSION,
    kept_because: str | None = None,
) -> Decision:
    """Judge one stack. `retained` says whether its policy (or protection) keeps it;
    `kept_because` and `policy` only make the reason more precise."""
    if stack.status not in JUDGED:
        return Decision(Verdict.KEEP, f"{stack.status} stacks are not judged by expiration")
    if now < stack.created_at + grace_new:
        return Decision(
            Verdict.KEEP,
            f"it is in its first {_span(grace_new)}, when new stacks are never cleaned up",
        )
    if retained:
        why = kept_because or (f"{policy} keeps it" if policy else "its policy keeps it")
        new_expiry = now + extend_by
        if stack.expires_at is not None and stack.expires_at >= new_expiry:
            # never shorten an expiry someone set further out
            return Decision(
                Verdict.KEEP, f"kept: {why}; it already runs until {_at(stack.expires_at)}"
            )
        return Decision(Verdict.EXTEND, f"kept: {why}; extended to {_at(new_expiry)}", new_expiry)
    # a stack without a recorded expiry is treated as expiring when its grace ended
    expiry = stack.expires_at if stack.expires_at is not None else stack.created_at + grace_new
    if policy is None:
        why_not = "its policy does not keep it"
    elif policy is ExpirationPolicy.RETAIN_ALWAYS:
        why_not = "it was not retained"
    else:
        why_not = f"{policy} does not keep it: {_why_not(policy, stack)}"
    if now < expiry:
        return Decision(Verdict.KEEP, f"{why_not}, but it does not expire until {_at(expiry)}")
    return Decision(Verdict.EXPIRE, f"expired at {_at(expiry)}; {why_not}")


def review(
    policy: ExpirationPolicy,
    stacks: Sequence[StackView],
    live_dependents: LiveDependents,
    now: datetime,
    *,
    grace_new: timedelta = DEFAULT_NEW_STACK_GRACE,
    extend_by: timedelta = DEFAULT_EXTENSION,
) -> dict[int, Decision]:
    """One pass of the periodic process over `stacks` (all under `policy`): a decision per
    stack id. Protection wins over the policy, so traffic and live callers are never cut."""
    if not isinstance(live_dependents, Mapping):
        live_dependents = frozenset(live_dependents)  # read twice below; an iterator would not be
    keep = retention(policy, stacks, live_dependents)
    keep.update(protection(stacks, live_dependents))
    return {
        s.id: decide(
            s,
            s.id in keep,
            now,
            policy,
            grace_new=grace_new,
            extend_by=extend_by,
            kept_because=keep.get(s.id),
        )
        for s in stacks
    }


def reap_due(
    garbage_since: datetime, now: datetime, garbage_grace: timedelta = DEFAULT_GARBAGE_GRACE
) -> bool:
    """Garbage is removed only after `garbage_grace`, leaving time to notice a mistake."""
    return now >= garbage_since + garbage_grace


def removal_at(
    garbage_since: datetime,
    announced_at: datetime | None,
    garbage_grace: timedelta = DEFAULT_GARBAGE_GRACE,
    notice: timedelta = DEFAULT_NOTICE,
) -> datetime | None:
    """When garbage may be removed: never before its removal was announced (None until then),
    and only once both the garbage grace and the notice after the announcement have passed,
    so people always get time to press Keep."""
    if announced_at is None:
        return None
    return max(garbage_since + garbage_grace, announced_at + notice)


def _why_not(policy: ExpirationPolicy, stack: StackView) -> str:
    if stack.deprecated and policy is not ExpirationPolicy.RETAIN_ACTIVE:
        return "it is deprecated"
    return _NOT_KEPT[policy]


def _at(moment: datetime) -> str:
    # equal moments in other zones print otherwise: the zone is part of the key
    return _worded(moment, moment.tzinfo)


@functools.lru_cache(maxsize=4096)
def _worded(moment: datetime, _zone: object) -> str:
    # a pass words a reason for every stack it judges, and most share a few expiries
    return moment.isoformat(sep=" ", timespec="minutes")


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} seconds"
