"""Agent plugins end to end: a real box serving a registry on disk, the real SDK's ``install_plugin`` against it,
and raw HTTP for the listings, the refusals and the tarball's shape."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import trio

from ..conftest import ADMIN, BoxRunner, bearer, joined

LEAKED = "top secret outside the registry\n"


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def make_registry(root: Path) -> Path:
    """``hello-plugin`` (with a link to a file outside the registry) and ``signed-plugin`` (its plugin.yaml
    carries the SDK's sha256 of its files)."""
    from molecule_agent.__main__ import compute_plugin_sha256

    registry = root / "plugins"
    hello = registry / "hello-plugin"
    write(hello / "plugin.yaml", 'name: hello-plugin\nversion: "1.0.0"\nruntimes: [claude_code]\n')
    write(hello / "rules" / "r.md", "# a rule\n")
    write(hello / "skills" / "x" / "SKILL.md", "---\nname: x\n---\nskill\n")
    write(hello / "setup.sh", "#!/bin/bash\necho ran > ../hello-setup-ran\n", 0o755)
    write(root / "outside" / "secret.txt", LEAKED)
    (hello / "leak").symlink_to(root / "outside" / "secret.txt")
    (hello / "leakdir").symlink_to(root / "outside")
    signed = registry / "signed-plugin"
    write(signed / "rules.md", "signed rule\n")
    write(signed / "setup.sh", "#!/bin/bash\necho ran > ../signed-setup-ran\n", 0o755)
    write(signed / "plugin.yaml", "name: signed-plugin\nversion: 2\n")
    with (signed / "plugin.yaml").open("a") as f:
        f.write(f"sha256: {compute_plugin_sha256(signed)}\n")
    write(registry / "bare" / "README.md", "no plugin.yaml\n")
    return registry


def files_of(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` (links not followed) by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.fixture
async def plugin_box(runner: BoxRunner, tmp_path: Path) -> tuple[str, Path]:
    registry = make_registry(tmp_path)
    await runner.start(MOLECULE_BOX_PLUGINS_DIR=str(registry))
    return runner.url, registry


@pytest.fixture
async def api(plugin_box: tuple[str, Path]) -> Any:
    async with httpx.AsyncClient(base_url=plugin_box[0], timeout=30) as client:
        yield client


def sdk(url: str, wid: str, token: str | None, token_dir: Path) -> Any:
    from molecule_agent import RemoteAgentClient

    client = RemoteAgentClient(wid, url, token_dir=token_dir, origin=None)
    if token is not None:
        client.save_token(token)
    return client


async def sdk_install(url: str, wid: str, token: str | None, token_dir: Path, name: str,
                      source: str | None = None) -> Path:
    def run() -> Path:
        path: Path = sdk(url, wid, token, token_dir).install_plugin(name, source=source)
        return path

    return await trio.to_thread.run_sync(run)


async def refused_status(url: str, wid: str, token: str | None, token_dir: Path, name: str,
                         source: str | None = None) -> int:
    with pytest.raises(requests.HTTPError) as raised:
        await sdk_install(url, wid, token, token_dir, name, source)
    response = raised.value.response
    assert response is not None
    return int(response.status_code)


async def test_the_sdk_installs_a_registry_plugin_byte_identical(plugin_box: tuple[str, Path], api: httpx.AsyncClient,
                                                                 tmp_path: Path) -> None:
    url, registry = plugin_box
    wid, token = await joined(api, "agent", url="remote://no-inbound")
    target = await sdk_install(url, wid, token, tmp_path / "agent", "hello-plugin")
    assert target == tmp_path / "agent" / "plugins" / "hello-plugin"
    # Exactly the plugin's regular files, byte for byte; neither link, nor what they point at.
    assert files_of(target) == files_of(registry / "hello-plugin")
    assert not (target / "leak").exists() and not (target / "leakdir").exists()
    assert all(LEAKED.encode() not in data for data in files_of(target).values())
    assert (target / "setup.sh").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "agent" / "plugins" / "hello-setup-ran").read_text() == "ran\n"
    assert not list((tmp_path / "agent" / "plugins").glob(".staging-*"))
    # The SDK reported the install; the box recorded it (the platform answered 503 and listed nothing).
    listed = (await api.get(f"/workspaces/{wid}/plugins", headers=bearer(token))).json()
    assert [(p["name"], p["source"], p["runtimes"], p["supported_on_runtime"]) for p in listed] == [
        ("hello-plugin", "local://hello-plugin", ["claude_code"], False)]
    events = (await api.get(f"/events/{wid}", headers=ADMIN)).json()
    assert [e["payload"] for e in events if e["event_type"] == "PLUGIN_INSTALLED"] == [
        {"plugin": "hello-plugin", "source": "local://hello-plugin"}]


async def test_the_download_is_a_gzip_tar_of_relative_regular_files(plugin_box: tuple[str, Path],
                                                                     api: httpx.AsyncClient) -> None:
    _, registry = plugin_box
    wid, token = await joined(api, "agent", url="remote://no-inbound")
    response = await api.get(f"/workspaces/{wid}/plugins/hello-plugin/download", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["x-plugin-name"] == "hello-plugin"
    assert response.headers["x-plugin-source"] == "local://hello-plugin"
    assert response.headers["content-disposition"] == 'attachment; filename="hello-plugin.tar.gz"'
    assert int(response.headers["content-length"]) == len(response.content)
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == ["plugin.yaml", "rules", "rules/r.md", "setup.sh", "skills", "skills/x", "skills/x/SKILL.md"]
        for member in members:
            assert not member.name.startswith(("/", "./")) and ".." not in member.name.split("/")
            assert member.isfile() or member.isdir()
            if member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                assert extracted.read() == (registry / "hello-plugin" / member.name).read_bytes()
        assert tar.getmember("setup.sh").mode == 0o755
        assert tar.getmember("rules/r.md").mode == 0o644
    assert LEAKED.encode() not in response.content  # compressed anyway: also checked member by member above


async def test_a_tampered_signed_plugin_is_refused_by_the_sdk(plugin_box: tuple[str, Path], api: httpx.AsyncClient,
                                                              tmp_path: Path) -> None:
    url, registry = plugin_box
    wid, token = await joined(api, "agent", url="remote://no-inbound")
    plugins = tmp_path / "agent" / "plugins"
    target = await sdk_install(url, wid, token, tmp_path / "agent", "signed-plugin")
    assert files_of(target) == files_of(registry / "signed-plugin")
    assert (plugins / "signed-setup-ran").exists()
    (plugins / "signed-setup-ran").unlink()
    write(registry / "signed-plugin" / "rules.md", "tampered rule\n")
    with pytest.raises(ValueError, match=r"setup\.sh was NOT run"):
        await sdk_install(url, wid, token, tmp_path / "agent", "signed-plugin")
    assert not target.exists() and not (plugins / "signed-setup-ran").exists()


async def test_every_refusal_the_sdk_meets(plugin_box: tuple[str, Path], api: httpx.AsyncClient,
                                           tmp_path: Path) -> None:
    url, _ = plugin_box
    wid, token = await joined(api, "agent", url="remote://no-inbound")
    other, other_token = await joined(api, "other", url="remote://no-inbound")
    agent = tmp_path / "agent"
    assert await refused_status(url, wid, token, agent, "nope") == 404
    assert await refused_status(url, wid, None, tmp_path / "tokenless", "hello-plugin") == 401
    assert await refused_status(url, wid, other_token, tmp_path / "other", "hello-plugin") == 401
    assert await refused_status(url, wid, token, agent, "other", "local://hello-plugin") == 400
    assert await refused_status(url, wid, token, agent, "hello-plugin", "github://acme/hello-plugin") == 422
    assert await refused_status(url, wid, token, agent, "x", "ftp://x") == 400
    assert not (agent / "plugins" / "hello-plugin").exists()

    async def raw(name: str, source: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
        params = {"source": source} if source is not None else {}
        return await api.get(f"/workspaces/{wid}/plugins/{name}/download", params=params,
                             headers=bearer(token) if headers is None else headers)

    mismatch = await raw("other", "local://hello-plugin")
    assert (mismatch.status_code, mismatch.json()["resolved_name"], mismatch.json()["requested_name"]) == (
        400, "hello-plugin", "other")
    unpinned = await raw("hello-plugin", "github://acme/hello-plugin")
    assert unpinned.status_code == 422 and unpinned.json()["source"] == "github://acme/hello-plugin"
    assert "unpinned github source" in unpinned.json()["error"]
    unknown = await raw("x", "ftp://x")
    assert unknown.json() == {"error": "failed to resolve plugin source", "available_schemes": ["github", "local"]}
    for name in ("x..y", "a%5Cb", "Upper"):
        bad = await raw(name)
        assert (bad.status_code, bad.json()["error"]) == (400, "invalid plugin name"), name
    for source in ("github://acme/", "github://acme/repo#", "github://acme/repo#-x", "github://a/b/c#v1", "local://"):
        assert (await raw("repo", source)).status_code == 400, source
    assert (await raw("hello-plugin", headers={})).json()["error"] == "missing workspace auth token"
    assert (await raw("hello-plugin", headers=bearer(other_token))).status_code == 401
    assert (await api.get(f"/workspaces/{other}/plugins/hello-plugin/download",
                          headers=bearer(other_token))).status_code == 200
    gone = await api.get("/workspaces/00000000-0000-0000-0000-000000000000/plugins/hello-plugin/download",
                         headers=ADMIN)
    assert gone.status_code == 404


async def test_a_link_in_the_registry_is_never_followed(plugin_box: tuple[str, Path], api: httpx.AsyncClient,
                                                        tmp_path: Path) -> None:
    _, registry = plugin_box
    wid, token = await joined(api, "agent", url="remote://no-inbound")
    write(tmp_path / "elsewhere" / "plugin.yaml", "name: elsewhere\n")
    (registry / "linked").symlink_to(tmp_path / "elsewhere")
    linked = await api.get(f"/workspaces/{wid}/plugins/linked/download", headers=bearer(token))
    assert linked.status_code == 404
    assert "linked" not in [p["name"] for p in (await api.get("/plugins")).json()]


async def test_listings_have_the_platform_fields_with_lists_never_null(plugin_box: tuple[str, Path],
                                                                       api: httpx.AsyncClient) -> None:
    listed = (await api.get("/plugins")).json()
    assert [p["name"] for p in listed] == ["bare", "hello-plugin", "signed-plugin"]
    assert listed[0] == {"name": "bare", "version": "", "description": "", "author": "", "tags": [], "skills": [],
                         "runtimes": []}
    assert listed[1]["version"] == "1.0.0" and listed[1]["runtimes"] == ["claude_code"]
    assert listed[2]["version"] == "2"  # an unquoted number is kept as text
    assert [p["name"] for p in (await api.get("/plugins?runtime=deepagents")).json()] == ["bare", "signed-plugin"]
    assert "hello-plugin" in [p["name"] for p in (await api.get("/plugins?runtime=claude-code")).json()]
    assert (await api.get("/plugins/sources")).json() == {"schemes": ["github", "local"]}
    # A remote workspace's runtime is "external": only plugins for every runtime are available to it.
    wid, token = await joined(api, "agent", url="remote://no-inbound")
    available = (await api.get(f"/workspaces/{wid}/plugins/available", headers=bearer(token))).json()
    assert [(p["name"], p["supported_on_runtime"]) for p in available] == [("bare", True), ("signed-plugin", True)]
    assert (await api.get(f"/workspaces/{wid}/plugins", headers=bearer(token))).json() == []
    for name in ("hello-plugin", "bare"):
        installed = await api.post(f"/workspaces/{wid}/plugins", json={"source": f"local://{name}"},
                                   headers=bearer(token))
        assert installed.json() == {"status": "installed", "plugin": name, "source": f"local://{name}"}
    check = (await api.get(f"/workspaces/{wid}/plugins/compatibility?runtime=deepagents",
                           headers=bearer(token))).json()
    assert (check["target_runtime"], [p["name"] for p in check["compatible"]],
            [p["name"] for p in check["incompatible"]], check["all_compatible"]) == (
        "deepagents", ["bare"], ["hello-plugin"], False)
    missing = await api.get(f"/workspaces/{wid}/plugins/compatibility", headers=bearer(token))
    assert missing.json() == {"error": "runtime query parameter is required"}
    assert (await api.get(f"/workspaces/{wid}/plugins", headers={})).status_code == 401


async def test_install_pins_and_uninstall_is_idempotent(plugin_box: tuple[str, Path], api: httpx.AsyncClient) -> None:
    _, registry = plugin_box
    wid, token = await joined(api, "agent", url="remote://no-inbound")
    own = bearer(token)
    yaml_hash = hashlib.sha256((registry / "hello-plugin" / "plugin.yaml").read_bytes()).hexdigest()
    wrong = await api.post(f"/workspaces/{wid}/plugins", json={"source": "hello-plugin", "sha256": "0" * 64},
                           headers=own)
    assert wrong.status_code == 422 and wrong.json()["error"].startswith("sha256 mismatch: expected 000")
    no_yaml = await api.post(f"/workspaces/{wid}/plugins", json={"source": "bare", "sha256": yaml_hash}, headers=own)
    assert no_yaml.json()["error"] == "sha256 check failed: plugin.yaml not found in staged plugin"
    assert (await api.post(f"/workspaces/{wid}/plugins", json={"source": "hello-plugin", "sha256": "abc"},
                           headers=own)).status_code == 400
    assert (await api.post(f"/workspaces/{wid}/plugins", json={}, headers=own)).json()["error"].startswith(
        "'source' is required")
    assert (await api.post(f"/workspaces/{wid}/plugins", content=b"{" + b" " * 70000 + b"}",
                           headers=own)).status_code == 413
    assert (await api.get(f"/workspaces/{wid}/plugins", headers=own)).json() == []
    pinned = await api.post(f"/workspaces/{wid}/plugins", json={"source": "hello-plugin", "sha256": yaml_hash.upper()},
                            headers=own)
    assert pinned.status_code == 200, pinned.text
    for _ in range(2):
        removed = await api.delete(f"/workspaces/{wid}/plugins/hello-plugin", headers=own)
        assert removed.json() == {"status": "uninstalled", "plugin": "hello-plugin"}
    assert (await api.get(f"/workspaces/{wid}/plugins", headers=own)).json() == []
    assert (await api.delete(f"/workspaces/{wid}/plugins/x..y", headers=own)).status_code == 400
    events = (await api.get(f"/events/{wid}", headers=ADMIN)).json()
    assert [e["event_type"] for e in events if e["event_type"].startswith("PLUGIN_")] == [
        "PLUGIN_UNINSTALLED", "PLUGIN_INSTALLED"]


async def test_manifest_json_integrity(plugin_box: tuple[str, Path], api: httpx.AsyncClient) -> None:
    _, registry = plugin_box
    wid, token = await joined(api, "agent", url="remote://no-inbound")
    plugin = registry / "manifested"
    write(plugin / "plugin.yaml", "name: manifested\n")
    write(plugin / "a" / "b.md", "b\n")
    digest = hashlib.sha256()
    for rel in sorted(["plugin.yaml", "a/b.md"]):
        digest.update(rel.encode() + b"\x00" + (plugin / rel).read_bytes())
    url = f"/workspaces/{wid}/plugins/manifested/download"
    write(plugin / "manifest.json", json.dumps({"sha256": "f" * 64}))
    refused = await api.get(url, headers=bearer(token))
    assert (refused.status_code, refused.json()["error"]) == (422, "plugin manifest integrity check failed")
    assert (await api.post(f"/workspaces/{wid}/plugins", json={"source": "manifested"},
                           headers=bearer(token))).status_code == 422
    write(plugin / "manifest.json", "not json")
    assert (await api.get(url, headers=bearer(token))).status_code == 422
    write(plugin / "manifest.json", json.dumps({"sha256": digest.hexdigest().upper()}))
    assert (await api.get(url, headers=bearer(token))).status_code == 200


async def test_the_size_and_file_caps_refuse_with_413(runner: BoxRunner, tmp_path: Path) -> None:
    registry = tmp_path / "plugins"
    write(registry / "big" / "plugin.yaml", "name: big\n")
    write(registry / "big" / "blob.txt", "x" * 2048)
    for i in range(3):
        write(registry / "many" / f"f{i}.md", "m\n")
    await runner.start(MOLECULE_BOX_PLUGINS_DIR=str(registry), PLUGIN_INSTALL_MAX_DIR_BYTES="1024",
                       MOLECULE_BOX_PLUGIN_MAX_FILES="2")
    async with httpx.AsyncClient(base_url=runner.url, timeout=30) as api:
        wid, token = await joined(api, "agent", url="remote://no-inbound")
        big = await api.get(f"/workspaces/{wid}/plugins/big/download", headers=bearer(token))
        assert (big.status_code, big.json()["error"]) == (413, "staged plugin exceeds size limit")
        many = await api.post(f"/workspaces/{wid}/plugins", json={"source": "many"}, headers=bearer(token))
        assert (many.status_code, many.json()["error"]) == (413, "staged plugin exceeds file count limit")
        assert (await api.get(f"/workspaces/{wid}/plugins", headers=bearer(token))).json() == []


async def test_the_org_allowlist_is_checked_before_anything_is_fetched(plugin_box: tuple[str, Path],
                                                                       api: httpx.AsyncClient,
                                                                       tmp_path: Path) -> None:
    url, _ = plugin_box
    org, _ = await joined(api, "org", url="remote://no-inbound")
    child, _ = await joined(api, "child", url="remote://no-inbound", parent_id=org)
    wid, token = await joined(api, "grandchild", url="remote://no-inbound", parent_id=child)
    allowlist = f"/orgs/{org}/plugins/allowlist"
    assert (await api.get(allowlist, headers=ADMIN)).json() == {"org_id": org, "plugins": [], "allow_all": True}
    assert (await api.put(allowlist, json={"plugins": ["other"]}, headers=ADMIN)).json() == {
        "error": "enabled_by is required"}
    bad = await api.put(allowlist, json={"plugins": ["a/b"], "enabled_by": org}, headers=ADMIN)
    assert bad.json() == {"error": "invalid plugin name", "plugin_name": "a/b"}
    assert (await api.put(allowlist, json={"plugins": ["other"], "enabled_by": org},
                          headers=bearer(token))).status_code == 401
    put = await api.put(allowlist, json={"plugins": ["other"], "enabled_by": org}, headers=ADMIN)
    assert put.json() == {"org_id": org, "plugins": ["other"], "allow_all": False}
    listed = (await api.get(allowlist, headers=ADMIN)).json()
    assert [(p["plugin_name"], p["enabled_by"]) for p in listed["plugins"]] == [("other", org)]
    # The grandchild's org is its root (the platform looked one level up), on download and install alike; an
    # unpinned github source is refused by the allowlist too, before the pin is even looked at for a fetch.
    assert await refused_status(url, wid, token, tmp_path / "agent", "hello-plugin") == 403
    install = await api.post(f"/workspaces/{wid}/plugins", json={"source": "local://hello-plugin"},
                             headers=bearer(token))
    assert (install.status_code, install.json()["error"]) == (403, 'plugin "hello-plugin" is not in the org allowlist')
    github = await api.post(f"/workspaces/{wid}/plugins", json={"source": "github://acme/hello-plugin#v1"},
                            headers=bearer(token))
    assert github.status_code == 403  # refused before any fetch: this box has no route to github
    await api.put(allowlist, json={"plugins": [], "enabled_by": org}, headers=ADMIN)
    assert (await sdk_install(url, wid, token, tmp_path / "agent", "hello-plugin")).is_dir()
    unknown = await api.get("/orgs/00000000-0000-0000-0000-000000000000/plugins/allowlist", headers=ADMIN)
    assert (unknown.status_code, unknown.json()) == (404, {"error": "org not found"})


async def test_settings_find_the_registry(tmp_path: Path) -> None:
    from molecule_box.config import Settings

    base = {"MOLECULE_BOX_DATA": str(tmp_path / "data")}
    assert Settings.from_mapping(base, environ={}).plugins_dir == tmp_path / "data" / "plugins"
    configs = Settings.from_mapping(base | {"CONFIGS_DIR": str(tmp_path / "x" / "configs")}, environ={})
    assert configs.plugins_dir == tmp_path / "x" / "plugins"
    chosen = Settings.from_mapping(base | {"CONFIGS_DIR": "/c", "MOLECULE_BOX_PLUGINS_DIR": str(tmp_path / "p")},
                                   environ={})
    assert chosen.plugins_dir == tmp_path / "p"
    timed = Settings.from_mapping(base | {"PLUGIN_INSTALL_FETCH_TIMEOUT": "5m"}, environ={})
    assert timed.plugin_fetch_timeout == 300.0
    assert os.sep == "/"


async def test_a_box_run_workspace_without_file_operations_is_a_501(runner: BoxRunner, tmp_path: Path) -> None:
    """A box-run workspace whose backend has no config-file operations cannot get a plugin: a clear 501 that
    records nothing (no install row, no event, no restart). Docker's install: tests/backends/test_docker_files.py."""
    from molecule_box.backends import BackendError, Workload, WorkloadSpec

    from ..actors.stubs import LifecycleStub

    class NoStart(LifecycleStub):
        name = "nostart"

        async def start(self, spec: WorkloadSpec) -> Workload:
            raise BackendError("no workload in this test")

    registry = make_registry(tmp_path)
    await runner.start(MOLECULE_BOX_PLUGINS_DIR=str(registry), extra_backends={"nostart": NoStart})
    async with httpx.AsyncClient(base_url=runner.url, timeout=30) as api:
        created = await api.post("/workspaces", json={"name": "boxed", "backend": "nostart"}, headers=ADMIN)
        wid = created.json()["id"]
        refused = await api.post(f"/workspaces/{wid}/plugins", json={"source": "hello-plugin"}, headers=ADMIN)
        assert refused.status_code == 501 and "has no file access" in refused.json()["error"], refused.text
        assert (await api.get(f"/workspaces/{wid}/plugins", headers=ADMIN)).json() == []
        events = (await api.get(f"/events/{wid}", headers=ADMIN)).json()
        assert not [e for e in events if e["event_type"].startswith("PLUGIN_")]
        gone = await api.delete(f"/workspaces/{wid}/plugins/hello-plugin", headers=ADMIN)
        assert gone.json() == {"status": "uninstalled", "plugin": "hello-plugin"}


async def test_clients_that_stop_reading_hold_up_only_their_own_downloads(runner: BoxRunner, tmp_path: Path) -> None:
    registry = tmp_path / "plugins"
    write(registry / "big" / "plugin.yaml", "name: big\n")
    (registry / "big" / "blob.bin").write_bytes(os.urandom(16 * 1024 * 1024))  # beyond any socket buffer
    await runner.start(MOLECULE_BOX_PLUGINS_DIR=str(registry))
    async with httpx.AsyncClient(base_url=runner.url, timeout=30) as api:
        wid, token = await joined(api, "agent", url="remote://no-inbound")
        path = f"/workspaces/{wid}/plugins/big/download"
        host, port = runner.url.removeprefix("http://").split(":")
        stalled = []
        for _ in range(6):  # more than the box's senders: each reads its first bytes, then nothing more
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
                                  .encode())
            with trio.fail_after(30):
                assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")
            stalled.append(stream)
        try:
            with trio.fail_after(30):
                whole = await api.get(path, headers=bearer(token))
            assert whole.status_code == 200 and len(whole.content) == int(whole.headers["content-length"])
        finally:
            for stream in stalled:
                await stream.aclose()
