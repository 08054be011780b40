"""github:// sources fetched by the real git: tags, branches and commit SHAs as pins (the platform's clone
--branch could not take a SHA). No network here: the repositories are local, served over git's file
transport, through the same fetch the box runs against https://github.com."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from molecule_box.agent_plugins.pipeline import Pipeline
from molecule_box.agent_plugins.sources import parse
from molecule_box.agent_plugins.tree import Limits
from molecule_box.errors import BadRequest, GatewayTimeout, NotFound, PayloadTooLarge, UnprocessableEntity


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args], cwd=cwd,
                          check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def served(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """``acme/tool``: v1 tagged, then a second commit on main, then a third on branch ``dev``; the SHAs by name."""
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    (work / "plugin.yaml").write_text("name: tool\nversion: '1'\n")
    git(work, "add", ".")
    git(work, "commit", "-qm", "one")
    git(work, "tag", "v1")
    first = git(work, "rev-parse", "HEAD")
    (work / "plugin.yaml").write_text("name: tool\nversion: '2'\n")
    git(work, "commit", "-qam", "two")
    second = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-qb", "dev")
    (work / "dev.md").write_text("dev\n")
    git(work, "add", ".")
    git(work, "commit", "-qm", "three")
    git(work, "checkout", "-q", "main")
    root = tmp_path / "gh"
    (root / "acme").mkdir(parents=True)
    git(tmp_path, "clone", "-q", "--bare", str(work), str(root / "acme" / "tool.git"))
    return root, {"first": first, "second": second}


def pipeline(tmp_path: Path, root: Path, *, timeout: float = 30, max_bytes: int = 1 << 20) -> Pipeline:
    return Pipeline(registry=tmp_path / "registry", work_dir=tmp_path / "work-dir", limits=Limits(max_bytes, 100),
                    allow_unpinned=False, fetch_timeout=timeout, github_url=f"file://{root}")


async def staged_files(p: Pipeline, source: str) -> dict[str, str]:
    async with p.stage(parse(source)) as staged:
        assert staged.name == "tool"
        return {e.path: (staged.tree.root / e.path).read_text() for e in staged.tree.files}


async def test_tags_branches_and_shas_are_pins(tmp_path: Path, served: tuple[Path, dict[str, str]]) -> None:
    root, shas = served
    p = pipeline(tmp_path, root)
    assert await staged_files(p, "github://acme/tool#v1") == {"plugin.yaml": "name: tool\nversion: '1'\n"}
    assert await staged_files(p, f"github://acme/tool#{shas['first']}") == {
        "plugin.yaml": "name: tool\nversion: '1'\n"}
    assert await staged_files(p, "github://acme/tool#main") == {"plugin.yaml": "name: tool\nversion: '2'\n"}
    assert set(await staged_files(p, "github://acme/tool#dev")) == {"plugin.yaml", "dev.md"}  # no .git
    assert list((tmp_path / "work-dir").iterdir()) == []  # every checkout is gone after its block


async def test_fetch_failures_are_typed_and_carry_no_git_text(tmp_path: Path,
                                                              served: tuple[Path, dict[str, str]]) -> None:
    root, _ = served
    p = pipeline(tmp_path, root)
    for source in ("github://acme/tool#v9", "github://acme/missing#v1"):
        with pytest.raises(NotFound) as raised:
            await staged_files(p, source)
        assert raised.value.body() == {"error": "failed to fetch plugin from github", "source": source}
    with pytest.raises(GatewayTimeout):
        await staged_files(pipeline(tmp_path, root, timeout=1e-6), "github://acme/tool#v1")
    with pytest.raises(PayloadTooLarge):
        await staged_files(pipeline(tmp_path, root, max_bytes=10), "github://acme/tool#v1")
    assert list((tmp_path / "work-dir").iterdir()) == []


def test_sources_are_refused_before_any_fetch() -> None:
    with pytest.raises(UnprocessableEntity):
        parse("github://acme/tool")
    assert parse("github://acme/tool", allow_unpinned=True).ref is None
    for bad in ("github://acme/tool#", "github://acme/tool#-upload-pack=x", "github://-x/tool#v1", "github://acme",
                "  ", "local://a/b", "local://UP", "ftp://x"):
        with pytest.raises(BadRequest):
            parse(bad)
    assert parse(" hello ").raw == "local://hello"
    assert parse("GitHub://o/r#v1.2.0").raw == "github://o/r#v1.2.0"
