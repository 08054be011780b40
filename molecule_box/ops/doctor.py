"""``molecule-box doctor``: every check an operator would otherwise do by hand, each failure with its fix.

Why one command: a box that will not start (or starts and cannot reach
Docker) fails for one of a handful of reasons, and the error the box itself
prints names only the first. The doctor runs every check, never stops at the
first failure, changes nothing (the exceptions: SQLite's ``-wal``/``-shm``
beside a store it reads, given back to the data dir's owner, and the
short-lived container that tries ``PLATFORM_URL``, removed again), and never
prints a secret value.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import socket
import sqlite3
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import httpx

from ..backends.docker import spec as sp
from ..backends.docker.settings import HOST_NETWORK, DockerSettings
from ..config import Settings, parse_encryption_key, read_env_file, section_title, sections
from ..errors import ConfigError
from ..security.crypto import KEY_FILE, DecryptError, SecretBox, secret_aad
from ..store import migrations, snapshot
from . import ports
from .fsutil import match_owner
from .lock import holder
from .systemd import SERVICE, UNIT_DIR

Status = Literal["ok", "warn", "fail"]


@dataclasses.dataclass
class Finding:
    """One result: which check, how it went, what was found, and (for warn/fail) how to fix it."""

    check: str
    status: Status
    message: str
    fix: str | None = None


@dataclasses.dataclass
class Context:
    settings: Settings
    values: dict[str, str]
    env_file: Path | None

    @property
    def docker(self) -> DockerSettings:
        """The docker backend's settings, as the box would read them (its defaults if it is not installed)."""
        found = self.settings.backends.get("docker")
        return found if isinstance(found, DockerSettings) else DockerSettings()


def load(env_file: Path | None, environ: Mapping[str, str]) -> tuple[Context, list[Finding]]:
    """Settings as the box would read them; every config problem becomes a finding, bad values fall back to defaults."""
    findings: list[Finding] = []
    values = dict(environ)
    where = f"{env_file}" if env_file else "the environment"
    if env_file is not None:
        try:
            file_values = read_env_file(env_file)
        except ConfigError as exc:
            file_values = {}
            for problem in exc.problems:
                findings.append(Finding("config", "fail", problem,
                                        "fix the file's syntax: one KEY=VALUE per line, # for comments"))
        for key, value in file_values.items():
            values.setdefault(key, value)
        if env_file.exists():
            mode = env_file.stat().st_mode & 0o777
            if mode & 0o077 and {"ADMIN_TOKEN", "SECRETS_ENCRYPTION_KEY"} & set(file_values):
                findings.append(Finding("config", "warn", f"{env_file} holds secrets and is readable by others "
                                        f"(mode {mode:o})", f"chmod 600 {env_file}"))
    try:
        settings = Settings.from_mapping(values, environ=environ)
    except ConfigError as exc:
        bad = set()
        for problem in exc.problems:
            name = problem.split(" ", 1)[0]  # "NAME must be ..., not 'value'"
            bad.add(name)
            findings.append(Finding("config", "fail", problem,
                                    f"set {name} to a valid value in {where}, or remove it to use the default "
                                    "(`molecule-box config` explains every setting)"))
        settings = Settings.from_mapping({k: v for k, v in values.items() if k not in bad}, environ=environ)
        findings.append(Finding("config", "warn", "the checks below use the defaults of the invalid settings"))
    else:
        if not any(f.status == "fail" for f in findings):
            findings.append(Finding("config", "ok", f"valid (read from {where})"))
    return Context(settings, values, env_file), findings


