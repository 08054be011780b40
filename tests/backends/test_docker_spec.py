"""The docker backend's pure parts, without an engine: container spec per tier, the privileged opt-in, labels,
health check, token archive, host-port allocation, event parsing, inspect → status."""

from __future__ import annotations

import io
import subprocess
import tarfile
from typing import Any

import pytest

from molecule_box.backends.base import WorkloadSpec, WorkloadState
from molecule_box.backends.docker import engine_events as ev
from molecule_box.backends.docker import spec as sp
from molecule_box.backends.docker.backend import status_of
from molecule_box.backends.docker.settings import DockerSettings
from molecule_box.config import Settings

WID = "0123456789ab-cdef-0123-4567-89abcdef0123"
MIB = 1024 * 1024


def box_settings(**env: str) -> Settings:
    return Settings.from_mapping(env, environ={})


def settings(**env: str) -> DockerSettings:
    """The docker backend's own settings, read with the box's as at start."""
    own = box_settings(**env).backends["docker"]
    assert isinstance(own, DockerSettings)
    return own


def make(tier: int = 2, **overrides: Any) -> WorkloadSpec:
    fields: dict[str, Any] = {"workspace_id": WID, "name": "w", "runtime": "langgraph", "tier": tier,
                              "env": {"WORKSPACE_ID": WID, "SECRET": "v"}, "platform_url": "http://127.0.0.1:9",
                              "auth_token": "tok"}
    fields.update(overrides)
    return WorkloadSpec(**fields)


def config(tier: int = 2, *, port: int | None = None, host_cpus: int | None = 8, own: bool = False,
           **env: str) -> dict[str, Any]:
    return sp.container_config(make(tier), settings(**env), box_id="box1", image="img:1", port=port,
                               host_cpus=host_cpus, own_healthcheck=own)


def test_image_names() -> None:
    assert sp.image_ref(settings(), "langgraph") == "ghcr.io/molecule-ai/workspace-template-langgraph:latest"
    tagged = settings(WORKSPACE_IMAGE_PREFIX="reg:5000/t-", WORKSPACE_IMAGE_TAG="v2")
    assert sp.image_ref(tagged, "x") == "reg:5000/t-x:v2"
    assert sp.split_image("reg:5000/t-x:v2") == ("reg:5000/t-x", "v2")
    assert sp.split_image("reg:5000/t-x") == ("reg:5000/t-x", "latest")
    assert sp.container_name(WID) == "ws-0123456789ab"
    assert sp.volume_names(WID) == ("ws-0123456789ab-configs", "ws-0123456789ab-workspace")


@pytest.mark.parametrize(("tier", "memory", "cpus"),
                         [(1, 512, 1), (2, 512, 1), (3, 2048, 2), (4, 4096, 4), (7, 512, 1)])
def test_every_tier_has_memory_cpu_and_pid_limits(tier: int, memory: int, cpus: int) -> None:
    host = config(tier)["HostConfig"]
    assert host["Memory"] == host["MemorySwap"] == memory * MIB
    assert host["NanoCpus"] == cpus * 1_000_000_000
    assert host["PidsLimit"] == 1024
    assert host["RestartPolicy"] == {"Name": "no"}
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert "Privileged" not in host and "PidMode" not in host
    assert all(m["Type"] == "volume" for m in host["Mounts"])


