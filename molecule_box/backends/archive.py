"""Tar archives of a workspace's config files, checked before anything is written or served.

One reading for every way files come in (a template import, the files API, a backend's own extraction) and
go out (the files API): only regular files and directories, names relative to their root with no ``..``, no
absolute names, no links of either kind, no devices, and caps on the content's size and the member count,
counted while reading (a gzip bomb stops at the cap). Pure stdlib; imports nothing of the box but its error
root, like the rest of the backend contract.
"""

from __future__ import annotations

import dataclasses
import io
import posixpath
import tarfile
import time

from ..errors import MoleculeBoxError

#: Caps of one archive unless the caller gives its own: content bytes (regular files) and members.
MAX_BYTES = 50 * 1024 * 1024
MAX_FILES = 5000
#: The file the box writes the workspace's token to: never read, written or deleted through file operations.
TOKEN_FILE = ".auth_token"


class UnsafeArchive(MoleculeBoxError):
    """An archive or path the box refuses (a client's mistake: 400)."""


class ArchiveTooLarge(UnsafeArchive):
    """Over the size or member-count cap (413)."""


def clean_path(path: str) -> str:
    """A relative path as ``a/b``: refuses empty, ``.``, absolute, ``..`` anywhere, NUL and backslashes (the
    platform's ``validateRelPath``, plus the characters that name another path elsewhere)."""
    if not path or "\x00" in path or "\\" in path:
        raise UnsafeArchive(f"invalid path {path!r}")
    if path.startswith("/"):
        raise UnsafeArchive(f"invalid path {path!r}: absolute paths are refused")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise UnsafeArchive(f"invalid path {path!r}")
    if ".." in parts:
        raise UnsafeArchive(f"invalid path {path!r}: '..' is refused")
    return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One member: a directory (``data`` None) or a regular file."""

    name: str
    data: bytes | None
    mode: int = 0o644

    @property
    def is_dir(self) -> bool:
        return self.data is None


def read(data: bytes, *, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES,
         what: str = "archive") -> list[Entry]:
    """The checked entries of a tar (plain or gzip), names cleaned; raises :class:`UnsafeArchive`."""
    entries: list[Entry] = []
    for member in members(data, max_bytes=max_bytes, max_files=max_files, what=what):
        name = clean_path(member.name)
        if member.kind == "link":
            raise UnsafeArchive(f"{what} member {name!r} is a link; links are refused")
        if member.kind == "other":
            raise UnsafeArchive(f"{what} member {name!r} is not a regular file or directory")
        entries.append(Entry(name, member.data, member.mode))
    return entries


def pack(entries: list[Entry], *, uid: int = 0, gid: int = 0, prefix: str = "") -> bytes:
    """A plain tar of ``entries`` (under ``prefix``), every member owned by ``uid:gid``, parents included."""
    buffer = io.BytesIO()
    now = int(time.time())
    seen: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            name = posixpath.join(prefix, entry.name) if prefix else entry.name
            parent = posixpath.dirname(name)
            missing = []
            while parent and parent not in seen:
                missing.append(parent)
                parent = posixpath.dirname(parent)
            for directory in reversed(missing):
                seen.add(directory)
                tar.addfile(_info(directory, None, 0o755, uid, gid, now))
            if entry.is_dir:
                if name in seen:
                    continue
                seen.add(name)
            tar.addfile(_info(name, entry.data, entry.mode, uid, gid, now),
                        io.BytesIO(entry.data) if entry.data is not None else None)
    return buffer.getvalue()


def _info(name: str, data: bytes | None, mode: int, uid: int, gid: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
    info.size = 0 if data is None else len(data)
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.mtime = mtime
    return info


@dataclasses.dataclass(frozen=True)
class Member:
    """One member of a tar as it is (a backend's read of ``/configs`` lists links, never follows them)."""

    name: str
    kind: str  # "file", "dir", "link" or "other"
    size: int
    data: bytes | None = None  # a file's content
    mode: int = 0o644


def members(data: bytes, *, max_bytes: int = MAX_BYTES, max_files: int = MAX_FILES,
            what: str = "the workspace's files") -> list[Member]:
    """Every member of a tar (plain or gzip), names as they are but for a trailing slash, the content's size and
    the member count capped while reading; raises :class:`UnsafeArchive`."""
    found: list[Member] = []
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                if len(found) >= max_files:
                    raise ArchiveTooLarge(f"{what} has more than {max_files} entries")
                name = member.name.rstrip("/") or member.name  # "/" stays absolute, for read() to refuse
                if name in ("", ".", "./"):
                    continue
                mode = member.mode & 0o7777
                if member.isreg():
                    total += member.size
                    if total > max_bytes:
                        raise ArchiveTooLarge(f"{what} is over {max_bytes} bytes")
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    found.append(Member(name, "file", member.size, extracted.read(), mode or 0o644))
                elif member.isdir():
                    found.append(Member(name, "dir", 0, None, mode or 0o755))
                else:
                    found.append(Member(name, "link" if member.issym() or member.islnk() else "other", 0))
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise UnsafeArchive(f"{what} is not a valid tar archive ({exc})") from None
    return found


def strip_root(data: bytes, root: str) -> bytes:
    """The engine's tar of a directory (members ``root``, ``root/a`` ...) with names relative to it (``a``);
    members are copied as they are, links as links."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as target:
        for member in tar:
            name = member.name.strip("/")
            if name == root or not name.startswith(root + "/"):
                continue
            member.name = name[len(root) + 1:]
            target.addfile(member, tar.extractfile(member) if member.isreg() else None)
    return out.getvalue()


def check_inside(tree: bytes, paths: list[str]) -> None:
    """Refuse paths that would pass through something else than a directory of ``tree`` (a link out of it,
    or a file): what is written or removed stays inside the tree."""
    kinds = {m.name: m.kind for m in members(tree)}
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            kind = kinds.get(prefix)
            if kind is not None and kind != "dir":
                raise UnsafeArchive(f"invalid path {path!r}: {prefix!r} is a {kind}, not a directory")