def check_data_dir(ctx: Context) -> list[Finding]:
    path = ctx.settings.data_dir
    if not path.exists():
        parent = next((p for p in path.parents if p.exists()), Path("/"))
        if os.access(parent, os.W_OK):
            return [Finding("data dir", "ok", f"{path} does not exist yet; the box creates it (mode 0700) at start")]
        return [Finding("data dir", "fail", f"{path} does not exist and {parent} is not writable",
                        f"mkdir -m 700 {path} && chown <service user> {path} (under systemd, StateDirectory= "
                        "creates /var/lib/molecule-box)")]
    if not path.is_dir():
        return [Finding("data dir", "fail", f"{path} is not a directory", "point MOLECULE_BOX_DATA at a directory")]
    out: list[Finding] = []
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o700 != 0o700:
        out.append(Finding("data dir", "fail", f"{path} has mode {mode:o}: its owner cannot read, write and enter it",
                           f"chmod 700 {path}"))
    elif mode & 0o077:
        out.append(Finding("data dir", "warn", f"{path} has mode {mode:o}: others can look inside (the store and "
                           "the secrets key live here)", f"chmod 700 {path}"))
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        out.append(Finding("data dir", "fail", f"{path} is not writable by this user ({exc.strerror})",
                           f"chown the directory to the user that runs the box, and chmod 700 {path}"))
    if not out:
        out.append(Finding("data dir", "ok", f"{path} (mode {mode:o}, owner uid {st.st_uid})"))
    return out


def check_store(ctx: Context) -> list[Finding]:
    store = ctx.settings.store_path
    running = holder(ctx.settings.data_dir)
    live = f"; a molecule-box (pid {running}) is running on it" if running else ""
    if not store.exists():
        return [Finding("store", "ok", f"no store yet at {store}; created at first start{live}")]
    try:
        found = snapshot.inspect(store)
    except sqlite3.Error as exc:
        return [Finding("store", "fail", f"{store} cannot be read as SQLite ({exc})",
                        "restore the last backup: molecule-box restore --force PATH (docs/operations.md)")]
    finally:
        match_owner(ctx.settings.data_dir, Path(f"{store}-wal"), Path(f"{store}-shm"))
    out: list[Finding] = []
    if found["integrity"] != "ok":
        out.append(Finding("store", "fail", f"{store} fails PRAGMA integrity_check: {found['integrity']}",
                           "stop the box and restore the last backup: molecule-box restore --force PATH"))
    version = found["schema_version"]
    if version > migrations.SCHEMA_VERSION:
        out.append(Finding("store", "fail", f"schema version {version} is newer than this molecule-box understands "
                           f"({migrations.SCHEMA_VERSION})",
                           "upgrade molecule-box, or restore a backup taken by this version"))
    if not out:
        note = (f"; migrated to {migrations.SCHEMA_VERSION} at next start (take a backup first)"
                if version < migrations.SCHEMA_VERSION else "")
        out.append(Finding("store", "ok", f"{store}: integrity ok, schema version {version}{note}, "
                           f"{found['workspaces']} workspaces{live}"))
    return out


