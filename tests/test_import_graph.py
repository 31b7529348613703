"""Dependencies point one way (stage functions and core below, the CLI and the flows on top): the import graph of
src/finsent and pipelines/, function-level imports included, has no cycle, and the library never imports the CLI
or the project's pipelines/ folder."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"finsent": REPO / "src" / "finsent", "pipelines": REPO / "pipelines"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in ROOTS.items():
        for file in folder.rglob("*.py"):
            parts = [package, *file.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()

    def owner(name: str) -> str | None:  # "finsent.data.ingest.ingest" -> "finsent.data.ingest"
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, file in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                edges |= {owner(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                edges |= {owner(f"{node.module}.{alias.name}") for alias in node.names}
        graph[name] = {edge for edge in edges if edge and edge != name and not name.startswith(edge + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, ()):
            if edge not in index:
                visit(edge)
                low[node] = min(low[node], low[edge])
            elif edge in on_stack:
                low[node] = min(low[node], index[edge])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle():
    assert _cycles(_graph()) == []


def test_the_library_imports_neither_the_cli_nor_the_flows():
    graph = _graph()
    upward = {name: sorted(edge for edge in edges if edge == "finsent.cli" or edge.startswith("pipelines"))
              for name, edges in graph.items() if name.startswith("finsent") and name != "finsent.cli"}
    assert {name: edges for name, edges in upward.items() if edges} == {}


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
