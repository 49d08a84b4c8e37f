"""The steps of the deploy workflow, in order, and how far along each one is (for progress)."""

from __future__ import annotations

from domain.states import StackStatus

DEPLOY_STEPS: tuple[str, ...] = ("resolve", "replicate", "secrets", "launch", "warm")

_DONE = {
    StackStatus.READY,
    StackStatus.DEPRECATED,
    StackStatus.GARBAGE,
    StackStatus.TERMINATED,
}


def progress(status: StackStatus, step: str | None) -> float:
    """0.0 (nothing done) .. 1.0 (ready), from a stack's status and current step."""
    if status in _DONE:
        return 1.0
    if status is StackStatus.WARMING:
        return (len(DEPLOY_STEPS) - 0.5) / (len(DEPLOY_STEPS) + 1)
    if step in DEPLOY_STEPS:
        return DEPLOY_STEPS.index(step) / (len(DEPLOY_STEPS) + 1)
    return 0.0


def finished(status: StackStatus) -> bool:
    """The deploy of this stack is over, one way or the other."""
    return status in _DONE or status is StackStatus.FAILED
