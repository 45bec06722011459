"""The read side depends on contracts and services.shared only, never on the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import services.projections

READ_SIDE = Path(services.projections.__file__).parent


def imported_modules(source: Path) -> set[str]:
    tree = ast.parse(source.read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_the_read_side_never_imports_the_registry() -> None:
    offenders = {
        str(path.relative_to(READ_SIDE)): sorted(
            m for m in imported_modules(path) if m.startswith("services.registry")
        )
        for path in READ_SIDE.rglob("*.py")
    }
    assert {path: mods for path, mods in offenders.items() if mods} == {}
