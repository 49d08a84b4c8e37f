"""Versions, stack names, the state machine and the dependency graph."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.graph import CycleError, DependencyGraph
from domain.stack_names import (
    InvalidStackName,
    is_stack_name,
    new_hash,
    parse_stack_name,
    stack_name,
)
from domain.states import (
    LIVE_STATUSES,
    TRANSITIONS,
    IllegalTransition,
    StackStatus,
    can_transition,
    check_transition,
)
from domain.versions import InvalidVersion, Version

versions = st.builds(Version, st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3", (1, 2, 3)),
        ("v1.2.3", (1, 2, 3)),
        ("V2", (2, 0, 0)),
        ("1.2", (1, 2, 0)),
        (" 0.0.1 ", (0, 0, 1)),
    ],
)
def test_version_parse(text: str, expected: tuple[int, int, int]) -> None:
    v = Version.parse(text)
    assert (v.major, v.minor, v.patch) == expected


@pytest.mark.parametrize(
    "text", ["", "1.2.3.4", "01.2.3", "1.x", "-1.0.0", "v", "1..2", "1.2.3-rc1"]
)
def test_version_rejects(text: str) -> None:
    with pytest.raises(InvalidVersion):
        Version.parse(text)


def test_version_order_and_parts() -> None:
    assert Version.parse("1.10.0") > Version.parse("1.9.9") > Version.parse("1.9.0")
    assert Version.parse("1.2.3").feature == (1, 2)
    assert Version.parse("1.2.3").dashed == "1-2-3"


@given(versions)
def test_version_round_trip(v: Version) -> None:
    assert Version.parse(str(v)) == v


@given(versions, versions)
def test_version_order_matches_tuples(a: Version, b: Version) -> None:
    assert (a < b) == ((a.major, a.minor, a.patch) < (b.major, b.minor, b.patch))


def test_stack_names() -> None:
    name = stack_name("howdy-http", Version(1, 2, 3), "k3x9q0ab")
    assert name == "howdy-http--1-2-3--k3x9q0ab"
    parsed = parse_stack_name(name)
    assert (parsed.unit, parsed.version, parsed.hash) == (
        "howdy-http",
        Version(1, 2, 3),
        "k3x9q0ab",
    )
    assert str(parsed) == name
    assert is_stack_name(name) and not is_stack_name("howdy--http--1-2-3--k3x9q0ab")
    with pytest.raises(InvalidStackName, match="stack names look like"):
        parse_stack_name("howdy-http-1.2.3")
    assert new_hash(random.Random(1)) == new_hash(random.Random(1))
    assert len(new_hash()) == 8 and new_hash() != new_hash()


@given(st.from_regex(r"[a-z]([a-z0-9]|-[a-z0-9]){0,20}", fullmatch=True), versions)
def test_stack_name_round_trip(unit: str, version: Version) -> None:
    parsed = parse_stack_name(stack_name(unit, version, new_hash()))
    assert (parsed.unit, parsed.version) == (unit, version)


def test_legal_lifecycle() -> None:
    path = ["pending", "deploying", "warming", "ready", "deprecated", "garbage", "terminated"]
    for a, b in itertools.pairwise(path):
        assert can_transition(StackStatus(a), StackStatus(b))
    assert can_transition(StackStatus.DEPLOYING, StackStatus.FAILED)
    assert can_transition(StackStatus.READY, StackStatus.GARBAGE)
    assert can_transition(StackStatus.FAILED, StackStatus.TERMINATED)


def test_illegal_transitions_are_refused_with_reason() -> None:
    with pytest.raises(IllegalTransition, match="from pending it may go to deploying, failed"):
        check_transition(StackStatus.PENDING, StackStatus.READY)
    with pytest.raises(IllegalTransition, match="nothing"):
        check_transition(StackStatus.TERMINATED, StackStatus.PENDING)
    assert not TRANSITIONS[StackStatus.TERMINATED]
    assert StackStatus.READY.is_live and not StackStatus.FAILED.is_live
    assert StackStatus.GARBAGE not in LIVE_STATUSES


def test_graph_queries() -> None:
    g: DependencyGraph[str] = DependencyGraph()
    g.add_edge("web", "accounts")
    g.add_edge("accounts", "db")
    g.add_edge("jobs", "db")
    assert g.dependencies_of("web") == {"accounts"}
    assert g.dependents_of("db") == {"accounts", "jobs"}
    assert g.transitive_dependencies("web") == {"accounts", "db"}
    assert g.transitive_dependents("db") == {"accounts", "jobs", "web"}
    order = g.topological_order()
    assert order.index("db") < order.index("accounts") < order.index("web")
    assert g.find_cycles() == []


def test_graph_cycles() -> None:
    g: DependencyGraph[str] = DependencyGraph()
    for a, b in [("a", "b"), ("b", "c"), ("c", "a"), ("x", "x"), ("c", "d")]:
        g.add_edge(a, b)
    cycles = sorted(g.find_cycles())
    assert cycles == [["a", "b", "c"], ["x"]]
    with pytest.raises(CycleError, match="->"):
        g.topological_order()


def test_graph_is_iterative_for_long_chains() -> None:
    g: DependencyGraph[int] = DependencyGraph()
    for n in range(50_000):
        g.add_edge(n, n + 1)
    assert g.find_cycles() == []
    assert len(g.transitive_dependencies(0)) == 50_000
    g.add_edge(50_000, 0)
    assert len(g.find_cycles()[0]) == 50_001
