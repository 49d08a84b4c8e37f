"""The stack state machine: which statuses exist and which moves between them are legal."""

from __future__ import annotations

from enum import StrEnum


class StackStatus(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    WARMING = "warming"
    READY = "ready"
    DEPRECATED = "deprecated"
    GARBAGE = "garbage"
    FAILED = "failed"
    TERMINATED = "terminated"

    @property
    def is_live(self) -> bool:
        """Live stacks occupy a target: a second stack of the same release there is refused."""
        return self in LIVE_STATUSES

    @property
    def is_final(self) -> bool:
        return self is StackStatus.TERMINATED


LIVE_STATUSES = frozenset(
    {
        StackStatus.PENDING,
        StackStatus.DEPLOYING,
        StackStatus.WARMING,
        StackStatus.READY,
        StackStatus.DEPRECATED,
    }
)

# Nelson's lifecycle, plus the exits a real deploy needs: a stack can fail at any point before
# it is ready (the image vanished while pending, health never came while warming); a failed
# stack, even one that never started, is then terminated. Garbage may return to ready while it
# waits to be reaped (or to deprecated, if it was): the grace before reaping exists so a
# mistaken collection can be undone ("Keep").
TRANSITIONS: dict[StackStatus, frozenset[StackStatus]] = {
    StackStatus.PENDING: frozenset({StackStatus.DEPLOYING, StackStatus.FAILED}),
    StackStatus.DEPLOYING: frozenset({StackStatus.WARMING, StackStatus.FAILED}),
    StackStatus.WARMING: frozenset({StackStatus.READY, StackStatus.FAILED}),
    StackStatus.READY: frozenset({StackStatus.DEPRECATED, StackStatus.GARBAGE}),
    StackStatus.DEPRECATED: frozenset({StackStatus.GARBAGE}),
    StackStatus.GARBAGE: frozenset(
        {StackStatus.TERMINATED, StackStatus.READY, StackStatus.DEPRECATED}
    ),
    StackStatus.FAILED: frozenset({StackStatus.TERMINATED}),
    StackStatus.TERMINATED: frozenset(),
}


class IllegalTransition(ValueError):
    def __init__(self, current: StackStatus, target: StackStatus) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing (it is final)"
        super().__init__(
            f"a stack cannot go from {current} to {target}; from {current} it may go to {allowed}"
        )
        self.current = current
        self.target = target


def can_transition(current: StackStatus, target: StackStatus) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: StackStatus, target: StackStatus) -> StackStatus:
    """Return `target` if the move is legal, else raise IllegalTransition."""
    if not can_transition(current, target):
        raise IllegalTransition(current, target)
    return target
