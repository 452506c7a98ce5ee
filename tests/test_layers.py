"""The gateway's modules import downwards only: no import loop, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parent.parent / "gateway"


def module_name(path: Path) -> str:
    parts = path.relative_to(GATEWAY.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in GATEWAY.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                candidates = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            found |= {c for c in candidates if c in modules and c != name}
        # A package's module imports its package's __init__ first; that is not a loop of ours.
        graph[name] = {m for m in found if not name.startswith(m + ".")}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    graph = imports()
    assert "gateway.core" in graph and "gateway.routes.events" in graph
    loops = []

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                loops.append(" -> ".join(path[path.index(imported):] + [imported]))
            elif imported not in done:
                visit(imported, path + [imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert loops == []


def test_the_routes_type_against_the_core_and_the_core_knows_no_route():
    graph = imports()
    assert "gateway.core" in graph["gateway.routes.events"]
    assert not any(m.startswith(("gateway.routes", "gateway.app")) or m == "gateway.cli" for m in graph["gateway.core"])
