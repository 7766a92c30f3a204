"""The shape a newcomer can rely on: small modules, no import cycles, no borrowed private names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "mailwatch"
MAX_LINES = 700


def modules() -> dict[str, Path]:
    """Every module of mailwatch by dotted name, migrations aside (Alembic writes those)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if "migrations" in parts:
            continue
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The mailwatch modules that importing `name` runs, wherever the import statement stands.

    Imports under TYPE_CHECKING and inside functions count: a cycle hidden there still ties the
    modules together. Importing `a.b.c` runs the `__init__` of `a.b` too, unless `name` lives
    inside `a.b` (its own packages are initialised before it runs).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets.add(base)
            targets.update(f"{base}.{alias.name}" for alias in node.names)
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    edges = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in known and prefix not in ancestors and prefix != name:
                edges.add(prefix)
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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


def test_no_module_is_longer_than_700_lines():
    long = {
        name: lines
        for name, path in modules().items()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"over {MAX_LINES} lines: {long}"


def test_no_modules_import_each_other_in_a_cycle():
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    assert cycles(graph) == []


def test_the_cycle_check_counts_a_package_init_but_not_a_module_s_own_package(tmp_path):
    files = {
        "p.__init__": "from p.builders import build\n",
        "p.builders": "from p.types import Settings\nfrom q import fetch\n",
        "p.types": "",
        "q": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.types import Settings\n",
    }
    paths = {}
    for dotted, text in files.items():
        path = tmp_path.joinpath(*dotted.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths[dotted.removesuffix(".__init__")] = path
    graph = {name: imports_of(name, path, set(paths)) for name, path in paths.items()}
    assert graph["p.builders"] == {"p.types", "q"}
    assert graph["q"] == {"p", "p.types"}
    assert cycles(graph) == [["p", "p.builders", "q"]]


def test_no_module_uses_a_private_name_of_another_module():
    borrowed = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        borrowed.append(f"{name} imports {alias.name} from {node.module}")
                    aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                aliases.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and _is_mailwatch_module(node.value.id, tree)
            ):
                borrowed.append(f"{name} uses {node.value.id}.{node.attr}")
    assert borrowed == []


def _is_mailwatch_module(alias: str, tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mailwatch"):
            if any((a.asname or a.name) == alias for a in node.names):
                return True
        elif isinstance(node, ast.Import):
            if any(
                (a.asname or a.name.split(".")[0]) == alias and a.name.startswith("mailwatch")
                for a in node.names
            ):
                return True
    return False
