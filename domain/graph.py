"""A dependency graph: who depends on whom, cycles, order. Iterative, for large graphs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

N = TypeVar("N", bound=Hashable)


class CycleError(ValueError):
    def __init__(self, cycle: list[object]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(map(str, [*cycle, cycle[0]])))
        self.cycle = cycle


class DependencyGraph(Generic[N]):
    def __init__(self) -> None:
        self._out: dict[N, set[N]] = defaultdict(set)  # node -> what it depends on
        self._in: dict[N, set[N]] = defaultdict(set)  # node -> who depends on it
        self._nodes: dict[N, None] = {}

    def add_node(self, node: N) -> None:
        self._nodes.setdefault(node, None)

    def add_edge(self, src: N, dst: N) -> None:
        """`src` depends on `dst`."""
        self.add_node(src)
        self.add_node(dst)
        self._out[src].add(dst)
        self._in[dst].add(src)

    @property
    def nodes(self) -> tuple[N, ...]:
        return tuple(self._nodes)

    def dependencies_of(self, node: N) -> frozenset[N]:
        return frozenset(self._out.get(node, ()))

    def dependents_of(self, node: N) -> frozenset[N]:
        return frozenset(self._in.get(node, ()))

    def _reach(self, start: N, edges: dict[N, set[N]]) -> frozenset[N]:
        seen: set[N] = set()
        todo = list(edges.get(start, ()))
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(edges.get(node, ()))
        return frozenset(seen)

    def transitive_dependencies(self, node: N) -> frozenset[N]:
        return self._reach(node, self._out)

    def transitive_dependents(self, node: N) -> frozenset[N]:
        return self._reach(node, self._in)

    def reachable_from(self, starts: Iterable[N]) -> frozenset[N]:
        """Everything the given nodes depend on, directly or not."""
        seen: set[N] = set()
        todo = list(starts)
        while todo:
            node = todo.pop()
            for nxt in self._out.get(node, ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(seen)

    def find_cycles(self) -> list[list[N]]:
        """One cycle per strongly connected component that has one (Tarjan, iterative)."""
        index: dict[N, int] = {}
        low: dict[N, int] = {}
        on_stack: set[N] = set()
        stack: list[N] = []
        cycles: list[list[N]] = []
        counter = 0
        for root in self._nodes:
            if root in index:
                continue
            work: list[tuple[N, list[N]]] = [(root, sorted(self._out.get(root, ()), key=repr))]
            index[root] = low[root] = counter
            counter += 1
            stack.append(root)
            on_stack.add(root)
            while work:
                node, children = work[-1]
                if children:
                    child = children.pop(0)
                    if child not in index:
                        index[child] = low[child] = counter
                        counter += 1
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, sorted(self._out.get(child, ()), key=repr)))
                    elif child in on_stack:
                        low[node] = min(low[node], index[child])
                    continue
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: list[N] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in self._out.get(node, ()):
                        cycles.append(self._cycle_in(set(component)))
        return cycles

    def _cycle_in(self, component: set[N]) -> list[N]:
        start = min(component, key=repr)
        path = [start]
        seen = {start}
        node = start
        while True:
            nxt = min((n for n in self._out[node] if n in component), key=repr)
            if nxt == start or nxt in seen:
                return path[path.index(nxt) :] if nxt in seen and nxt != start else path
            path.append(nxt)
            seen.add(nxt)
            node = nxt

    def topological_order(self) -> list[N]:
        """Dependencies before dependents; CycleError if there is a cycle."""
        cycles = self.find_cycles()
        if cycles:
            raise CycleError(list(cycles[0]))
        remaining = {n: len(self._out.get(n, ())) for n in self._nodes}
        ready = [n for n, count in remaining.items() if count == 0]
        order: list[N] = []
        while ready:
            node = ready.pop()
            order.append(node)
            for dependent in self._in.get(node, ()):
                remaining[dependent] -= 1
                if remaining[dependent] == 0:
                    ready.append(dependent)
        return order
