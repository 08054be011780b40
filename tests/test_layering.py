"""The package's layering, read from its import statements (docs/design.md, "Layers").

Each part may import only the parts below it, so no import runs back up: ``box.py`` assembles, and every part
it assembles takes what it uses as arguments. Every import counts (module level and inside functions), except
``TYPE_CHECKING`` ones, which only name types: the API and the auth check type the box they are handed that way.
The finer rules have their own tests: the store (tests/store/test_leaf.py), the backend contract and docker
(tests/backends/test_contract.py), the actors (tests/actors/test_ownership.py).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "molecule_box"

#: Bottom to top. A part imports only parts of lower layers; parts of one layer don't import each other.
LAYERS: list[set[str]] = [
    {"_version", "errors", "models", "strictjson", "metrics"},
    {"backends", "schemas", "access", "store"},
    {"config", "bus", "templates"},
    {"security", "agent_plugins"},
    {"vault", "asgi", "authz"},
    {"actors"},
    {"api", "proxy", "ops"},
    {"box"},
    {"cli", "__init__", "testing"},
    {"__main__"},
]
#: What crosses a layer's own line, and why.
ALLOWED = {
    # The API shows an A2A message's text in the activity feed with the proxy's pure JSON-RPC reading (no I/O,
    # no state): one reading of the two A2A generations.
    ("api", "proxy"): {"molecule_box.proxy.normalize"},
}


def part(module: str) -> str:
    names = module.split(".")
    return names[1] if len(names) > 1 else "__init__"


def runtime_imports() -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(importing part, imported part) → {(importing module, imported module)}, TYPE_CHECKING blocks left out."""
    edges: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("").parts
        is_package = rel[-1] == "__init__"
        module = ".".join(rel[:-1] if is_package else rel)
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(node) for block in ast.walk(tree)
                       if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                       for node in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    target = ".".join([*base, node.module] if node.module else base)
                else:
                    target = node.module or ""
                targets = [target] if node.module else [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for imported in targets:
                if imported.split(".")[0] == "molecule_box" and part(module) != part(imported):
                    edges[(part(module), part(imported))].add((module, imported))
    return edges


def layer_of(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f"molecule_box.{name} is in no layer of tests/test_layering.py (and docs/design.md)")


def test_every_part_has_a_layer() -> None:
    parts = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if (path.suffix == ".py") or (path.is_dir() and (path / "__init__.py").exists())}
    for name in parts:
        layer_of(name)


def test_no_import_runs_up_or_sideways() -> None:
    wrong = []
    for (importer, imported), pairs in sorted(runtime_imports().items()):
        if layer_of(imported) < layer_of(importer):
            continue
        extra = {target for _, target in pairs} - ALLOWED.get((importer, imported), set())
        if extra:
            wrong.append(f"{importer} -> {imported}: " + ", ".join(sorted(f"{a} imports {b}" for a, b in pairs
                                                                           if b in extra)))
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_proxy_and_the_actors_do_not_name_the_box() -> None:
    """Not even for types: they are built from their parts (a test builds each without a box)."""
    for package in ("proxy", "actors"):
        for path in (PACKAGE / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    assert not (node.module or "").endswith("box") and "box" not in {
                        alias.name for alias in node.names if node.module in (None, "")}, \
                        f"{path.relative_to(PACKAGE.parent)} imports the box"


def test_the_proxy_imports_nothing_of_the_api() -> None:
    assert not [pair for (importer, imported), pairs in runtime_imports().items()
                if importer == "proxy" and imported == "api" for pair in pairs]
    for path in (PACKAGE / "proxy").rglob("*.py"):
        assert not re.search(r"^\s*from \.\.api\b|molecule_box\.api\b", path.read_text(), re.M), path


def test_no_comment_points_outside_the_repository() -> None:
    """A reader of the code has the repository, not the documents it was written from: say the fact."""
    pattern = re.compile(r"reference §|user asks #|perf-notes|runtime-anchors|\.\./shared|architecture-review")
    found = [f"{path.relative_to(PACKAGE.parent)}:{number}" for path in PACKAGE.rglob("*.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, found
