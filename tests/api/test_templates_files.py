"""Templates (listing, import, create with a template) and the files API's refusals, through a real box's HTTP
API; the docker side (files reaching a container) is in tests/backends/test_docker_files.py."""

from __future__ import annotations

import io
import tarfile

import httpx
import pytest

from molecule_box.box import Box

from ..conftest import ADMIN, bearer, joined


def _tar(members: list[tuple[str, bytes | None, str]], *, gz: bool = False) -> bytes:
    """A tar of (name, data, kind) members; kind "file", "dir", "symlink", "hardlink" or "fifo"."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = "/etc/passwd"
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b"") if kind == "file" else None)
    return buffer.getvalue()


CONFIG = b"name: Writer\nruntime: claude-code\nmodel: sonnet\ndescription: writes\n"


async def _import(client: httpx.AsyncClient, data: bytes, **params: str) -> httpx.Response:
    return await client.post("/templates/import", content=data, params=params,
                             headers={**ADMIN, "Content-Type": "application/x-tar"})


async def test_import_then_list_then_create_prefills(box: Box, client: httpx.AsyncClient) -> None:
    assert (await client.get("/templates", headers=ADMIN)).json() == []
    made = await _import(client, _tar([("writer/", None, "dir"), ("writer/config.yaml", CONFIG, "file"),
                                       ("writer/prompts/a.md", b"hi", "file")], gz=True))
    assert made.status_code == 201, made.text
    assert made.json()["id"] == "writer" and made.json()["model"] == "sonnet"
    assert (box.settings.templates_root / "writer" / "prompts" / "a.md").read_bytes() == b"hi"
    loose = await _import(client, _tar([("config.yaml", CONFIG, "file")]), name="loose")
    assert loose.status_code == 201, loose.text
    assert [t["id"] for t in (await client.get("/templates", headers=ADMIN)).json()] == ["loose", "writer"]
    again = await _import(client, _tar([("writer/config.yaml", b"name: Other\n", "file")]))
    assert again.status_code == 409
    replaced = await _import(client, _tar([("writer/config.yaml", b"name: Other\n", "file")]), replace="true")
    assert replaced.status_code == 201 and replaced.json()["name"] == "Other"
    assert not (box.settings.templates_root / "writer" / "prompts").exists()  # replaced whole

    # create: runtime from the template (external is none of its business: it keeps no files)
    (box.settings.templates_root / "writer" / "config.yaml").write_bytes(CONFIG)
    created = await client.post("/workspaces", json={"name": "w", "template": "writer", "backend": "external"},
                                headers=ADMIN)
    assert created.status_code == 201, created.text
    ws = (await client.get(f"/workspaces/{created.json()['id']}", headers=ADMIN)).json()
    assert ws["runtime"] == "claude-code"


# The box answers 413 and closes the connection before httpx has sent the whole body; httpx then leaves its
# request-body generator to the garbage collector (a client-side warning, not a box problem).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_import_refusals_write_nothing(box: Box, client: httpx.AsyncClient) -> None:
    cases = {
        "link": _tar([("t/config.yaml", CONFIG, "file"), ("t/passwd", None, "symlink")]),
        "hard link": _tar([("t/config.yaml", CONFIG, "file"), ("t/passwd", None, "hardlink")]),
        "dotdot": _tar([("t/config.yaml", CONFIG, "file"), ("t/../../evil", b"x", "file")]),
        "absolute": _tar([("/t/config.yaml", CONFIG, "file")]),
        "fifo": _tar([("t/config.yaml", CONFIG, "file"), ("t/pipe", None, "fifo")]),
        "no config": _tar([("t/readme.md", b"x", "file")]),
        "not a tar": b"plain text, not an archive",
        "org-templates": _tar([("org-templates/config.yaml", CONFIG, "file")]),
    }
    for what, data in cases.items():
        refused = await _import(client, data)
        assert refused.status_code == 400, (what, refused.text)
        assert refused.json()["error"], what
    many = _tar([("t/config.yaml", CONFIG, "file")] + [(f"t/{i}", b"", "file") for i in range(2001)])
    assert (await _import(client, many)).status_code == 413
    big = _tar([("t/config.yaml", CONFIG, "file"), ("t/big", b"x" * (1024 * 1024 + 1), "file")])
    assert (await _import(client, big)).status_code == 413
    root = box.settings.templates_root
    assert not root.exists() or [p.name for p in root.iterdir()] == []
    _, token = await joined(client)
    for headers in ({}, bearer(token)):  # admin only
        assert (await client.get("/templates", headers=headers)).status_code == 401
        assert (await client.post("/templates/import", content=cases["no config"], headers=headers)).status_code == 401


async def test_create_with_a_bad_template_is_a_400_with_a_body(box: Box, client: httpx.AsyncClient) -> None:
    root = box.settings.templates_root
    root.mkdir(parents=True)
    outside = root.parent / "outside"
    outside.mkdir()
    (outside / "config.yaml").write_bytes(CONFIG)
    (root / "escape").symlink_to(outside)
    for template in ("../outside", "/etc", "escape", "missing", "a/../../outside"):
        for extra in ({}, {"runtime": "langgraph", "model": "m"}):  # the platform answered no body for the latter
            refused = await client.post("/workspaces", json={"name": "x", "template": template, **extra,
                                                             "backend": "docker"}, headers=ADMIN)
            assert refused.status_code == 400, (template, refused.text)
            assert refused.json()["error"].startswith("invalid template"), refused.text
    assert (await client.get("/workspaces", headers=ADMIN)).json() == []  # nothing was stored


async def test_files_of_a_remote_agent_are_501(client: httpx.AsyncClient) -> None:
    wid, token = await joined(client)
    for method, path, body in (("GET", "files", None), ("GET", "files/config.yaml", None),
                               ("PUT", "files/a.txt", {"content": "x"}), ("PUT", "files", {"files": {}}),
                               ("DELETE", "files/a.txt", None)):
        answer = await client.request(method, f"/workspaces/{wid}/{path}", json=body, headers=bearer(token))
        assert answer.status_code == 501, (method, path, answer.text)
        assert "external backend has no file access" in answer.json()["error"]
    # a path refused before any backend is asked
    bad = await client.put(f"/workspaces/{wid}/files", json={"files": {"../x": "y"}}, headers=bearer(token))
    assert bad.status_code == 400
    raw = await client.get(f"/workspaces/{wid}/files/a/%2e%2e/%2e%2e/etc/passwd", headers=bearer(token))
    assert raw.status_code in (400, 404), raw.text