def check_secrets_key(ctx: Context) -> list[Finding]:
    settings = ctx.settings
    path = settings.data_dir / KEY_FILE
    # A plaintext (version 0) row needs no key (the box encrypts it at start): the key is tried on another.
    stored = snapshot.encrypted_secret(settings.store_path)
    match_owner(settings.data_dir, Path(f"{settings.store_path}-wal"), Path(f"{settings.store_path}-shm"))
    if settings.secrets_encryption_key is not None:
        key, origin = settings.secrets_encryption_key, "SECRETS_ENCRYPTION_KEY"
    elif not path.exists():
        if stored:
            return [Finding("secrets key", "fail", f"{stored['count']} secrets are stored but {path} is missing: "
                            "the box would generate a new key and none of them would decrypt",
                            f"restore secrets.key from the backup taken with this store into {path} (mode 0600)")]
        return [Finding("secrets key", "ok", f"{path} does not exist yet; generated (mode 0600) at first start")]
    else:
        origin = str(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            return [Finding("secrets key", "fail", f"{path} has mode {mode:o}: readable by others, so the box "
                            "refuses to start", f"chmod 600 {path}")]
        try:
            key = parse_encryption_key(path.read_text())
        except (OSError, ValueError) as exc:
            return [Finding("secrets key", "fail", f"{path}: {exc}",
                            "restore the key file from backup (it must hold base64 of 32 bytes)")]
        if path.stat().st_uid != settings.data_dir.stat().st_uid:
            return [Finding("secrets key", "warn", f"{path} is not owned by the data dir's owner",
                            f"chown --reference={settings.data_dir} {path}")]
    if stored:
        scope = stored["workspace_id"] or None
        try:
            SecretBox(key).decrypt(stored["value"], stored["encryption_version"], secret_aad(scope, stored["key"]))
        except DecryptError:
            return [Finding("secrets key", "fail", f"the key from {origin} does not decrypt the stored secrets",
                            "use the key the secrets were written with (the secrets.key of the same backup)")]
        return [Finding("secrets key", "ok", f"{origin} decrypts the stored secrets ({stored['count']} stored)")]
    return [Finding("secrets key", "ok", f"{origin} (no secrets stored yet)")]


def check_port(ctx: Context) -> list[Finding]:
    settings = ctx.settings
    addr, port = settings.bind_addr, settings.port
    if port == 0:
        return [Finding("port", "ok", "PORT=0: a free port is picked at start")]
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    where = ports.where(addr, port)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn binds
            sock.bind((addr, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            box = _box_health(addr, port)
            if box is not None:
                return [Finding("port", "ok", f"{where} is served by a running molecule-box "
                                f"(version {box.get('version')}, box {box.get('box_id')})")]
        return [Finding("port", "fail", *ports.bind_problem(addr, port, exc))]
    if port < 1024:
        unit = (UNIT_DIR / f"{SERVICE}.service").is_file()
        return [Finding("port", "fail" if unit else "warn",
                        f"{where} is free, but the service unit drops every capability and cannot bind a port "
                        "below 1024", "use a PORT of 1024 or above and front the box with a TLS proxy")]
    return [Finding("port", "ok", f"{where} is free")]


def _box_health(addr: str, port: int) -> dict[str, Any] | None:
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(addr, addr)
    url = f"http://[{host}]:{port}/health" if ":" in host else f"http://{host}:{port}/health"
    try:
        body = httpx.get(url, timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) and "box_id" in body and "schema_version" in body else None


def _engine(ctx: Context) -> tuple[str, httpx.Client | None]:
    """``DOCKER_HOST`` (or the local socket) and a client for its API; None for a scheme doctor does not speak."""
    host = ctx.values.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith(("unix://", "/")):
        transport = httpx.HTTPTransport(uds=host.removeprefix("unix://"))
        return host, httpx.Client(base_url="http://docker", transport=transport, timeout=3)
    if host.startswith("tcp://"):
        return host, httpx.Client(base_url="http://" + host.removeprefix("tcp://"), timeout=3)
    return host, None


def _connect(host: str) -> None:
    """Connect to a socket engine once by hand (OSError if it is not there): clearer errors, and httpcore leaks a
    failed uds socket."""
    if host.startswith(("unix://", "/")):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(3)
            probe.connect(host.removeprefix("unix://"))


def check_docker(ctx: Context) -> list[Finding]:
    needed = ctx.settings.default_backend == "docker"
    bad: Status = "fail" if needed else "warn"
    why = ("CONTAINER_BACKEND=docker: container workspaces cannot start" if needed
           else f"only needed for CONTAINER_BACKEND=docker (now {ctx.settings.default_backend})")
    host, client = _engine(ctx)
    if client is None:
        return [Finding("docker", "warn", f"DOCKER_HOST={host}: this scheme is not checked by doctor")]
    try:
        with client:
            _connect(host)
            ping = client.get("/_ping")
            ping.raise_for_status()
            version = client.get("/version").json()
    except (OSError, httpx.HTTPError, ValueError) as exc:
        cause = exc.__cause__ or exc.__context__ or exc
        fix: str | None
        if isinstance(exc, PermissionError) or isinstance(cause, PermissionError):
            fix = "add the service user to group docker (the unit sets SupplementaryGroups=docker)"
        else:
            fix = ("start Docker (systemctl start docker), set DOCKER_HOST, or choose another CONTAINER_BACKEND"
                   if needed else None)
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        return [Finding("docker", bad, f"no Docker engine at {host} ({detail}); {why}", fix)]
    return [Finding("docker", "ok", f"Docker {version.get('Version', '?')} (API {version.get('ApiVersion', '?')}) "
                    f"at {host}")]


#: What the probe container runs: fetch ``$PLATFORM_URL/health`` as an agent's first request would, with the
#: image's python3, else curl or wget; print the answer (or the error) for doctor to read.
_FETCH = (
    'import os,sys,urllib.request as r\n'
    'try:\n'
    '    print(r.urlopen(os.environ["PLATFORM_URL"]+"/health",timeout=5).read(4000).decode(errors="replace"))\n'
    'except Exception as e:\n'
    '    print("error: %s" % e)\n'
    '    sys.exit(1)\n'
)
PROBE_SHELL = (
    f"if command -v python3 >/dev/null 2>&1; then exec python3 -c '{_FETCH}'; "
    'elif command -v curl >/dev/null 2>&1; then exec curl -fsS --max-time 5 "$PLATFORM_URL/health"; '
    'elif command -v wget >/dev/null 2>&1; then exec wget -qO- -T 5 "$PLATFORM_URL/health"; '
    'else echo "error: the image has none of python3, curl and wget"; exit 3; fi'
)
#: Longest the probe container may take, from create to exit.
PROBE_TIMEOUT = 60.0
REACH_FIX = ("set PLATFORM_URL to an address of this host that containers on WORKSPACE_NETWORK reach and the box "
             "listens on (BIND_ADDR), or unset it for the default; with WORKSPACE_NETWORK=host the default "
             "(http://127.0.0.1:<PORT>) needs no change (docs/docker.md)")


class _NotChecked(Exception):
    """The probe could not run (no engine, no image, no network yet): a warning with its fix, not a failure."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.fix = fix


def check_platform_url(ctx: Context) -> list[Finding]:
    """Fetch ``PLATFORM_URL``/health from a short-lived container of the workspace image on ``WORKSPACE_NETWORK``:
    the request every workspace's agent makes first, over the same network path. When it fails, workspaces stay
    ``provisioning`` until their deadline, and nothing else tells why."""
    settings = ctx.settings
    if settings.default_backend != "docker":
        return []
    docker = ctx.docker
    url, network = settings.platform_url, docker.workspace_network
    problem = sp.reach_problem(docker, settings.platform_url, settings.bind_addr)
    if problem is not None:
        return [Finding("platform url", "fail", problem, "docs/docker.md (Networks) compares the choices")]
    runtime = next((name for name in docker.allowed_runtimes.split(",") if name != "external"), None)
    if runtime is None:
        return []
    image = sp.image_ref(docker, runtime)
    host, client = _engine(ctx)
    try:
        if client is None:
            raise _NotChecked(f"DOCKER_HOST={host}: this scheme is not checked by doctor")
        with client, _stand_in(settings) as stand_in:
            code, output = _probe(client, host, image, settings.platform_url, docker)
    except _NotChecked as exc:
        return [Finding("platform url", "warn", f"not checked from a container: {exc}", exc.fix)]
    where = f"a container of {image} on WORKSPACE_NETWORK={network}"
    try:
        answer = json.loads(output)
    except ValueError:
        answer = None
    if code == 0 and isinstance(answer, dict) and "box_id" in answer:
        note = (f" (doctor answered for the box on BIND_ADDR={settings.bind_addr}, PORT={settings.port}: it is not "
                "running)" if stand_in else "")
        return [Finding("platform url", "ok", f"{where} reached PLATFORM_URL={url}{note}")]
    said = (output.strip().splitlines() or [f"exit code {code}"])[-1][:300]
    if code == 0:
        said = f"it answered, but not as a molecule-box: {said}"
    return [Finding("platform url", "fail", f"{where} cannot reach PLATFORM_URL={url} ({said}): workspaces would "
                    "stay provisioning until their deadline", REACH_FIX)]


def _probe(client: httpx.Client, host: str, image: str, platform_url: str, docker: DockerSettings) -> tuple[int, str]:
    """Run the probe container to its end and remove it; (exit code, output)."""
    try:
        _connect(host)
        client.get("/_ping").raise_for_status()
    except (OSError, httpx.HTTPError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise _NotChecked(f"no Docker engine at {host} ({detail})") from None
    if client.get(f"/images/{image}/json").status_code == 404:
        raise _NotChecked(f"the image {image} is not on the engine (the box pulls it at the first workspace start)",
                          f"docker pull {image}, then run doctor again")
    host_network = docker.workspace_network == HOST_NETWORK
    if not host_network and client.get(f"/networks/{docker.workspace_network}").status_code == 404:
        raise _NotChecked(f"the network {docker.workspace_network} does not exist yet (the box creates it at the "
                          "first workspace start)", "start one docker workspace, then run doctor again")
    body: dict[str, Any] = {
        "Image": image, "Entrypoint": ["/bin/sh", "-c"], "Cmd": [PROBE_SHELL], "Tty": True,
        "Env": [f"PLATFORM_URL={platform_url}"], "Labels": {"molecule-box.doctor": "true"},
        "HostConfig": {"NetworkMode": docker.workspace_network,
                       **({} if host_network else {"ExtraHosts": list(sp.EXTRA_HOSTS)})},
    }
    created = client.post("/containers/create", json=body, timeout=PROBE_TIMEOUT)
    if created.status_code >= 400:
        raise _NotChecked(f"the engine refused the probe container ({_engine_message(created)})")
    container = created.json()["Id"]
    try:
        started = client.post(f"/containers/{container}/start", timeout=PROBE_TIMEOUT)
        if started.status_code >= 400:
            raise _NotChecked(f"the engine could not start the probe container ({_engine_message(started)})")
        code = int(client.post(f"/containers/{container}/wait", timeout=PROBE_TIMEOUT).json()["StatusCode"])
        output = client.get(f"/containers/{container}/logs", params={"stdout": 1, "stderr": 1}).text
    except httpx.TimeoutException:
        raise _NotChecked(f"the probe container did not finish within {PROBE_TIMEOUT:g}s") from None
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise _NotChecked(f"the engine stopped answering as expected ({type(exc).__name__}: {exc})") from None
    finally:
        try:
            client.delete(f"/containers/{container}", params={"force": "true"}, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            pass  # labelled molecule-box.doctor=true: `docker rm` it by hand
    return code, output


def _engine_message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.status_code)
    except ValueError:
        return str(response.status_code)


class _StandInHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path.split("?")[0] == "/health"
        body = json.dumps({"status": "ok", "box_id": "doctor"} if found else {"error": "not found"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _stand_in(settings: Settings) -> Iterator[bool]:
    """Answer ``/health`` on BIND_ADDR:PORT while the box is not running there, so the probe tells before the
    first start whether containers will reach the box (True while it answers). A port that is taken is left to
    whoever holds it (``check_port`` says who)."""
    if settings.port == 0:
        yield False
        return
    server_class = type("StandIn", (ThreadingHTTPServer,), {
        "address_family": socket.AF_INET6 if ":" in settings.bind_addr else socket.AF_INET})
    try:
        server = server_class((settings.bind_addr, settings.port), _StandInHandler)
    except OSError:
        yield False
        return
    thread = threading.Thread(target=server.serve_forever, name="doctor-stand-in", daemon=True)
    thread.start()
    try:
        yield True
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def check_backends(ctx: Context) -> list[Finding]:
    from ..backends.base import CONTRACT_VERSION
    from ..backends.loader import describe

    out: list[Finding] = []
    rows = describe()
    names = {row["name"] for row in rows}
    default = ctx.settings.default_backend
    for row in rows:
        if "error" in row:
            out.append(Finding("backends", "fail", f"backend {row['name']} ({row['module']}) does not load: "
                               f"{row['error']}", f"reinstall or uninstall the plugin that provides {row['module']}"))
    listing = ", ".join(f"{r['name']} {r.get('version', '?')}" for r in rows if "error" not in r) or "none"
    out.append(Finding("backends", "ok", f"installed: {listing}"))
    for row in rows:
        if "error" not in row:
            out.append(_plugin_finding(ctx, row, default=row["name"] == default, contract=CONTRACT_VERSION))
    for backend, settings in sections():
        if backend is not None:
            out.append(Finding("backends", "ok", f"{section_title(backend)} reads "
                               f"{', '.join(s.env for s in settings)} (`molecule-box config` explains each)"))
    if default not in names:
        fix = ctx.settings.not_installed_fix(default) or (
            f"install the {default} backend plugin, or set CONTAINER_BACKEND to one of: {', '.join(sorted(names))}")
        out.append(Finding("backends", "warn", f"the default backend {default!r} is not installed: only external "
                           "workspaces can be created", fix))
    return out


def _plugin_finding(ctx: Context, row: dict[str, Any], *, default: bool, contract: int) -> Finding:
    """One installed backend: its distribution and version, the contract version it implements, and whether
    its settings are complete (missing ones fail only for the default backend: the others are needed only
    when a workspace asks for them)."""
    name = row["name"]
    found = (f"{name}: distribution {row.get('distribution', '?')} {row.get('distribution_version', '?')}, "
             f"backend version {row.get('version', '?')}, contract version {row.get('contract_version')}")
    if row.get("contract_version") != contract:
        return Finding("backends", "fail", f"{found}: this box speaks contract version {contract}",
                       f"install a release of {row.get('distribution', 'the plugin')} built for contract version "
                       f"{contract}, or uninstall it")
    settings = ctx.settings.backends.get(name)
    missing = settings.missing() if settings is not None else []
    if not missing:
        return Finding("backends", "ok", f"{found}; settings ok")
    unset = f"{found}; settings incomplete: {', '.join(missing)} unset"
    fix = f"set {', '.join(missing)} (`molecule-box config` explains each)"
    if default:
        return Finding("backends", "fail", f"{unset}, and {name} is the default backend", fix)
    return Finding("backends", "ok", f"{unset} (needed before a {name} workspace can be created)")


def check_unit(ctx: Context) -> list[Finding]:
    unit = UNIT_DIR / f"{SERVICE}.service"
    if not unit.is_file():
        return []
    fields: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            fields[key.strip()] = value.strip()
    out: list[Finding] = []
    exec_start = fields.get("ExecStart", "").split()
    if exec_start and not os.access(exec_start[0], os.X_OK):
        out.append(Finding("systemd unit", "fail", f"{unit}: ExecStart={exec_start[0]} is not executable",
                           "rerun `molecule-box systemd install` with the molecule-box you installed"))
    stop = fields.get("TimeoutStopSec", "").removesuffix("s")
    if stop.isdigit() and int(stop) <= ctx.settings.shutdown_grace_seconds:
        out.append(Finding("systemd unit", "warn", f"TimeoutStopSec={stop}s is not above MOLECULE_BOX_SHUTDOWN_GRACE="
                           f"{ctx.settings.shutdown_grace_seconds:g}: systemd kills the box mid-drain",
                           "raise TimeoutStopSec in a drop-in (systemctl edit molecule-box)"))
    if not out:
        out.append(Finding("systemd unit", "ok", f"{unit}"))
    return out


CHECKS: tuple[Callable[[Context], list[Finding]], ...] = (
    check_data_dir, check_store, check_secrets_key, check_port, check_docker, check_platform_url, check_backends,
    check_unit,
)


def diagnose(env_file: Path | None = None, environ: Mapping[str, str] | None = None) -> list[Finding]:
    """Run every check; a check that crashes is itself reported as a failure, and the others still run."""
    ctx, findings = load(env_file, dict(os.environ if environ is None else environ))
    for check in CHECKS:
        name = check.__name__.removeprefix("check_").replace("_", " ")
        try:
            findings.extend(check(ctx))
        except Exception as exc:  # one broken check must not hide the others' results
            findings.append(Finding(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}"))
    return findings


def render(findings: list[Finding]) -> str:
    """Human-readable report: one line per finding, its fix below it, a summary last."""
    label = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}
    width = max(len(f.check) for f in findings)
    lines = []
    for f in findings:
        lines.append(f"{label[f.status]}  {f.check:<{width}}  {f.message}")
        if f.fix:
            lines.append(f"      {'':<{width}}  fix: {f.fix}")
    failures = sum(f.status == "fail" for f in findings)
    warnings = sum(f.status == "warn" for f in findings)
    lines.append("")
    lines.append(f"{failures} problem(s), {warnings} warning(s)" if failures or warnings else "all checks passed")
    return "\n".join(lines)
