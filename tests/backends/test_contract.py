"""The backend contract stands alone: importing it loads only the contract, the docker backend imports nothing of
the box but the contract (the core uses its own extension point), and the author's guide lists exactly the
protocol's methods."""

from __future__ import annotations

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

from molecule_box.backends.base import Backend

ROOT = Path(__file__).resolve().parent.parent.parent
DOCKER = ROOT / "molecule_box" / "backends" / "docker"
#: What a plugin may import of molecule-box, and what importing it loads (packages on the way included).
CONTRACT = {"molecule_box.backends.base", "molecule_box.backends.options", "molecule_box.backends.archive"}
CONTRACT_LOADS = CONTRACT | {"molecule_box", "molecule_box._version", "molecule_box.errors", "molecule_box.backends"}
#: The docker backend's pieces a plugin built on the same engine may import as well (the swarm plugin): the
#: engine bridge, the settings and the pure container rules. Importing them loads the docker backend, which
#: itself loads nothing of the box but the contract.
DOCKER_PIECES = {"molecule_box.backends.docker.client", "molecule_box.backends.docker.settings",
                 "molecule_box.backends.docker.spec"}


def loaded_by(module: str) -> tuple[set[str], set[str]]:
    """(molecule_box modules, other top-level packages) in sys.modules after importing ``module`` in a fresh
    interpreter."""
    code = (f"import json, sys; import {module}; "
            "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    names = set(json.loads(out.stdout))
    return {n for n in names if n.split(".")[0] == "molecule_box"}, {n.split(".")[0] for n in names}


def test_importing_the_contract_loads_only_the_contract() -> None:
    ours, packages = loaded_by("molecule_box.backends.base")
    assert ours == CONTRACT_LOADS
    assert not {"quart", "quart_trio", "hypercorn", "werkzeug", "pydantic", "sqlite_utils"} & packages


def test_importing_docker_loads_nothing_of_the_box_but_the_contract() -> None:
    ours, packages = loaded_by("molecule_box.backends.docker")
    assert {n for n in ours if not n.startswith("molecule_box.backends.docker")} == CONTRACT_LOADS
    assert "quart_trio" not in packages


def test_docker_sources_import_only_the_contract_and_their_own_modules() -> None:
    for path in sorted(DOCKER.glob("*.py")):
        package = "molecule_box.backends.docker"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    target = f"{base}.{node.module}" if node.module else base
                else:
                    target = node.module or ""
                targets = [target]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == "molecule_box":
                    assert target in CONTRACT or target.startswith(package), f"{path.name} imports {target}"


def test_plugins_guide_lists_exactly_the_protocol_methods() -> None:
    methods = {name for name, member in inspect.getmembers(Backend, inspect.isfunction) if not name.startswith("_")}
    text = (ROOT / "docs" / "plugins.md").read_text()
    section = text.split("## The methods", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)\(", section, flags=re.MULTILINE))
    assert listed == methods


def test_the_docker_pieces_plugins_may_import_load_nothing_of_the_box_but_the_contract() -> None:
    for module in sorted(DOCKER_PIECES):
        ours, packages = loaded_by(module)
        assert {n for n in ours if not n.startswith("molecule_box.backends.docker")} == CONTRACT_LOADS, module
        assert "quart_trio" not in packages
    bridge = (DOCKER / "client.py").read_text()
    assert "async def run(" in bridge, "the bridge's public call is what plugins on the same engine use"


def test_a_handles_location_is_the_workspaces_location() -> None:
    """The one handle key the box reads: ``location`` is shown as the workspace's, and absent when unsaid."""
    import dataclasses

    from molecule_box.models import Workspace, WorkspaceStatus

    ws = Workspace(id="w", name="n", status=WorkspaceStatus.ONLINE, runtime="langgraph", backend="swarm",
                   created_at=0.0, updated_at=0.0, backend_state={"workspace_id": "w", "location": "vm (abc)"})
    assert ws.public()["location"] == ws.public(detail=False)["location"] == "vm (abc)"
    for state in ({"workspace_id": "w"}, None, ["not", "a", "dict"], {"location": ""}):
        assert "location" not in dataclasses.replace(ws, backend_state=state).public()
