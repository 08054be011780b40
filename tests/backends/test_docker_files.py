"""Templates, the model and the files API on real Docker workspaces (the test agent image, a real engine)."""

from __future__ import annotations

import base64
import subprocess

import httpx
import pytest
import trio
import yaml

from ..conftest import ADMIN, BoxRunner, bearer
from .dockerutil import IMAGE, IMAGE_PREFIX, RUNTIME, containers, docker, docker_env, free_port, remove_box
from .test_docker_workspaces import DockerBox, cli, docker_box, until

pytestmark = pytest.mark.docker
__all__ = ["docker_box"]


def _env(data: dict[str, object]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in data["Config"]["Env"])  # type: ignore[index]


async def test_a_template_and_the_model_reach_the_container(docker_box: DockerBox) -> None:
    root = docker_box.box.settings.templates_root / "researcher"
    (root / "prompts").mkdir(parents=True)
    (root / "config.yaml").write_text(f"name: Researcher\nruntime: {RUNTIME}\nruntime_config:\n"
                                      "  model: openai:gpt-4o\n  timeout: 5\n")
    (root / "prompts" / "system.md").write_bytes(b"be brief\r\nand kind\r\n")
    (root / "data.bin").write_bytes(b"\x00\x01\r\n")
    listed = (await docker_box.client.get("/templates", headers=ADMIN)).json()
    assert [(t["id"], t["model"], t["runtime"]) for t in listed] == [("researcher", "openai:gpt-4o", RUNTIME)]

    # runtime and model come from the template when the request names neither
    made = await docker_box.client.post("/workspaces", json={"name": "r", "template": "researcher"}, headers=ADMIN)
    assert made.status_code == 201, made.text
    wid = made.json()["id"]
    plain = await docker_box.create("plain", model="anthropic:claude-haiku")
    for each in (wid, plain):
        await docker_box.wait_for(each, "online")
    assert (await docker_box.get(wid))["runtime"] == RUNTIME
    container = docker_box.container_of(wid)["Id"]
    config = yaml.safe_load(await cli("exec", container, "cat", "/configs/config.yaml"))
    assert config["name"] == "Researcher" and config["runtime_config"]["timeout"] == 5
    assert config["model"] == "openai:gpt-4o"  # the runtime reads the model at the top level
    assert await cli("exec", container, "cat", "/configs/prompts/system.md") == "be brief\nand kind\n"
    assert (await cli("exec", container, "od", "-An", "-c", "/configs/data.bin")).split() == \
        ["\\0", "001", "\\r", "\\n"]  # only .sh, .py and .md files lose their CR
    assert _env(docker_box.container_of(wid))["MODEL_PROVIDER"] == "openai:gpt-4o"

    # without a template: the platform's minimal config.yaml, with the model given at create
    other = docker_box.container_of(plain)["Id"]
    minimal = yaml.safe_load(await cli("exec", other, "cat", "/configs/config.yaml"))
    assert minimal == {"name": "plain", "description": "", "version": "1.0.0", "tier": 3, "runtime": RUNTIME,
                       "model": "anthropic:claude-haiku"}
    assert _env(docker_box.container_of(plain))["MODEL_PROVIDER"] == "anthropic:claude-haiku"

    # an edit through the files API survives a restart: the template seeds an empty /configs only
    put = await docker_box.client.put(f"/workspaces/{wid}/files/config.yaml", headers=ADMIN,
                                      json={"content": "name: Edited\nruntime: langgraph\n", "restart": True})
    assert put.status_code == 200 and put.json()["restarted"] is True, put.text
    await docker_box.wait_for(wid, "online")
    restarted = docker_box.container_of(wid)["Id"]
    assert restarted != container
    assert "Edited" in await cli("exec", restarted, "cat", "/configs/config.yaml")


async def _online(docker_box: DockerBox, name: str) -> tuple[str, str, str]:
    """(id, files URL, container id) of a new workspace once it is online."""
    wid = await docker_box.create(name)
    await docker_box.wait_for(wid, "online")
    return wid, f"/workspaces/{wid}/files", docker_box.container_of(wid)["Id"]


