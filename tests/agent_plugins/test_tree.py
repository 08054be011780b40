"""The tree a plugin is shipped from: a file swapped for a link, or grown, after the scan is never read."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from molecule_box.agent_plugins import tree
from molecule_box.errors import PayloadTooLarge

LIMITS = tree.Limits(1 << 20, 100)


def test_a_file_swapped_for_a_link_after_the_scan_is_refused(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.md").write_text("a\n")
    (tmp_path / "secret").write_text("s\n")
    scanned = tree.scan(tmp_path / "p", LIMITS)
    os.unlink(tmp_path / "p" / "a.md")
    (tmp_path / "p" / "a.md").symlink_to(tmp_path / "secret")
    with pytest.raises(OSError):
        tree.pack(scanned, io.BytesIO())


def test_a_file_that_grew_after_the_scan_is_refused_not_read_whole(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("a\n")
    scanned = tree.scan(tmp_path, LIMITS)
    (tmp_path / "a.md").write_text("a\n" * 1000)
    with pytest.raises(OSError, match="grew"):
        tree.copy(scanned, tmp_path.parent / f"{tmp_path.name}-copy")


def test_the_caps_stop_the_scan(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"{i}.md").write_text("x" * 100)
    with pytest.raises(PayloadTooLarge, match="size"):
        tree.scan(tmp_path, tree.Limits(450, 100))
    with pytest.raises(PayloadTooLarge, match="file count"):
        tree.scan(tmp_path, tree.Limits(1 << 20, 4))
    assert tree.scan(tmp_path, tree.Limits(500, 5)).size == 500
