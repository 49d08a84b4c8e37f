"""The dependency graph: queries, cycles and order, including very large graphs."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.graph import CycleError, DependencyGraph


def graph(*edges: tuple[str, str]) -> DependencyGraph[str]:
    return DependencyGraph.from_edges(edges)


def test_direct_and_transitive_queries() -> None:
    g = graph(("web", "accounts"), ("accounts", "db"), ("jobs", "db"))
    assert g.nodes == ("web", "accounts", "db", "jobs")
    assert g.dependencies_of("web") == frozenset({"accounts"})
    assert g.dependents_of("db") == frozenset({"accounts", "jobs"})
    assert g.dependencies_of("db") == frozenset()
    assert g.transitive_dependencies("web") == frozenset({"accounts", "db"})
    assert g.transitive_dependents("db") == frozenset({"accounts", "jobs", "web"})
    assert g.transitive_dependents("web") == frozenset()
    assert g.reachable_from(["web", "jobs"]) == frozenset({"accounts", "db"})
    assert list(g.edges()) == [("web", "accounts"), ("accounts", "db"), ("jobs", "db")]
    assert len(g) == 4 and "db" in g and "cache" not in g


def test_unknown_nodes_have_no_neighbours() -> None:
    g = graph(("a", "b"))
    assert g.dependencies_of("zzz") == frozenset()
    assert g.dependents_of("zzz") == frozenset()
    assert g.transitive_dependencies("zzz") == frozenset()


def test_isolated_nodes_and_repeated_edges() -> None:
    g: DependencyGraph[str] = DependencyGraph()
    g.add_node("lonely")
    g.add_node("lonely")
    g.add_edge("a", "b")
    g.add_edge("a", "b")
    assert g.nodes == ("lonely", "a", "b")
    assert list(g.edges()) == [("a", "b")]
    assert g.topological_order() == ["lonely", "b", "a"]


def test_a_node_on_a_cycle_depends_on_itself() -> None:
    g = graph(("a", "b"), ("b", "a"), ("b", "c"))
    assert g.transitive_dependencies("a") == frozenset({"a", "b", "c"})
    assert g.transitive_dependents("c") == frozenset({"a", "b"})


def test_topological_order_puts_dependencies_first_earliest_added_first() -> None:
    g = graph(("web", "accounts"), ("accounts", "db"), ("jobs", "db"), ("web", "cache"))
    assert g.topological_order() == ["db", "accounts", "jobs", "cache", "web"]
    assert graph().topological_order() == []


def test_cycles_are_closed_paths_from_their_earliest_node() -> None:
    g = graph(("a", "b"), ("b", "c"), ("c", "a"), ("x", "x"), ("c", "d"))
    assert g.find_cycles() == [["a", "b", "c", "a"], ["x", "x"]]


def test_rotation_does_not_depend_on_where_the_search_enters() -> None:
    # "c" is added before "a" here, so the cycle is reported from "c"
    g = graph(("c", "a"), ("a", "b"), ("b", "c"))
    assert g.find_cycles() == [["c", "a", "b", "c"]]


def test_shortest_cycle_is_reported_and_every_cyclic_node_is_covered() -> None:
    # a -> b -> c -> a and a -> c -> a: the short one covers a and c; b needs the long one
    g = graph(("a", "b"), ("b", "c"), ("c", "a"), ("a", "c"))
    assert g.find_cycles() == [["a", "b", "c", "a"], ["a", "c", "a"]]


def test_two_separate_cycles_and_an_acyclic_tail() -> None:
    g = graph(("p", "q"), ("q", "p"), ("r", "s"), ("s", "t"), ("t", "r"), ("t", "u"), ("q", "r"))
    assert g.find_cycles() == [["p", "q", "p"], ["r", "s", "t", "r"]]


def test_acyclic_graph_has_no_cycles() -> None:
    g = graph(("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"))  # a diamond is not a cycle
    assert g.find_cycles() == []


def test_topological_order_refuses_a_cycle_and_names_it() -> None:
    g = graph(("web", "api"), ("api", "auth"), ("auth", "api"), ("web", "db"))
    with pytest.raises(CycleError) as caught:
        g.topological_order()
    assert caught.value.cycle == ["api", "auth", "api"]
    assert str(caught.value) == "dependency cycle: api -> auth -> api"
    with pytest.raises(CycleError, match="dependency cycle: x -> x"):
        graph(("x", "x")).topological_order()


def test_cycle_results_are_deterministic() -> None:
    edges = [
        (f"n{random.Random(i).randrange(30)}", f"n{random.Random(-i).randrange(30)}")
        for i in range(60)
    ]
    first = DependencyGraph.from_edges(edges).find_cycles()
    assert first  # this seeded graph has cycles
    for _ in range(3):
        assert DependencyGraph.from_edges(edges).find_cycles() == first


def test_long_chain_without_recursion() -> None:
    g: DependencyGraph[int] = DependencyGraph()
    for n in range(100_000):
        g.add_edge(n, n + 1)
    assert g.find_cycles() == []
    assert len(g.transitive_dependencies(0)) == 100_000
    assert len(g.transitive_dependents(100_000)) == 100_000
    assert g.topological_order()[:3] == [100_000, 99_999, 99_998]
    g.add_edge(100_000, 0)
    (cycle,) = g.find_cycles()
    assert cycle == [*range(100_001), 0]


def test_large_sparse_graph() -> None:
    # 100k nodes, 50k random edges: no recursion limit is hit, and both answers agree
    rng = random.Random(7)
    g: DependencyGraph[int] = DependencyGraph()
    for n in range(100_000):
        g.add_node(n)
    for _ in range(50_000):
        g.add_edge(rng.randrange(100_000), rng.randrange(100_000))
    cycles = g.find_cycles()
    try:
        order = g.topological_order()
    except CycleError:
        assert cycles
    else:
        assert not cycles and len(order) == 100_000


def test_many_cycles_through_a_hub_stay_linear() -> None:
    # 50,000 two-node cycles through one hub: one cycle per spoke, found quickly
    g: DependencyGraph[int] = DependencyGraph()
    for n in range(1, 50_001):
        g.add_edge(0, n)
        g.add_edge(n, 0)
    cycles = g.find_cycles()
    assert len(cycles) == 50_000
    assert cycles[:2] == [[0, 1, 0], [0, 2, 0]]


def test_cycle_error_works_for_any_node_type() -> None:
    g: DependencyGraph[tuple[str, int]] = DependencyGraph()
    g.add_edge(("a", 1), ("b", 2))
    g.add_edge(("b", 2), ("a", 1))
    with pytest.raises(CycleError, match=r"\('a', 1\) -> \('b', 2\) -> \('a', 1\)"):
        g.topological_order()


edge_lists = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=40)


@given(edge_lists)
def test_cycles_are_real_and_cover_every_cyclic_node(edges: list[tuple[int, int]]) -> None:
    g = DependencyGraph.from_edges(edges)
    cycles = g.find_cycles()
    for cycle in cycles:
        assert cycle[0] == cycle[-1]
        assert cycle[0] == min(cycle, key=g.nodes.index)  # starts at its earliest node
        assert len(set(cycle[:-1])) == len(cycle) - 1  # elementary: no node twice
        for src, dst in itertools.pairwise(cycle):
            assert dst in g.dependencies_of(src)
    assert len({tuple(c) for c in cycles}) == len(cycles)  # each reported once
    keys = [[g.nodes.index(n) for n in c] for c in cycles]
    assert keys == sorted(keys)  # in insertion order
    on_a_cycle = {n for n in g.nodes if n in g.transitive_dependencies(n)}
    assert {n for c in cycles for n in c} == on_a_cycle


@given(edge_lists)
def test_topological_order_respects_every_edge_or_reports_a_cycle(
    edges: list[tuple[int, int]],
) -> None:
    g = DependencyGraph.from_edges(edges)
    try:
        order = g.topological_order()
    except CycleError as exc:
        assert exc.cycle in g.find_cycles()
        return
    assert g.find_cycles() == []
    assert sorted(order) == sorted(g.nodes)
    place = {n: i for i, n in enumerate(order)}
    for src, dst in g.edges():
        assert place[dst] < place[src]


@given(edge_lists)
def test_dependents_mirror_dependencies(edges: list[tuple[int, int]]) -> None:
    g = DependencyGraph.from_edges(edges)
    for a in g.nodes:
        for b in g.nodes:
            assert (b in g.dependencies_of(a)) == (a in g.dependents_of(b))
            assert (b in g.transitive_dependencies(a)) == (a in g.transitive_dependents(b))
