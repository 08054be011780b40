"""The checks every tar of config files goes through (imports, the files API, backends' writes)."""

from __future__ import annotations

import io
import tarfile

import pytest

from molecule_box.backends import archive as ar


def _tar(*infos: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in infos:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_pack_owns_every_member_and_adds_parents() -> None:
    packed = ar.pack([ar.Entry("plugins/x/a.md", b"a", 0o600), ar.Entry("plugins/x/bin/run", b"#!", 0o755)],
                     uid=1234, gid=99)
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == ["plugins", "plugins/x", "plugins/x/a.md", "plugins/x/bin", "plugins/x/bin/run"]
    assert {(m.uid, m.gid) for m in members.values()} == {(1234, 99)}
    assert members["plugins/x/a.md"].mode == 0o600 and members["plugins/x/bin/run"].mode == 0o755
    assert [(e.name, e.data) for e in ar.read(packed) if not e.is_dir] == [("plugins/x/a.md", b"a"),
                                                                          ("plugins/x/bin/run", b"#!")]


@pytest.mark.parametrize(("infos", "says"), [
    ([(_info("a", tarfile.SYMTYPE, "/etc/passwd"), None)], "link"),
    ([(_info("a", tarfile.LNKTYPE, "b"), None)], "link"),
    ([(_info("dev", tarfile.CHRTYPE), None)], "not a regular file"),
    ([(_info("/etc/cron.d/x"), b"x")], "absolute"),
    ([(_info("a/../../x"), b"x")], "'..'"),
    ([(_info("a\\b"), b"x")], "invalid path"),
])
def test_read_refuses(infos: list[tuple[tarfile.TarInfo, bytes | None]], says: str) -> None:
    with pytest.raises(ar.UnsafeArchive, match=says):
        ar.read(_tar(*infos))


def test_caps_are_counted_while_reading() -> None:
    many = _tar(*[(_info(f"f{i}"), b"") for i in range(11)])
    with pytest.raises(ar.ArchiveTooLarge, match="more than 10"):
        ar.read(many, max_files=10)
    big = _tar((_info("a"), b"x" * 600), (_info("b"), b"x" * 600))
    with pytest.raises(ar.ArchiveTooLarge, match="over 1000 bytes"):
        ar.read(big, max_bytes=1000)
    with pytest.raises(ar.UnsafeArchive, match="not a valid tar"):
        ar.read(b"not a tar at all")


def test_check_inside_refuses_paths_through_links_and_files() -> None:
    tree = _tar((_info("out", tarfile.SYMTYPE, "/etc"), None), (_info("file"), b"x"),
                (_info("dir", tarfile.DIRTYPE), None))
    ar.check_inside(tree, ["dir/new", "out", "new/deeper/file"])  # a link itself may be replaced or removed
    for path in ("out/passwd", "file/x"):
        with pytest.raises(ar.UnsafeArchive, match="not a directory"):
            ar.check_inside(tree, [path])


def test_strip_root_keeps_links_as_links() -> None:
    engine = _tar((_info("configs", tarfile.DIRTYPE), None), (_info("configs/a"), b"a"),
                  (_info("configs/l", tarfile.SYMTYPE, "/etc"), None))
    listed = {m.name: m.kind for m in ar.members(ar.strip_root(engine, "configs"))}
    assert listed == {"a": "file", "l": "link"}
