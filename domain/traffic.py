"""Traffic-shift policies: how routing weight moves between an old and a new stack over time.

Pure arithmetic: the caller says when the shift started, how long it lasts, how long it has
been paused, and what time it is now; these functions say where the weights stand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

_ZERO = timedelta(0)
# A schedule finer than this is a mistake (an interval in microseconds, say), not a plan.
MAX_STEPS = 100_000


class ShiftPolicy(StrEnum):
    LINEAR = "linear"  # the new stack's share grows in proportion to time
    ATOMIC = "atomic"  # nothing moves until the duration ends, then everything does


class Direction(StrEnum):
    FORWARD = "forward"  # towards the new stack
    REVERSE = "reverse"  # back towards the old stack


class ShiftState(StrEnum):
    """Where a traffic shift stands (see `domain.records.TrafficShift` for the moves)."""

    AWAITING_APPROVAL = "awaiting-approval"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"  # all traffic on the new stack
    REVERSED = "reversed"  # all traffic back on the old stack
    CANCELLED = "cancelled"  # the approval was refused or the new stack stopped being routable
    SUPERSEDED = "superseded"  # a newer stack of the same route took over


# Moving weights now (a driver steps them), and open: at most one of these per route.
ACTIVE_SHIFT_STATES = (ShiftState.RUNNING, ShiftState.PAUSED)
OPEN_SHIFT_STATES = (ShiftState.AWAITING_APPROVAL, *ACTIVE_SHIFT_STATES)


# Linear over ten minutes: the new version meets a growing slice of real traffic, which
# surfaces a bad release while most callers are still on the old one, and ten minutes is long
# enough for error rates and alerts to react yet short enough that two versions do not serve
# side by side for long. Atomic is there for units that cannot run two versions at once.
DEFAULT_POLICY = ShiftPolicy.LINEAR
DEFAULT_DURATION = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Weights:
    """Fractions of traffic for the old and the new stack; they sum to 1."""

    old: float
    new: float

    def __post_init__(self) -> None:
        # written so that NaN fails too: every comparison with NaN is false
        valid = 0 <= self.old <= 1 and 0 <= self.new <= 1 and abs(self.old + self.new - 1) <= 1e-9
        if not valid:
            raise ValueError(
                f"weights must be fractions between 0 and 1 summing to 1, "
                f"got old={self.old}, new={self.new}"
            )

    @classmethod
    def of_new(cls, new: float) -> Weights:
        """The weights that give `new` (clamped to 0..1) to the new stack."""
        new = min(max(new, 0.0), 1.0)
        return cls(1.0 - new, new)

    def as_percent(self) -> tuple[int, int]:
        """(old, new) as whole percents summing to 100.

        The new stack's share is rounded down (the old one's up): the stack under trial gets
        only the traffic it has fully earned, reaches 100 only when the shift is really over,
        and the known-good stack never shows 0 while any traffic is still meant for it. The
        tiny allowance absorbs float noise such as 0.3 * 100 = 29.999999999999996."""
        new = min(math.floor(self.new * 100 + 1e-9), 100)
        return 100 - new, new


ALL_OLD = Weights(1.0, 0.0)
ALL_NEW = Weights(0.0, 1.0)


def progress(policy: ShiftPolicy, elapsed: timedelta, duration: timedelta) -> float:
    """The fraction of the way the shift has come, 0..1, after `elapsed` of `duration`.

    Linear: elapsed / duration, clamped. Atomic: 0 until the duration is over, then 1.
    A zero duration completes at once."""
    if duration < _ZERO:
        raise ValueError(f"a traffic shift cannot last a negative time ({duration})")
    if elapsed >= duration:
        return 1.0
    if elapsed <= _ZERO or policy is ShiftPolicy.ATOMIC:
        return 0.0
    return min(elapsed / duration, 1.0)


def elapsed(
    started_at: datetime,
    now: datetime,
    paused_total: timedelta = _ZERO,
    paused_since: datetime | None = None,
) -> timedelta:
    """Shift time that has passed at `now`.

    `paused_total` is the length of earlier pauses, already over; `paused_since` is when the
    current pause began, if the shift is paused now. Paused time does not count, and the
    result is never negative (a shift that has not started yet has made no progress)."""
    if paused_total < _ZERO:
        raise ValueError(f"paused time cannot be negative ({paused_total})")
    end = min(paused_since, now) if paused_since is not None else now
    return max(end - started_at - paused_total, _ZERO)


def weights_at(
    policy: ShiftPolicy,
    started_at: datetime,
    duration: timedelta,
    now: datetime,
    paused_total: timedelta = _ZERO,
    paused_since: datetime | None = None,
    start_weights: Weights = ALL_OLD,
    direction: Direction | Literal["forward", "reverse"] = Direction.FORWARD,
    *,
    start: Weights | None = None,
    reverse: bool | None = None,
) -> Weights:
    """The weights at `now`.

    Forward moves from `start_weights` to all-new; reverse moves from `start_weights` back to
    all-old. Both follow the policy: the weights cover the fraction `progress(...)` of the
    distance between where they started and where they are going. To reverse at the rate the
    forward shift had, give the reverse the duration `reverse_duration(...)`.

    `start` and `reverse=True` are older spellings of `start_weights` and
    `direction="reverse"`, still accepted."""
    if start is not None:
        start_weights = start
    if reverse:
        direction = Direction.REVERSE
    target = 0.0 if Direction(direction) is Direction.REVERSE else 1.0
    done = progress(policy, elapsed(started_at, now, paused_total, paused_since), duration)
    return _between(start_weights, target, done)


def is_complete(
    policy: ShiftPolicy,
    started_at: datetime,
    duration: timedelta,
    now: datetime,
    paused_total: timedelta = _ZERO,
    paused_since: datetime | None = None,
) -> bool:
    """Whether the shift has reached its destination (either direction) by `now`."""
    return progress(policy, elapsed(started_at, now, paused_total, paused_since), duration) >= 1


def ends_at(
    started_at: datetime,
    duration: timedelta,
    paused_total: timedelta = _ZERO,
    paused_since: datetime | None = None,
) -> datetime | None:
    """When the shift will complete if nothing else pauses it; None while it is paused,
    since then nobody knows."""
    if paused_since is not None:
        return None
    return started_at + paused_total + max(duration, _ZERO)


def reverse_duration(start_weights: Weights, duration: timedelta) -> timedelta:
    """How long a reverse should take to go back at the forward shift's own rate.

    Going back is as far as the new stack's share, so it takes that fraction of the full
    duration: a shift caught at 60% comes back in 60% of its duration, and one reversed
    before any traffic moved is over at once."""
    return duration * start_weights.new


def steps(
    policy: ShiftPolicy,
    duration: timedelta,
    interval: timedelta,
    start_weights: Weights = ALL_OLD,
    direction: Direction | Literal["forward", "reverse"] = Direction.FORWARD,
    *,
    start: Weights | None = None,
) -> list[tuple[timedelta, Weights]]:
    """The weight changes to apply every `interval`, as (offset from the start, weights).

    The weights at offset 0 are `start_weights` themselves and are not listed. The last step
    is always at `duration` with the destination weights; atomic has only that one."""
    if interval <= _ZERO:
        raise ValueError(f"the step interval must be positive, got {interval}")
    if duration < _ZERO:
        raise ValueError(f"a traffic shift cannot last a negative time ({duration})")
    if start is not None:
        start_weights = start
    target = 0.0 if Direction(direction) is Direction.REVERSE else 1.0
    final = (duration, _between(start_weights, target, 1.0))
    if policy is ShiftPolicy.ATOMIC:
        return [final]
    if duration / interval > MAX_STEPS:
        raise ValueError(
            f"applying weights every {interval} over {duration} makes more than "
            f"{MAX_STEPS} steps; choose a longer interval"
        )
    schedule: list[tuple[timedelta, Weights]] = []
    offset = interval
    while offset < duration:
        schedule.append(
            (offset, _between(start_weights, target, progress(policy, offset, duration)))
        )
        offset += interval
    schedule.append(final)
    return schedule


def _between(start: Weights, target_new: float, done: float) -> Weights:
    if done >= 1:
        # exact, not start + (target - start) * 1, which float rounding can leave a hair short
        return Weights.of_new(target_new)
    return Weights.of_new(start.new + (target_new - start.new) * done)
