"""The wait-for graph: who waits for whom, and the cycles that make a deadlock.

Edges are reported the way PostgreSQL reports them: (waiter, scope, holder), "waiter waits
for scope; blocked by holder".
"""

from typing import NamedTuple


class Edge(NamedTuple):
    waiter: str
    scope: str
    holder: str


def edges(holders: dict[str, str], waits: dict[str, list[str]]) -> list[Edge]:
    """holders: scope -> holder; waits: waiter -> scopes it waits for."""
    found = []
    for waiter, scopes in sorted(waits.items()):
        for scope in scopes:
            holder = holders.get(scope)
            if holder is not None and holder != waiter:
                found.append(Edge(waiter, scope, holder))
    return found


def cycle_through(start: str, graph_edges: list[Edge]) -> list[Edge] | None:
    """A cycle of edges that leaves start and comes back to it, or None."""
    out: dict[str, list[Edge]] = {}
    for edge in graph_edges:
        out.setdefault(edge.waiter, []).append(edge)
    path: list[Edge] = []
    seen: set[str] = set()

    def visit(node: str) -> bool:
        for edge in out.get(node, ()):
            path.append(edge)
            if edge.holder == start:
                return True
            if edge.holder not in seen:
                seen.add(edge.holder)
                if visit(edge.holder):
                    return True
            path.pop()
        return False

    return list(path) if visit(start) else None


def all_cycles(graph_edges: list[Edge]) -> list[list[Edge]]:
    """Every distinct cycle, each reported once starting from its smallest node."""
    cycles, keys = [], set()
    for node in sorted({e.waiter for e in graph_edges}):
        cycle = cycle_through(node, graph_edges)
        if cycle:
            key = frozenset(cycle)
            if key not in keys:
                keys.add(key)
                cycles.append(cycle)
    return cycles


def describe(cycle: list[Edge]) -> str:
    return "; ".join(f"{e.waiter} waits for {e.scope}, held by {e.holder}" for e in cycle)
