"""Print the import graph of skflow/, read from the source with ``ast``.

One line per edge ``importer -> imported`` between skflow's own modules
(imports inside functions count: a lazy import is still a dependency), then
the modules with no skflow import, any cycle, and the edge count. Run from the
repository root::

    python -m tests.import_graph
"""

from __future__ import annotations

from pathlib import Path

from tests.test_layering import imported_modules

PACKAGE = Path(__file__).resolve().parents[1] / "skflow"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The skflow modules ``path`` imports (the resolution is tests/test_layering.py's)."""
    name = module_name(path)
    # imported_modules resolves relative imports against the module's package;
    # a package's __init__ is its own package.
    resolved_as = f"{name}.__init__" if path.name == "__init__.py" else name
    return {target for target in imported_modules(path.read_text(), resolved_as) if target in modules} - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle reachable by depth-first search (a short list for an acyclic graph: none)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                found.append(path[path.index(child) :] + [child])
            elif child not in state:
                visit(child, [*path, child])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def main() -> None:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    graph = {module_name(path): imports_of(path, modules) for path in paths}
    n_edges = 0
    for importer in sorted(graph):
        for imported in sorted(graph[importer]):
            print(f"{importer} -> {imported}")
            n_edges += 1
    leaves = sorted(name for name, targets in graph.items() if not targets)
    print(f"\nno skflow import: {', '.join(leaves)}")
    found = cycles(graph)
    print(f"cycles: {found if found else 'none'}")
    print(f"{len(graph)} modules, {n_edges} edges")


if __name__ == "__main__":
    main()
