"""The core stays pure: standard library only, and no clock reads."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CORE = Path(__file__).parents[2] / "mailwatch" / "core"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_core_imports_only_the_standard_library_and_itself():
    for path in CORE.glob("*.py"):
        outside = {
            name
            for name in imported_modules(path)
            if name not in sys.stdlib_module_names and name not in ("mailwatch", "__future__")
        }
        assert not outside, f"{path.name} imports {outside}"


def test_the_core_imports_nothing_of_mailwatch_outside_the_core():
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("mailwatch")
            ):
                assert node.module.startswith("mailwatch.core"), f"{path.name}: {node.module}"


def test_the_core_never_reads_the_clock():
    for path in CORE.glob("*.py"):
        text = path.read_text()
        for call in ("datetime.now(", "datetime.utcnow(", "time.time(", "date.today("):
            assert call not in text, f"{path.name} calls {call}"
