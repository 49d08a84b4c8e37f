"""A directed dependency graph: who depends on whom, cycles and a safe order.

Every algorithm here is iterative: manifests and routing graphs can be long chains, and a
recursive walk would hit Python's recursion limit long before memory runs out.

Determinism: adjacency is kept in insertion-ordered dicts and every traversal follows the order
in which nodes and edges were added, so the same sequence of calls always gives the same
answer, whatever the node type (nodes need only be hashable, not orderable).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

N = TypeVar("N", bound=Hashable)


class CycleError(ValueError, Generic[N]):
    """Raised when an order is asked of a graph that has a cycle.

    `cycle` is a closed path: its last element repeats its first (`a -> b -> a`)."""

    def __init__(self, cycle: Sequence[N]) -> None:
        self.cycle: list[N] = list(cycle)
        super().__init__("dependency cycle: " + " -> ".join(map(str, self.cycle)))


class DependencyGraph(Generic[N]):
    """An edge `src -> dst` means `src` depends on `dst`."""

    def __init__(self) -> None:
        # dicts used as ordered sets: membership is O(1) and iteration order is insertion order
        self._out: dict[N, dict[N, None]] = {}  # node -> what it depends on
        self._in: dict[N, dict[N, None]] = {}  # node -> who depends on it

    @classmethod
    def from_edges(cls, edges: Iterable[tuple[N, N]]) -> DependencyGraph[N]:
        graph: DependencyGraph[N] = cls()
        for src, dst in edges:
            graph.add_edge(src, dst)
        return graph

    # -- building ----------------------------------------------------------------------------

    def add_node(self, node: N) -> None:
        if node not in self._out:
            self._out[node] = {}
            self._in[node] = {}

    def add_edge(self, src: N, dst: N) -> None:
        """Record that `src` depends on `dst` (adding either node if new)."""
        self.add_node(src)
        self.add_node(dst)
        self._out[src][dst] = None
        self._in[dst][src] = None

    # -- queries -----------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[N, ...]:
        """Every node, in the order first added."""
        return tuple(self._out)

    def edges(self) -> Iterator[tuple[N, N]]:
        for src, targets in self._out.items():
            for dst in targets:
                yield src, dst

    def __contains__(self, node: object) -> bool:
        return node in self._out

    def __len__(self) -> int:
        return len(self._out)

    def dependencies_of(self, node: N) -> frozenset[N]:
        """What `node` depends on directly (empty for a node the graph does not know)."""
        return frozenset(self._out.get(node, ()))

    def dependents_of(self, node: N) -> frozenset[N]:
        """Who depends on `node` directly (empty for a node the graph does not know)."""
        return frozenset(self._in.get(node, ()))

    def transitive_dependencies(self, node: N) -> frozenset[N]:
        """Everything `node` depends on, directly or not. It includes `node` itself only when
        `node` sits on a cycle (it then depends on itself)."""
        return _reach((node,), self._out)

    def transitive_dependents(self, node: N) -> frozenset[N]:
        """Everything that depends on `node`, directly or not (same rule for `node` itself)."""
        return _reach((node,), self._in)

    def reachable_from(self, starts: Iterable[N]) -> frozenset[N]:
        """Everything the given nodes depend on, directly or not."""
        return _reach(starts, self._out)

    # -- cycles and order --------------------------------------------------------------------

    def find_cycles(self) -> list[list[N]]:
        """Cycles as closed paths (`[a, b, c, a]`; a self-dependency is `[x, x]`).

        Listing every elementary cycle is exponential on a dense cluster, and is not what a
        person fixing a manifest needs. Instead every node that sits on some cycle is covered
        by at least one reported cycle: for each such node not yet covered (in the order nodes
        were added) we report a shortest cycle through it. No cycle is reported twice. Each
        cycle starts at its earliest-added node, and cycles are sorted by their nodes'
        insertion order, so the result is deterministic.
        """
        order = list(self._out)
        position = {node: i for i, node in enumerate(order)}
        adjacency = [[position[dst] for dst in self._out[node]] for node in order]
        component = _strong_components(adjacency)
        sizes: dict[int, int] = {}
        for c in component:
            sizes[c] = sizes.get(c, 0) + 1

        found: list[tuple[int, ...]] = []
        covered = [False] * len(order)
        for start in range(len(order)):
            if covered[start]:
                continue
            cyclic = sizes[component[start]] > 1 or order[start] in self._out[order[start]]
            if not cyclic:
                continue
            path = _shortest_cycle(start, adjacency, component, self._out, order)
            for member in path:
                covered[member] = True
            first = path.index(min(path))
            found.append((*path[first:], *path[:first], path[first]))
        found.sort()
        return [[order[i] for i in cycle] for cycle in found]

    def topological_order(self) -> list[N]:
        """Dependencies before their dependents; among nodes free to go next, the earliest
        added goes first. Raises CycleError naming one cycle when there is no such order."""
        order = list(self._out)
        position = {node: i for i, node in enumerate(order)}
        waiting = [len(self._out[node]) for node in order]  # dependencies not yet placed
        ready = [i for i, count in enumerate(waiting) if count == 0]
        heapq.heapify(ready)
        result: list[N] = []
        while ready:
            node = order[heapq.heappop(ready)]
            result.append(node)
            for dependent in self._in[node]:
                i = position[dependent]
                waiting[i] -= 1
                if waiting[i] == 0:
                    heapq.heappush(ready, i)
        if len(result) < len(order):
            raise CycleError(self.find_cycles()[0])
        return result


def _reach(starts: Iterable[N], edges: dict[N, dict[N, None]]) -> frozenset[N]:
    seen: set[N] = set()
    todo: list[N] = []
    for start in starts:
        todo.extend(edges.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(edges[node])
    return frozenset(seen)


def _strong_components(adjacency: list[list[int]]) -> list[int]:
    """Tarjan's algorithm without recursion: the component number of every node."""
    count = len(adjacency)
    index = [-1] * count
    low = [0] * count
    component = [-1] * count
    on_stack = [False] * count
    stack: list[int] = []
    counter = 0
    components = 0
    for root in range(count):
        if index[root] != -1:
            continue
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack[root] = True
        work_node = [root]  # the explicit call stack: node and how far through its edges
        work_next = [0]
        while work_node:
            node = work_node[-1]
            edges = adjacency[node]
            step = work_next[-1]
            if step < len(edges):
                work_next[-1] = step + 1
                child = edges[step]
                if index[child] == -1:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack[child] = True
                    work_node.append(child)
                    work_next.append(0)
                elif on_stack[child] and index[child] < low[node]:
                    low[node] = index[child]
                continue
            work_node.pop()
            work_next.pop()
            if work_node and low[node] < low[work_node[-1]]:
                low[work_node[-1]] = low[node]
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack[member] = False
                    component[member] = components
                    if member == node:
                        break
                components += 1
    return component


def _shortest_cycle(
    start: int,
    adjacency: list[list[int]],
    component: list[int],
    out: dict[N, dict[N, None]],
    order: list[N],
) -> list[int]:
    """Breadth-first search from `start` back to itself, inside its strong component (any
    cycle through `start` lies there). Asking "does this node lead straight back?" through the
    dict before scanning its edges keeps hubs with many edges cheap."""
    target = order[start]
    parent = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if target in out[order[node]]:
            path = [node]
            while path[-1] != start:
                path.append(parent[path[-1]])
            path.reverse()
            return path
        for child in adjacency[node]:
            if child not in parent and component[child] == component[start]:
                parent[child] = node
                queue.append(child)
    raise AssertionError("a node in a cyclic component always has a cycle through it")
