"""The plugin imports nothing of molecule-box but the backend contract and the docker backend's pieces the
contract offers plugins (the engine bridge, its settings, its pure container rules), and importing it loads
nothing else of the box (no web stack, no store); the box finds it through its entry point."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from molecule_box_swarm import SwarmBackend

SOURCES = Path(__file__).resolve().parent.parent / "src" / "molecule_box_swarm"
DOCKER_PIECES = {"molecule_box.backends.docker.client", "molecule_box.backends.docker.settings",
                 "molecule_box.backends.docker.spec"}
CONTRACT = {"molecule_box.backends.base", "molecule_box.backends.options", "molecule_box.backends.archive",
            *DOCKER_PIECES}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_sources_import_only_the_contract_of_molecule_box() -> None:
    paths = sorted(SOURCES.rglob("*.py"))
    assert len(paths) >= 5
    for path in paths:
        ours = {m for m in imported_modules(path) if m.split(".")[0] == "molecule_box"}
        assert ours <= CONTRACT, f"{path.name} imports {ours - CONTRACT}"


def test_importing_the_plugin_loads_only_the_contract_and_the_docker_backend() -> None:
    code = "import json, sys; import molecule_box_swarm; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    names = set(json.loads(out.stdout))
    ours = {n for n in names if n.split(".")[0] == "molecule_box"}
    assert {n for n in ours if not n.startswith("molecule_box.backends.docker")} == {
        "molecule_box", "molecule_box._version", "molecule_box.errors", "molecule_box.backends",
        "molecule_box.backends.base", "molecule_box.backends.options", "molecule_box.backends.archive"}
    assert not {"quart", "quart_trio", "hypercorn", "sqlite_utils", "pydantic"} & {n.split(".")[0] for n in names}


def test_the_entry_point_names_the_backend() -> None:
    [found] = [ep for ep in entry_points(group="molecule_box.backends") if ep.name == "swarm"]
    assert found.load() is SwarmBackend and SwarmBackend.name == "swarm"