async def test_files_round_trip_running_and_stopped(docker_box: DockerBox) -> None:
    client = docker_box.client
    wid, base, container = await _online(docker_box, "files")
    uid = (await cli("exec", container, "id", "-u")).strip()

    put = await client.put(f"{base}/notes/today.md", json={"content": "héllo"}, headers=ADMIN)
    assert put.status_code == 200 and put.json() == {"status": "saved", "path": "notes/today.md", "size": 6,
                                                     "restarted": False}, put.text
    got = await client.get(f"{base}/notes/today.md", headers=ADMIN)
    assert got.json() == {"path": "notes/today.md", "content": "héllo", "size": 6, "encoding": "utf-8"}
    # the running agent sees it at once, owned by its own user
    assert await cli("exec", container, "cat", "/configs/notes/today.md") == "héllo"
    assert (await cli("exec", container, "stat", "-c", "%u", "/configs/notes/today.md")).strip() == uid
    listing = (await client.get(base, headers=ADMIN)).json()
    paths = {e["path"]: e for e in listing}
    assert {"config.yaml", "notes", "notes/today.md"} <= set(paths) and ".auth_token" not in paths
    assert paths["notes"]["dir"] and not paths["notes/today.md"]["dir"]
    assert [e["path"] for e in (await client.get(base, params={"path": "notes"}, headers=ADMIN)).json()] == \
        ["notes/today.md"]

    # stopped: the files are still there, and writable
    assert (await client.post(f"/workspaces/{wid}/pause", headers=ADMIN)).status_code == 200
    await until(lambda: _stopped(container), "the container to stop")
    raw = bytes(range(256))
    binary = await client.put(f"{base}/bin/blob", json={"content": base64.b64encode(raw).decode(),
                                                         "encoding": "base64"}, headers=ADMIN)
    assert binary.status_code == 200, binary.text
    back = (await client.get(f"{base}/bin/blob", headers=ADMIN)).json()
    assert back["encoding"] == "base64" and base64.b64decode(back["content"]) == raw
    assert (await client.delete(f"{base}/notes", headers=ADMIN)).status_code == 200
    assert (await client.get(f"{base}/notes/today.md", headers=ADMIN)).status_code == 404
    assert (await client.delete(f"{base}/notes", headers=ADMIN)).status_code == 404

    # replace all: exactly these files (the token file stays the box's)
    replaced = await client.put(base, json={"files": {"config.yaml": "name: new\n", "skills/a/SKILL.md": "# a"}},
                                headers=ADMIN)
    assert replaced.status_code == 200 and replaced.json()["restarted"] is False, replaced.text
    after = {e["path"] for e in (await client.get(base, headers=ADMIN)).json()}
    assert after == {"config.yaml", "skills", "skills/a", "skills/a/SKILL.md"}
    assert (await client.post(f"/workspaces/{wid}/resume", headers=ADMIN)).status_code == 200
    await docker_box.wait_for(wid, "online")  # it registered: its token file was kept
    fresh = docker_box.container_of(wid)["Id"]
    assert (await cli("exec", fresh, "cat", "/configs/config.yaml")) == "name: new\n"
    # no helper container is left behind
    assert set(containers(docker_box.box.box_id)) == {fresh}


async def _stopped(container: str) -> bool:
    return (await cli("inspect", "-f", "{{.State.Running}}", container)).strip() == "false"


# The box answers 413 and closes the connection before httpx has sent the whole body; httpx then leaves its
# request-body generator to the garbage collector (a client-side warning, not a box problem).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_files_refusals(docker_box: DockerBox) -> None:
    client = docker_box.client
    _, base, container = await _online(docker_box, "refusals")
    await cli("exec", container, "ln", "-s", "/etc", "/configs/out")
    await cli("exec", container, "sh", "-c", "echo secret > /tmp/x && ln -s /tmp/x /configs/leak")
    listing = {e["path"]: e for e in (await client.get(base, headers=ADMIN)).json()}
    assert listing["out"]["link"] and "out/passwd" not in listing  # listed as a link, never followed
    for path in ("out", "leak"):
        read = await client.get(f"{base}/{path}", headers=ADMIN)
        assert read.status_code == 400 and "link" in read.json()["error"], read.text
    through = await client.put(f"{base}/out/hostname", json={"content": "x"}, headers=ADMIN)
    assert through.status_code == 400 and "link" in through.json()["error"], through.text
    assert (await client.delete(f"{base}/out/hostname", headers=ADMIN)).status_code in (400, 404)
    assert (await cli("exec", container, "cat", "/etc/hostname")).strip() != "x"
    for bad in ("../escape", "/etc/passwd", "a/../../b", ".auth_token", ""):
        refused = await client.put(base, json={"files": {bad: "x"}}, headers=ADMIN)
        assert refused.status_code == 400 and refused.json()["error"], (bad, refused.text)
    token = await client.get(f"{base}/.auth_token", headers=ADMIN)
    assert token.status_code == 400 and "mol_" not in token.text
    big = await client.put(f"{base}/big", json={"content": "x" * (1024 * 1024 + 10)}, headers=ADMIN)
    assert big.status_code == 413
    # another workspace's token is refused; nothing was written by any refusal
    _, _, other = await _online(docker_box, "other")
    other_token = (await cli("exec", other, "cat", "/configs/.auth_token")).strip()
    foreign = await client.get(f"{base}/config.yaml", headers=bearer(other_token))
    assert foreign.status_code == 401, foreign.text
    own_token = (await cli("exec", container, "cat", "/configs/.auth_token")).strip()
    assert (await client.get(f"{base}/config.yaml", headers=bearer(own_token))).status_code == 200
    names = set((await cli("exec", container, "ls", "-A", "/configs")).split())
    assert names == {".auth_token", "config.yaml", "out", "leak"}


