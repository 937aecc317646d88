"""Every import in meshtools/ runs down the layers, and no modules import each other.

The layer order lives here, once, as data (meshtools(7) says it in words). Function-level
imports count as much as top-level ones: they are hidden for start-up time, not allowed to
run back up.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast

PACKAGE = Path(__file__).resolve().parent.parent / "meshtools"

# Lowest first. A module may import from its own layer or any layer below it. The key is the
# first name below `meshtools` ("" is the package's own __init__).
LAYERS = (
    {"", "core"},
    {"coord", "locks", "landing", "queue"},
    {"executors"},
    {"agents"},
    {"mesh"},
    {"dash", "demo"},
    {"cli", "complete", "umbrella"},
    {"commands"},
)

# Known violations still to fix: (importer, imported) → why it is still here. Goal: empty.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
}
ALLOWED_CYCLES: dict[frozenset, str] = {
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name a (possibly relative) `from ... import` names."""
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules: dict[str, Path]) -> set[tuple[str, str]]:
    """(importer, imported module) for every import of a meshtools module, at any depth
    (one that names no module stays in the set, for the test that every import resolves)."""
    edges = set()
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(name, is_package, node)
                # `from pkg import mod` names a module; `from mod import thing` names mod.
                targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules
                           else source for alias in node.names]
            else:
                continue
            edges.update((name, target) for target in targets
                         if target.partition(".")[0] == "meshtools" and target != name)
    return edges


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else ""
    return next(index for index, names in enumerate(LAYERS) if key in names)


def _cycles(edges: set[tuple[str, str]]) -> list[frozenset]:
    """The strongly connected groups of two or more modules (Tarjan, iterative enough here)."""
    graph: dict[str, list[str]] = {}
    for source, target in edges:
        graph.setdefault(source, []).append(target)
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(frozenset(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


ALL_EDGES = _imports(_modules())
EDGES = {(source, target) for source, target in ALL_EDGES if target in _modules()}


def test_every_top_level_folder_has_a_layer():
    for module in _modules():
        _layer(module)  # StopIteration names a folder the order forgot


def test_every_import_names_a_module_that_exists():
    """A move that missed an importer fails here, not only when that function runs."""
    assert sorted(edge for edge in ALL_EDGES if edge not in EDGES) == []


def test_no_import_runs_up_a_layer():
    upward = sorted((source, target) for source, target in EDGES
                    if _layer(target) > _layer(source))
    assert [edge for edge in upward if edge not in ALLOWED_UPWARD] == []
    assert [edge for edge in ALLOWED_UPWARD if edge not in upward] == [], "fixed: unlist it"


def test_no_modules_import_each_other():
    cycles = _cycles(EDGES)
    assert [sorted(group) for group in cycles if group not in ALLOWED_CYCLES] == []
    assert [sorted(group) for group in ALLOWED_CYCLES if group not in cycles] == [], \
        "fixed: unlist it"


def test_the_pass_sees_function_level_and_relative_imports():
    """The checker itself: a hidden relative import one layer up is caught."""
    assert ("meshtools.cli", "meshtools.queue.broker") in EDGES  # inside a method
    assert _layer("meshtools.commands.meshctl") > _layer("meshtools.core.errors")
    assert _cycles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [
        frozenset({"a", "b", "c"})]
