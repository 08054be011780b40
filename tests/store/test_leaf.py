"""The store is a leaf that owns every table: it loads nothing of the box above it (no HTTP, no cipher, no
settings), and no module outside it speaks SQL.

Both rules are read off the real package: the first by importing every store module in a fresh interpreter,
the second from the source of every other module.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import molecule_box

PACKAGE = Path(molecule_box.__file__).parent
STORE = PACKAGE / "store"

#: What of the package the store may load, and why: ``models`` is the shared kernel of records (a workspace,
#: an event) that rows map to; ``errors`` is the root of the error vocabulary, which the store's own errors
#: extend (its HTTP classes stay unused: see test_the_store_raises_no_http_error).
STORE_MAY_LOAD = {"molecule_box.models", "molecule_box.errors"}
#: The names the store may take from ``molecule_box.errors``: the root, and ConfigError for a store written by
#: a newer box (a start-up error like a bad setting).
STORE_ERRORS_ROOT = {"MoleculeBoxError", "ConfigError"}

#: Importing each store module with the package's own ``__init__`` left out (it assembles the whole box on
#: purpose), so only the store's imports load anything; prints, per module, what of the package it added.
PROBE = """
import importlib, json, sys, types
package = types.ModuleType("molecule_box")
package.__path__ = [sys.argv[1]]
sys.modules["molecule_box"] = package
added = {}
for name in sys.argv[2:]:
    before = set(sys.modules)
    importlib.import_module(name)
    added[name] = sorted(set(sys.modules) - before)
print(json.dumps(added))
"""


def store_modules() -> list[str]:
    return sorted(f"molecule_box.store.{path.stem}" for path in STORE.glob("*.py") if path.stem != "__init__")


def outside_store() -> list[Path]:
    return sorted(path for path in PACKAGE.rglob("*.py") if STORE not in path.parents)


def test_the_store_loads_nothing_of_the_box_above_it() -> None:
    modules = store_modules()
    assert "molecule_box.store.db" in modules and len(modules) >= 10
    probe = subprocess.run([sys.executable, "-c", PROBE, str(PACKAGE), "molecule_box.store", *modules],
                           capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 0, probe.stderr
    added: dict[str, list[str]] = json.loads(probe.stdout)
    reached = {name: sorted(m for m in loaded if m.startswith("molecule_box.")
                            and not m.startswith("molecule_box.store") and m not in STORE_MAY_LOAD)
               for name, loaded in added.items()}
    assert {name: out for name, out in reached.items() if out} == {}
    everything = {m for loaded in added.values() for m in loaded}
    assert "cryptography" not in everything  # the vault alone knows the cipher
    assert "molecule_box.store.db" in everything  # the probe did import the store


def test_the_store_raises_no_http_error() -> None:
    """From the vocabulary's root module the store takes the root alone: statuses are api/errors.py's."""
    taken: set[str] = set()
    for path in STORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module == "errors":
                taken.update(alias.name for alias in node.names)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "molecule_box.errors":
                taken.update(alias.name for alias in node.names)
    assert taken <= STORE_ERRORS_ROOT, taken - STORE_ERRORS_ROOT


#: The start of an SQL statement, as this code base writes them (keywords in capitals); a message that merely
#: names one ("fails PRAGMA integrity_check") does not start with it.
SQL = re.compile(r"\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|CREATE\s+(UNIQUE\s+)?"
                 r"(TABLE|INDEX|TRIGGER|VIEW)\s|ALTER\s+TABLE\s|DROP\s+(TABLE|INDEX)\s|WITH\s+RECURSIVE\s|"
                 r"PRAGMA\s+\w+\s*(=|;|$)|BEGIN\b|COMMIT\b|SAVEPOINT\s|VACUUM\b)")
#: Calls that run SQL or open a database, whatever the receiver is called.
SQL_CALLS = {"execute", "executemany", "executescript"}
OPENERS = {("sqlite3", "connect"), ("sqlite_utils", "Database")}


def sql_in(source: str, name: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            receiver = node.func.value
            if node.func.attr in SQL_CALLS:
                found.append(f"{where}: .{node.func.attr}(")
            elif isinstance(receiver, ast.Name) and (receiver.id, node.func.attr) in OPENERS:
                found.append(f"{where}: {receiver.id}.{node.func.attr}(")
        # A string, or a literal part of an f-string.
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value):
            found.append(f"{where}: {node.value[:60]!r}")
    return found


def test_no_module_outside_the_store_speaks_sql() -> None:
    paths = outside_store()
    assert PACKAGE / "api" / "activity.py" in paths and not any(STORE in p.parents for p in paths)
    found = [hit for path in paths for hit in sql_in(path.read_text(), str(path.relative_to(PACKAGE.parent)))]
    assert found == []


def test_the_sql_check_sees_the_forms_sql_takes() -> None:
    """The check finds each way a statement could be written outside the store (so an empty finding above
    means something), and passes text that only names SQL."""
    sample = (
        'def f(db, table, conn):\n'
        '    db.execute("SELECT 1")\n'
        '    rows = "  SELECT id FROM workspaces"\n'
        '    q = f"DELETE FROM {table} WHERE id = ?"\n'
        '    conn.executescript("x")\n'
        '    sqlite3.connect("x.db")\n'
        '    u = """UPDATE tokens SET revoked_at = ?"""\n'
        '    ok = "the copy fails PRAGMA integrity_check"\n'
        '    ok2 = "select a workspace, then update it"\n'
        '    execute(["systemctl", "start"])\n')
    hits = sql_in(sample, "sample.py")
    assert sorted(int(hit.split(":")[1]) for hit in hits) == [2, 2, 3, 4, 5, 6, 7], hits