def test_tier_one_is_sandboxed() -> None:
    host = config(1)["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=64m"}
    assert [m["Target"] for m in host["Mounts"]] == ["/configs"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert "ReadonlyRootfs" not in config(2)["HostConfig"]


def test_overrides_and_the_host_cpu_clamp() -> None:
    host = config(3, TIER3_MEMORY_MB="1000", TIER3_CPUS="1.5")["HostConfig"]
    assert host["Memory"] == 1000 * MIB and host["NanoCpus"] == 1_500_000_000
    assert config(4, host_cpus=2)["HostConfig"]["NanoCpus"] == 2_000_000_000  # the engine refuses more


def test_privileged_only_with_the_operators_opt_in() -> None:
    for tier in (1, 2, 3, 4):
        host = config(tier)["HostConfig"]
        assert "Privileged" not in host and "/var/run/docker.sock" not in str(host)
    opted = {tier: config(tier, DOCKER_ALLOW_PRIVILEGED="true")["HostConfig"] for tier in (1, 2, 3, 4)}
    assert "Privileged" not in opted[1] and "Privileged" not in opted[2]
    assert opted[3]["Privileged"] is True and opted[3]["PidMode"] == "host"
    assert "/var/run/docker.sock" not in str(opted[3])
    assert opted[4]["Privileged"] is True
    assert {"Type": "bind", "Source": "/var/run/docker.sock", "Target": "/var/run/docker.sock"} in opted[4]["Mounts"]


def test_labels_env_and_networks() -> None:
    bridge = config(2)
    assert bridge["Labels"] == {"molecule-box.managed": "true", "molecule-box.box": "box1",
                                "molecule-box.workspace": WID}
    env = dict(item.split("=", 1) for item in bridge["Env"])
    assert env == {"WORKSPACE_ID": WID, "SECRET": "v", "PORT": "8000"}  # the token is never in env
    host = bridge["HostConfig"]
    assert host["NetworkMode"] == "molecule-box"
    assert host["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}]}
    assert host["ExtraHosts"] == ["host.docker.internal:host-gateway"]
    assert bridge["NetworkingConfig"]["EndpointsConfig"]["molecule-box"]["Aliases"] == ["ws-0123456789ab"]
    on_host = config(2, port=30007, WORKSPACE_NETWORK="host")
    assert on_host["HostConfig"]["NetworkMode"] == "host" and "PortBindings" not in on_host["HostConfig"]
    assert "PORT=30007" in on_host["Env"] and on_host["Labels"]["molecule-box.port"] == "30007"
    assert "Hostname" not in on_host and "NetworkingConfig" not in on_host


@pytest.mark.parametrize(("env", "named"), [
    ({}, "BIND_ADDR=127.0.0.1"),  # the defaults: a bridge network and a loopback-only box
    ({"PLATFORM_URL": "http://127.0.0.1:8080", "BIND_ADDR": "0.0.0.0"}, "own loopback"),
    ({"WORKSPACE_NETWORK": "host", "PLATFORM_URL": "http://host.docker.internal:8080"}, "does not resolve"),
    ({"WORKSPACE_NETWORK": "host", "BIND_ADDR": "10.0.0.5", "PLATFORM_URL": "http://localhost:8080"}, "BIND_ADDR"),
    ({"WORKSPACE_NETWORK": "host"}, None),
    ({"BIND_ADDR": "0.0.0.0"}, None),
    ({"BIND_ADDR": "10.0.0.5"}, None),
    ({"PLATFORM_URL": "https://box.example.com"}, None),
])
def test_reach_problem_names_the_settings(env: dict[str, str], named: str | None) -> None:
    box = box_settings(**env)
    problem = sp.reach_problem(settings(**env), box.platform_url, box.bind_addr)
    if named is None:
        assert problem is None
    else:
        assert problem is not None and named in problem and "PLATFORM_URL=" in problem and "\n" not in problem


def test_health_check_unless_the_image_has_its_own() -> None:
    check = config(2, WORKSPACE_HEALTHCHECK_INTERVAL="2")["Healthcheck"]
    assert check["Test"][0] == "CMD-SHELL" and check["Interval"] == 2_000_000_000 and check["Retries"] == 3
    assert "Healthcheck" not in config(2, own=True)
    assert sp.has_own_healthcheck({"Healthcheck": {"Test": ["CMD", "true"]}})
    assert not sp.has_own_healthcheck({"Healthcheck": {"Test": ["NONE"]}}) and not sp.has_own_healthcheck(None)
    assert subprocess.run(["sh", "-n", "-c", sp.HEALTHCHECK_SHELL], check=False).returncode == 0  # valid shell


def test_health_probe_tries_both_card_paths(tmp_path: Any) -> None:
    """The probe's python, run for real against a server that serves only the old card path."""
    import http.server
    import os
    import sys
    import threading

    class Old(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/.well-known/agent.json" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Old)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = dict(os.environ, PORT=str(server.server_address[1]))
        ok = subprocess.run([sys.executable, "-c", sp._PROBE], env=env, timeout=30, check=False)
        assert ok.returncode == 0
        env["PORT"] = "9"  # nothing listens: unhealthy
        assert subprocess.run([sys.executable, "-c", sp._PROBE], env=env, timeout=30, check=False).returncode == 1
    finally:
        server.shutdown()
        server.server_close()


def test_token_archive_is_a_private_file() -> None:
    data = sp.token_archive("the-token", uid=1000, gid=1000)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = tar.getmembers()
        assert member.name == ".auth_token" and member.mode == 0o600 and (member.uid, member.gid) == (1000, 1000)
        assert tar.extractfile(member).read() == b"the-token"  # type: ignore[union-attr]
    assert sp.image_user({"User": "1000:1001"}) == (1000, 1001)
    assert sp.image_user({"User": "agent"}) == (0, 0) and sp.image_user(None) == (0, 0)


def test_port_allocator_keeps_a_workspace_on_its_port() -> None:
    busy = {30001}
    ports = sp.PortAllocator(30000, 30003, is_free=lambda p: p not in busy)
    assert ports.allocate("a") == 30000
    assert ports.allocate("b") == 30002  # 30001 is used by something else on the host
    assert ports.allocate("a") == 30000  # a restart keeps its port
    ports.release("a")
    assert ports.allocate("c", preferred=30000) == 30000  # a previous port is reused when free
    ports.reserve(30003, "d")  # learned from a running container's label
    with pytest.raises(LookupError):
        ports.allocate("e")
    assert ports.owned_by("d") == 30003


def test_ownership_is_by_this_boxs_label() -> None:
    assert sp.is_owned(sp.labels("box1", WID), "box1")
    assert not sp.is_owned(sp.labels("box2", WID), "box1") and not sp.is_owned(None, "box1")
    assert sp.owned_filters("box1", WID) == {"label": ["molecule-box.managed=true", "molecule-box.box=box1",
                                                        f"molecule-box.workspace={WID}"]}


def raw(action: str, **attributes: str) -> dict[str, Any]:
    labels = {"molecule-box.managed": "true", "molecule-box.box": "box1", "molecule-box.workspace": WID}
    return {"Type": "container", "Action": action, "Actor": {"ID": "c" * 64, "Attributes": {**labels, **attributes}}}


def test_events_become_backend_events() -> None:
    die = ev.parse(raw("die", exitCode="137"), "box1")
    assert die is not None and die.backend_event() is not None
    assert (die.backend_event().kind, die.backend_event().exit_code) == ("exited", 137)  # type: ignore[union-attr]
    health = ev.parse(raw("health_status: unhealthy"), "box1")
    assert health is not None and health.backend_event().health == "unhealthy"  # type: ignore[union-attr]
    assert ev.parse(raw("oom"), "box1").backend_event().kind == "oom"  # type: ignore[union-attr]
    assert ev.parse(raw("destroy"), "box1").backend_event().kind == "removed"  # type: ignore[union-attr]
    assert ev.parse(raw("start"), "box1").backend_event() is None  # type: ignore[union-attr]
    assert ev.parse(raw("die"), "box2") is None  # another box's container
    assert ev.parse({"Type": "network", "Action": "connect"}, "box1") is None
    assert ev.parse(None, "box1") is None
    assert ev.health_from_status("Up 3 minutes (unhealthy)") == "unhealthy"
    assert ev.health_from_status("Up 3 minutes (healthy)") == "healthy"
    assert ev.health_from_status("Up 2 seconds (health: starting)") is None
    filters = ev.event_filters("box1")
    assert filters["label"] == ["molecule-box.managed=true", "molecule-box.box=box1"]
    assert set(filters["event"]) == {"start", "die", "oom", "health_status", "destroy"}


def test_inspect_becomes_a_status() -> None:
    running = status_of({"State": {"Status": "running", "StartedAt": "2026-01-02T03:04:05.123456789Z",
                                   "Health": {"Status": "healthy"}}})
    assert running.state is WorkloadState.RUNNING and running.health == "healthy"
    assert running.started_at == pytest.approx(1767323045.123456)
    dead = status_of({"State": {"Status": "exited", "ExitCode": 137, "OOMKilled": True,
                                "StartedAt": "0001-01-01T00:00:00Z"}})
    assert dead.state is WorkloadState.STOPPED and dead.exit_code == 137 and dead.oom_killed
    assert dead.started_at is None
    assert status_of({"State": {"Status": "created"}}).state is WorkloadState.STARTING
