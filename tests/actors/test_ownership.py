"""Only actors change a workspace: no module outside ``actors/`` writes a workspace row, and ``actors/``
depends on the parts it is handed, never on the box that assembles them (read from the source, no server)."""

from __future__ import annotations

import ast
from pathlib import Path

import molecule_box

PACKAGE = Path(molecule_box.__file__).parent
#: The ops of ``store/workspaces.py`` that write a workspace row (its status among its columns).
ROW_WRITES = {"insert", "save", "purge"}


def modules() -> list[tuple[str, ast.Module]]:
    return [(path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path)))
            for path in sorted(PACKAGE.rglob("*.py"))]


def row_writes(tree: ast.Module) -> list[str]:
    """The row-writing ops of ``store.workspaces`` this module reaches, however it imported them."""
    aliases: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            module = node.module.split(".")
            for name in node.names:
                if module[-1] == "store" and name.name == "workspaces":
                    aliases.add(name.asname or name.name)
                elif module[-2:] == ["store", "workspaces"] and name.name in ROW_WRITES:
                    found.append(name.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in ROW_WRITES and isinstance(node.value, ast.Name)
                and node.value.id in aliases):
            found.append(node.attr)
    return found


def test_only_actors_write_workspace_rows() -> None:
    writers = {name: ops for name, tree in modules() if (ops := row_writes(tree))}
    assert writers, "the check found no writer at all: it no longer matches how the actors import the store"
    assert all(name.startswith("actors/") for name in writers), writers


def test_actors_do_not_import_the_box() -> None:
    for name, tree in modules():
        if not name.startswith("actors/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("box", "molecule_box.box"), f"{name} imports the box"
                assert not (node.module in (None, "molecule_box") and any(a.name == "box" for a in node.names)), name
            elif isinstance(node, ast.Import):
                assert all(a.name != "molecule_box.box" for a in node.names), f"{name} imports the box"
