"""A plugin's files as the box ships them: scanned without following links, capped while read, packed whole.

The platform followed symlinks while staging (a link to ``/etc/passwd`` left the box as a regular file) and
checked its size cap after the full copy. Here a tree is listed with ``lstat`` (links and other non-regular
entries are left out, never followed), the file count and byte cap are counted while listing and again while
each file is read (a file that grew since is cut off by the cap, not read whole), and every file is opened with
``O_NOFOLLOW`` so a file swapped for a link in between is refused. These functions block: the API runs them in a
worker thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import PayloadTooLarge, UnprocessableEntity

CHUNK = 256 * 1024


@dataclasses.dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_files: int


@dataclasses.dataclass(frozen=True)
class Entry:
    """One directory or regular file, ``path`` relative to the plugin root with ``/`` separators."""

    path: str
    is_dir: bool
    mode: int
    size: int
    mtime: float


@dataclasses.dataclass(frozen=True)
class Tree:
    root: Path
    entries: tuple[Entry, ...]

    @property
    def files(self) -> Iterator[Entry]:
        return (entry for entry in self.entries if not entry.is_dir)

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.files)


class TooLarge(PayloadTooLarge):
    def __init__(self, message: str = "staged plugin exceeds size limit", **extra: object) -> None:
        super().__init__(message, **extra)


def scan(root: Path, limits: Limits, *, skip: frozenset[str] = frozenset()) -> Tree:
    """The tree under ``root`` in walk order (lexical, each directory before its contents), or
    :class:`TooLarge` as soon as it passes a cap. ``skip``: top-level names left out (``.git`` of a clone)."""
    entries: list[Entry] = []
    total = 0
    files = 0

    def walk(directory: Path, prefix: str) -> None:
        nonlocal total, files
        with os.scandir(directory) as it:
            children = sorted(it, key=lambda e: e.name)
        for child in children:
            if not prefix and child.name in skip:
                continue
            info = child.stat(follow_symlinks=False)
            rel = f"{prefix}{child.name}"
            if stat.S_ISDIR(info.st_mode):
                entries.append(Entry(rel, True, stat.S_IMODE(info.st_mode), 0, info.st_mtime))
                walk(Path(child.path), rel + "/")
            elif stat.S_ISREG(info.st_mode):
                files += 1
                total += info.st_size
                if files > limits.max_files:
                    raise TooLarge("staged plugin exceeds file count limit", max_files=limits.max_files)
                if total > limits.max_bytes:
                    raise TooLarge(max_bytes=limits.max_bytes)
                entries.append(Entry(rel, False, stat.S_IMODE(info.st_mode), info.st_size, info.st_mtime))
            # Symlinks, sockets, fifos and devices are not plugin files: never followed, never shipped.

    walk(root, "")
    return Tree(root, tuple(entries))


def open_file(tree: Tree, entry: Entry) -> IO[bytes]:
    """``entry`` opened for reading without following a link (one swapped in since the scan is refused)."""
    fd = os.open(tree.root / entry.path, os.O_RDONLY | os.O_NOFOLLOW)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{entry.path} is no longer a regular file")
    return os.fdopen(fd, "rb")


def chunks(tree: Tree, entry: Entry) -> Iterator[bytes]:
    """The bytes of ``entry``, exactly its scanned size (a file that changed since is an error, never a
    different or longer payload than the scan counted)."""
    left = entry.size
    with open_file(tree, entry) as f:
        while left > 0:
            block = f.read(min(CHUNK, left))
            if not block:
                raise OSError(f"{entry.path} shrank while read")
            left -= len(block)
            yield block
        if f.read(1):
            raise OSError(f"{entry.path} grew while read")


def copy(tree: Tree, dest: Path) -> None:
    """Copy the tree into ``dest`` (which must not exist), modes kept."""
    dest.mkdir(mode=0o755)
    for entry in tree.entries:
        target = dest / entry.path
        if entry.is_dir:
            target.mkdir()
        else:
            with open(target, "xb") as out:
                for block in chunks(tree, entry):
                    out.write(block)
        os.chmod(target, entry.mode)
    os.chmod(dest, stat.S_IMODE(os.stat(tree.root).st_mode) | 0o700)


def pack(tree: Tree, out: IO[bytes], *, prefix: str = "") -> None:
    """A gzip tar of the tree into ``out``: names relative to the plugin root (or under ``prefix``), directory
    entries included, modes kept, owner 0, no links and no other entry types."""
    # Level 6, as the platform's gzip: level 9 costs twice the CPU for a few percent.
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.PAX_FORMAT, compresslevel=6) as tar:
        for entry in tree.entries:
            info = tarfile.TarInfo(prefix + entry.path)
            info.mode, info.mtime = entry.mode, int(entry.mtime)
            if entry.is_dir:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = entry.size
                with open_file(tree, entry) as f:
                    tar.addfile(info, f)  # reads exactly the scanned size (tarfile fails on a shorter file)
                    if f.read(1):
                        raise OSError(f"{entry.path} grew while read")


def sha256_file(tree: Tree, entry: Entry) -> str:
    digest = hashlib.sha256()
    for block in chunks(tree, entry):
        digest.update(block)
    return digest.hexdigest()


def check_manifest(tree: Tree) -> None:
    """The platform's ``manifest.json`` integrity rule: without the file or its ``sha256`` the tree passes;
    otherwise sha256 over the sorted ``"<path>\\0<content>"`` of every file but the top-level manifest must match
    (422 when it does not, or the manifest is not JSON, or ``sha256`` is no string).

    Sorting the concatenated strings orders them by path (no path holds a NUL, so a path that is a prefix of
    another sorts first either way), which lets the digest be computed file by file without holding the
    contents."""
    manifest = next((e for e in tree.files if e.path == "manifest.json"), None)
    if manifest is None:
        return
    refused = UnprocessableEntity("plugin manifest integrity check failed")
    if manifest.size > 1024 * 1024:
        raise refused
    try:
        data = json.loads(b"".join(chunks(tree, manifest)))
    except ValueError:
        raise refused from None
    if not isinstance(data, dict) or "sha256" not in data:
        return
    expected = data["sha256"]
    if not isinstance(expected, str):
        raise refused
    digest = hashlib.sha256()
    for entry in sorted((e for e in tree.files if e.path != "manifest.json"), key=lambda e: e.path.encode()):
        digest.update(entry.path.encode() + b"\x00")
        for block in chunks(tree, entry):
            digest.update(block)
    if digest.hexdigest() != expected.strip().lower():
        raise refused


def check_pin(tree: Tree, expected: str) -> None:
    """The caller's ``sha256`` pin: the hex SHA-256 of the staged ``plugin.yaml`` bytes (422 otherwise)."""
    found = next((e for e in tree.files if e.path == "plugin.yaml"), None)
    if found is None:
        raise UnprocessableEntity("sha256 check failed: plugin.yaml not found in staged plugin")
    got = sha256_file(tree, found)
    if got != expected.lower():
        raise UnprocessableEntity(f"sha256 mismatch: expected {expected.lower()}, got {got}")