async def test_files_are_owned_by_the_agents_user(runner: BoxRunner) -> None:
    """An image that runs as a non-root user gets its seeded and written files owned by that uid:gid (what an
    agent plugin's install relies on)."""
    runtime = "filesuid"
    image = f"{IMAGE_PREFIX}{runtime}:latest"
    dockerfile = f"FROM {IMAGE}\nUSER 4321:4322\nLABEL molecule-box.test=files-uid\n"
    await trio.to_thread.run_sync(lambda: subprocess.run(["docker", "build", "-q", "-t", image, "-"], check=True,
                                                         input=dockerfile.encode(), capture_output=True, timeout=60))
    box = await runner.start(**docker_env(free_port(), ALLOWED_RUNTIMES=f"{RUNTIME},{runtime}"))
    try:
        async with httpx.AsyncClient(base_url=runner.url, timeout=15) as client:
            docker_box = DockerBox(runner, box, client)
            wid = await docker_box.create("uid", runtime=runtime)
            await docker_box.wait_for(wid, "online")
            put = await client.put(f"/workspaces/{wid}/files/plugins/p/manifest.json", json={"content": "{}"},
                                   headers=ADMIN)
            assert put.status_code == 200, put.text
            container = docker_box.container_of(wid)["Id"]
            owners = await cli("exec", container, "stat", "-c", "%n %u:%g", "/configs/config.yaml",
                               "/configs/plugins", "/configs/plugins/p/manifest.json", "/configs/.auth_token")
            assert [line.split()[1] for line in owners.splitlines()] == ["4321:4322"] * 4, owners
    finally:
        await runner.stop()
        await trio.to_thread.run_sync(remove_box, box.box_id)
        await trio.to_thread.run_sync(lambda: docker("rmi", "-f", image, check=False))


async def test_a_plugin_installs_into_configs_owned_by_the_agent_and_restarts(docker_box: DockerBox) -> None:
    """An agent plugin from the registry lands in the workload's /configs/plugins/<name>, owned by the agent's
    user, the workload restarts with it; uninstalling removes it (and again is a no-op)."""
    plugin = docker_box.box.settings.plugins_dir / "hello-plugin"
    (plugin / "rules").mkdir(parents=True)
    (plugin / "plugin.yaml").write_text('name: hello-plugin\nversion: "1.0.0"\n')
    (plugin / "rules" / "r.md").write_text("# a rule\n")
    wid, _, container = await _online(docker_box, "with-plugin")
    uid = (await cli("exec", container, "id", "-u")).strip()
    installed = await docker_box.client.post(f"/workspaces/{wid}/plugins", json={"source": "hello-plugin"},
                                             headers=ADMIN)
    assert installed.status_code == 200, installed.text
    await until(lambda: _restarted(docker_box, wid, container), "the workload to restart with the plugin")
    await docker_box.wait_for(wid, "online")
    fresh = docker_box.container_of(wid)["Id"]
    assert await cli("exec", fresh, "cat", "/configs/plugins/hello-plugin/rules/r.md") == "# a rule\n"
    assert (await cli("exec", fresh, "stat", "-c", "%u", "/configs/plugins/hello-plugin/plugin.yaml")).strip() == uid
    names = [row["name"] for row in (await docker_box.client.get(f"/workspaces/{wid}/plugins",
                                                                 headers=ADMIN)).json()]
    assert names == ["hello-plugin"]
    for _ in range(2):
        gone = await docker_box.client.delete(f"/workspaces/{wid}/plugins/hello-plugin", headers=ADMIN)
        assert gone.status_code == 200, gone.text
    files = {e["path"] for e in (await docker_box.client.get(f"/workspaces/{wid}/files", headers=ADMIN)).json()}
    assert not [path for path in files if path.startswith("plugins/hello-plugin")]


async def _restarted(docker_box: DockerBox, wid: str, before: str) -> bool:
    try:
        return bool(docker_box.container_of(wid)["Id"] != before)
    except (AssertionError, LookupError, RuntimeError):  # between two containers
        return False
