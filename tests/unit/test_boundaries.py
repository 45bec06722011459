"""The boundaries the layout promises: contracts stand alone, the domain knows no frameworks,
and the two services meet only through contracts."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imports_of(package: str) -> dict[str, set[str]]:
    """Module names imported by each file under a package folder."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        modules: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
        found[str(path.relative_to(ROOT))] = modules
    return found


def offenders(package: str, allowed: object) -> dict[str, list[str]]:
    bad = {path: sorted(m for m in modules if not allowed(m))  # type: ignore[operator]
           for path, modules in imports_of(package).items()}
    return {path: mods for path, mods in bad.items() if mods}


def top(module: str) -> str:
    return module.split(".")[0]


def test_contracts_import_only_the_standard_library_and_pydantic() -> None:
    own = {"pydantic", "pydantic_core", "contracts"}  # pydantic_core: pydantic's own errors
    allowed = lambda m: top(m) in sys.stdlib_module_names or top(m) in own  # noqa: E731
    assert offenders("contracts", allowed) == {}


def test_domain_imports_no_framework() -> None:
    frameworks = {"fastapi", "starlette", "sqlalchemy", "kafka", "pydantic", "psycopg",
                  "contracts"}
    assert offenders("services/registry/domain", lambda m: top(m) not in frameworks) == {}


@pytest.mark.parametrize(("package", "forbidden"), [
    ("services/registry", ("services.projections", "services.embedded")),
    ("services/projections", ("services.registry", "services.embedded")),
])
def test_services_meet_only_through_contracts(package: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(package, lambda m: not m.startswith(forbidden)) == {}
