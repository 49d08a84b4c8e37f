"""The stack state machine."""

from __future__ import annotations

import itertools

import pytest

from domain.states import (
    LIVE_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    StackStatus,
    can_transition,
    check_transition,
)

S = StackStatus


def test_every_status_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(StackStatus)


def test_the_happy_path_is_legal() -> None:
    path = [S.PENDING, S.DEPLOYING, S.WARMING, S.READY, S.DEPRECATED, S.GARBAGE, S.TERMINATED]
    for current, target in itertools.pairwise(path):
        assert check_transition(current, target) is target


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.DEPLOYING, S.FAILED),
        (S.WARMING, S.FAILED),  # never became healthy
        (S.PENDING, S.FAILED),
        (S.READY, S.GARBAGE),  # collected without being deprecated first
        (S.FAILED, S.TERMINATED),
        (S.GARBAGE, S.READY),  # rescued before reaping
        (S.GARBAGE, S.DEPRECATED),  # rescued, still deprecated
    ],
)
def test_side_exits_are_legal(current: StackStatus, target: StackStatus) -> None:
    assert can_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PENDING, S.READY),  # skipping the deploy
        (S.WARMING, S.DEPRECATED),
        (S.READY, S.TERMINATED),  # must become garbage first
        (S.DEPRECATED, S.READY),
        (S.FAILED, S.READY),
        (S.FAILED, S.GARBAGE),
        (S.READY, S.READY),
        (S.TERMINATED, S.PENDING),
    ],
)
def test_other_moves_are_illegal(current: StackStatus, target: StackStatus) -> None:
    assert not can_transition(current, target)
    with pytest.raises(IllegalTransition) as caught:
        check_transition(current, target)
    assert (caught.value.current, caught.value.target) == (current, target)


def test_can_transition_agrees_with_the_table_for_every_pair() -> None:
    for current, target in itertools.product(StackStatus, repeat=2):
        assert can_transition(current, target) == (target in TRANSITIONS[current])


def test_refusals_explain_what_is_allowed() -> None:
    with pytest.raises(IllegalTransition) as caught:
        check_transition(S.PENDING, S.READY)
    assert str(caught.value) == (
        "a stack cannot go from pending to ready; from pending it may go to deploying, failed"
    )
    with pytest.raises(IllegalTransition, match=r"nothing \(it is final\)"):
        check_transition(S.TERMINATED, S.PENDING)


def test_live_and_final() -> None:
    assert {s for s in StackStatus if s.is_live} == {
        S.PENDING,
        S.DEPLOYING,
        S.WARMING,
        S.READY,
        S.DEPRECATED,
    }
    assert {s for s in StackStatus if s.is_live} == LIVE_STATUSES
    assert [s for s in StackStatus if s.is_final] == [S.TERMINATED]
    assert TRANSITIONS[S.TERMINATED] == frozenset()


def test_terminated_is_reachable_from_every_status() -> None:
    # nothing can get stuck: every status leads, eventually, to terminated
    for start in StackStatus:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert S.TERMINATED in seen, start


def test_statuses_are_their_text() -> None:
    assert StackStatus("warming") is S.WARMING
    assert f"{S.READY}" == "ready"
