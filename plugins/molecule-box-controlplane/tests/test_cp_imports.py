"""The plugin is written as an outside author would write it: of molecule-box it imports only the backend
contract, and its tests only the contract and the conformance kit."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = {"molecule_box.backends", "molecule_box.backends.base", "molecule_box.backends.options",
            "molecule_box.backends.archive"}
TESTS_MAY = CONTRACT | {"molecule_box.testing"}


def imported(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name == "molecule_box" or name.startswith("molecule_box.")}


def test_the_package_imports_only_the_contract() -> None:
    files = sorted((ROOT / "src").rglob("*.py"))
    assert files
    for path in files:
        assert imported(path) <= CONTRACT, f"{path.relative_to(ROOT)} imports {imported(path) - CONTRACT}"


def test_the_tests_import_only_the_contract_and_the_kit() -> None:
    files = sorted((ROOT / "tests").rglob("*.py"))
    assert files
    for path in files:
        assert imported(path) <= TESTS_MAY, f"{path.relative_to(ROOT)} imports {imported(path) - TESTS_MAY}"
