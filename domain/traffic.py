"""Traffic-shift policies: how weight moves from an old stack to a new one over time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

# Linear over ten minutes: slow enough to notice a bad release on real traffic, short enough
# not to keep two versions side by side for long.
DEFAULT_DURATION = timedelta(minutes=10)


class ShiftPolicy(StrEnum):
    LINEAR = "linear"
    ATOMIC = "atomic"


DEFAULT_POLICY = ShiftPolicy.LINEAR


@dataclass(frozen=True, slots=True)
class Weights:
    old: float
    new: float

    def __post_init__(self) -> None:
        if not (0 <= self.old <= 1 and 0 <= self.new <= 1) or abs(self.old + self.new - 1) > 1e-9:
            raise ValueError(f"weights must be fractions summing to 1, got {self.old}, {self.new}")

    @classmethod
    def of_new(cls, new: float) -> Weights:
        new = min(max(new, 0.0), 1.0)
        return cls(1.0 - new, new)

    def as_percent(self) -> tuple[int, int]:
        new = round(self.new * 100)
        return 100 - new, new


ALL_OLD = Weights(1.0, 0.0)
ALL_NEW = Weights(0.0, 1.0)


def progress(policy: ShiftPolicy, elapsed: timedelta, duration: timedelta) -> float:
    """How much of the way the shift has come, 0..1."""
    if elapsed <= timedelta(0):
        return 1.0 if duration <= timedelta(0) else 0.0
    if elapsed >= duration:
        return 1.0
    if policy is ShiftPolicy.ATOMIC:
        return 0.0
    return elapsed / duration


def elapsed(
    started_at: datetime,
    now: datetime,
    paused_total: timedelta = timedelta(0),
    paused_since: datetime | None = None,
) -> timedelta:
    """Shift time that has passed: time spent paused does not count; never negative."""
    end = paused_since if paused_since is not None and paused_since < now else now
    return max(end - started_at - paused_total, timedelta(0))


def weights_at(
    policy: ShiftPolicy,
    started_at: datetime,
    duration: timedelta,
    now: datetime,
    *,
    paused_total: timedelta = timedelta(0),
    paused_since: datetime | None = None,
    start: Weights = ALL_OLD,
    reverse: bool = False,
) -> Weights:
    """Forward moves from `start` to all-new; reverse moves from `start` back to all-old,
    by the same policy."""
    done = progress(policy, elapsed(started_at, now, paused_total, paused_since), duration)
    target = 0.0 if reverse else 1.0
    return Weights.of_new(start.new + (target - start.new) * done)


def is_complete(
    policy: ShiftPolicy,
    started_at: datetime,
    duration: timedelta,
    now: datetime,
    *,
    paused_total: timedelta = timedelta(0),
    paused_since: datetime | None = None,
) -> bool:
    return progress(policy, elapsed(started_at, now, paused_total, paused_since), duration) >= 1.0


def steps(
    policy: ShiftPolicy, duration: timedelta, interval: timedelta, start: Weights = ALL_OLD
) -> list[tuple[timedelta, Weights]]:
    """When weights change and to what, applying every `interval` (atomic: once, at the end)."""
    if interval <= timedelta(0):
        raise ValueError("the step interval must be positive")
    if policy is ShiftPolicy.ATOMIC or duration <= timedelta(0):
        return [(max(duration, timedelta(0)), ALL_NEW)]
    schedule: list[tuple[timedelta, Weights]] = []
    offset = interval
    while offset < duration:
        fraction = offset / duration
        schedule.append((offset, Weights.of_new(start.new + (1 - start.new) * fraction)))
        offset += interval
    schedule.append((duration, ALL_NEW))
    return schedule
