"""Settings: one typed object, read from the environment (and an optional env file) at start.

Every setting is declared once in :data:`SETTINGS` with its variable name,
default, parser and help text. The same table validates the environment,
documents it (``docs/configuration.md`` and ``systemd/molecule-box.env.example``
are checked against it by a test) and reports *every* bad value at once, so an
operator fixes a broken env file in one pass instead of one restart per typo.
Names follow the platform's where it has the setting, so an env file written for the platform keeps its meaning
here.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
T = TypeVar("T")


def _number(kind: Callable[[str], T], raw: str, wanted: str) -> T:
    """``kind(raw)``, failing with ``wanted`` rather than Python's message ("invalid literal for int() ...")."""
    try:
        return kind(raw.strip())
    except ValueError:
        raise ValueError(wanted) from None


def _port(raw: str) -> int:
    wanted = "must be an integer between 1 and 65535 (or 0 for a free port)"
    value = _number(int, raw, wanted)
    if not 0 <= value <= 65535:
        raise ValueError(wanted)
    return value


def _positive_float(raw: str) -> float:
    wanted = "must be a positive number of seconds (fractions allowed)"
    value = _number(float, raw, wanted)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(wanted)
    return value


def _positive_int(raw: str) -> int:
    value = _number(int, raw, "must be a positive whole number")
    if value <= 0:
        raise ValueError("must be a positive whole number")
    return value


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    nets = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not a CIDR network such as 127.0.0.0/8") from None
    return tuple(nets)


def _admin_token(raw: str) -> str:
    raw = raw.strip()
    if len(raw) < 16:
        raise ValueError("must be at least 16 characters (generate one with: openssl rand -base64 32)")
    return raw


def parse_encryption_key(raw: str) -> bytes:
    """The platform's key format: standard base64 of 32 bytes, or a raw 32-byte string."""
    raw = raw.strip()
    try:
        decoded = base64.b64decode(raw, validate=True)
        if len(decoded) == 32:
            return decoded
    except ValueError:
        pass
    if len(raw.encode()) == 32:
        return raw.encode()
    raise ValueError("must be 32 bytes, given as standard base64 (openssl rand -base64 32) or as 32 raw characters")


def _url(raw: str) -> str:
    raw = raw.strip().rstrip("/")
    if not (raw.startswith("http://") or raw.startswith("https://")) or len(raw) < 10:
        raise ValueError("must be an http:// or https:// URL")
    return raw


def _backend_name(raw: str) -> str:
    raw = raw.strip()
    if not raw or not all(c.isalnum() or c in "-_." for c in raw):
        raise ValueError("must be a backend name such as docker, external or flyio")
    return raw


def _log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"debug", "info", "warning", "error"}:
        raise ValueError("must be one of debug, info, warning, error")
    return value


def _str(raw: str) -> str:
    return raw.strip()


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _non_negative_float(raw: str) -> float:
    value = _number(float, raw, "must be zero or a positive number of seconds")
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be zero or a positive number of seconds")
    return value


def _name_list(raw: str) -> str:
    """Normalised to ``a,b,c`` (kept as text so every default prints as a valid env value)."""
    names = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    if not names or not all(c.isalnum() or c in "-_." for name in names for c in name):
        raise ValueError("must be a comma-separated list of names such as langgraph,claude-code")
    return ",".join(names)


def parse_port_range(raw: str) -> tuple[int, int]:
    low, sep, high = raw.strip().partition("-")
    try:
        first, last = int(low), int(high if sep else low)
    except ValueError:
        raise ValueError("must be a port range such as 30000-30999") from None
    if not 1024 <= first <= last <= 65535:
        raise ValueError("must be a port range within 1024-65535, low-high")
    return first, last


def _port_range(raw: str) -> str:
    first, last = parse_port_range(raw)
    return f"{first}-{last}"


def _network_name(raw: str) -> str:
    raw = raw.strip()
    if not raw or not all(c.isalnum() or c in "-_." for c in raw):
        raise ValueError("must be a Docker network name, or host")
    return raw


#: Runtimes that have a workspace-template image (reference §2.4's fallback list), plus ``external``.
DEFAULT_RUNTIMES = "langgraph,claude-code,openclaw,crewai,autogen,deepagents,hermes,codex,gemini-cli,external"


@dataclasses.dataclass(frozen=True)
class Setting:
    """One environment variable: what it is called, how it parses, what it means."""

    field: str
    env: str
    parse: Callable[[str], Any]
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("port", "PORT", _port, 8080, "TCP port of the HTTP API (0 picks a free port)."),
    Setting("bind_addr", "BIND_ADDR", _str, "127.0.0.1", "Address the HTTP API listens on. Keep 127.0.0.1 unless a TLS proxy fronts the box."),
    Setting("data_dir", "MOLECULE_BOX_DATA", lambda raw: Path(raw).expanduser(), None,
            "Data directory (SQLite store, secrets key). Default: $STATE_DIRECTORY under systemd, else $XDG_DATA_HOME/molecule-box."),
    Setting("admin_token", "ADMIN_TOKEN", _admin_token, None,
            "Admin bearer token; it replaces the stored one, which is how a lost token is recovered. Unset: one is "
            "generated on first start, shown once, and stored only as a hash."),
    Setting("secrets_encryption_key", "SECRETS_ENCRYPTION_KEY", parse_encryption_key, None,
            "32-byte AES-256-GCM key for secrets at rest (base64 or raw). Unset: a key file is generated in the data dir (mode 0600)."),
    Setting("container_backend", "CONTAINER_BACKEND", _backend_name, "docker",
            "Backend for non-external workspaces (an installed molecule_box.backends entry point)."),
    Setting("org_id", "MOLECULE_ORG_ID", _str, None, "When set, non-external workspaces default to the controlplane backend, as on the platform."),
    Setting("platform_url", "PLATFORM_URL", _url, None,
            "URL of this box as workloads reach it. Default: http://<BIND_ADDR>:<PORT> (127.0.0.1 for 0.0.0.0); "
            "on a bridge network with BIND_ADDR 0.0.0.0, http://host.docker.internal:<PORT>. A loopback BIND_ADDR "
            "cannot be reached from a bridge network: the docker backend then refuses docker workspaces, saying what to "
            "change (docs/docker.md)."),
    Setting("external_platform_url", "EXTERNAL_PLATFORM_URL", _url, None,
            "URL of this box shown to remote agents in connection snippets. Default: the request's own scheme and host."),
    Setting("remote_liveness_stale_after", "REMOTE_LIVENESS_STALE_AFTER", _positive_float, 90.0,
            "Heartbeat deadline of external workspaces, in seconds (fractions allowed)."),
    Setting("liveness_ttl_seconds", "LIVENESS_TTL_SECONDS", _positive_float, 180.0,
            "Heartbeat deadline of container workspaces, in seconds."),
    Setting("provision_timeout_seconds", "PROVISION_TIMEOUT_SECONDS", _positive_float, 600.0,
            "A workspace still provisioning after this many seconds becomes failed."),
    Setting("allow_agent_networks", "MOLECULE_BOX_ALLOW_AGENT_NETWORKS", _networks, (),
            "Comma-separated CIDRs agent URLs may use besides public addresses, e.g. 127.0.0.0/8,10.0.0.0/8."),
    Setting("a2a_idle_timeout_seconds", "A2A_IDLE_TIMEOUT_SECONDS", _positive_float, 300.0,
            "An A2A call is cancelled when the target shows no sign of life (events, heartbeats, bytes) this long."),
    Setting("a2a_active_limit", "A2A_ACTIVE_LIMIT", _positive_int, 4,
            "Proxied A2A calls worked on at once (waiting for an agent does not count): keeps heartbeats and the API "
            "responsive while the proxy is saturated."),
    Setting("connection_intake", "MOLECULE_BOX_CONNECTION_INTAKE", _positive_int, 4,
            "New connections worked on at once until their first request reaches the API; more wait their turn, "
            "client address by address, so a burst of clients connecting cannot starve heartbeats and one address "
            "cannot hold up the others."),
    Setting("head_timeout_seconds", "MOLECULE_BOX_HEAD_TIMEOUT", _positive_float, 10.0,
            "A new connection that has not sent its first request head this many seconds after its accept is closed."),
    Setting("keep_alive_timeout_seconds", "MOLECULE_BOX_KEEP_ALIVE_TIMEOUT", _positive_float, 75.0,
            "An idle keep-alive connection is closed after this many seconds without a request (agents heartbeat "
            "every 30 s)."),
    Setting("streams_per_token", "MOLECULE_BOX_STREAMS_PER_TOKEN", _positive_int, 16,
            "Event streams (/ws, SSE) open at once per token; the tokens of one workspace share this allowance "
            "(any of them can mint more). Beyond it: 429 with Retry-After."),
    Setting("streams_total", "MOLECULE_BOX_STREAMS_TOTAL", _positive_int, 1000,
            "Event streams open at once on the box, the admin's included. Beyond it: 429 with Retry-After."),
    Setting("stream_buffer", "MOLECULE_BOX_STREAM_BUFFER", _positive_int, 256,
            "Events queued for one stream whose client reads slower than they come; a stream further behind "
            "is ended with a reconnect hint (WebSocket close 1013, SSE 'event: reconnect')."),
    Setting("a2a_queue_limit", "A2A_QUEUE_LIMIT", _positive_int, 1000,
            "Most messages queued for one busy workspace; a call beyond it gets 429 with Retry-After."),
    Setting("activity_retention_days", "ACTIVITY_RETENTION_DAYS", _positive_float, 7.0, "Activity rows older than this are pruned."),
    Setting("inbox_ttl_days", "INBOX_TTL_DAYS", _positive_float, 3.0,
            "A poll-mode agent's inbox message it has not fetched this many days after it arrived is expired: no "
            "longer handed to the agent, and its sender's task reads failed. Keep it below ACTIVITY_RETENTION_DAYS, "
            "which deletes the row."),
    Setting("event_retention_days", "EVENT_RETENTION_DAYS", _positive_float, 7.0,
            "Recorded events (GET /events history) and actor failures are deleted after this many days."),
    Setting("revoked_token_retention_days", "REVOKED_TOKEN_RETENTION_DAYS", _positive_float, 30.0,
            "A revoked token's row is deleted this many days after its revocation (until then, a removed "
            "workspace's agent presenting it learns that its workspace is gone)."),
    Setting("queue_retention_days", "QUEUE_RETENTION_DAYS", _positive_float, 7.0,
            "A delivered or finally failed A2A queue row is deleted this many days after it finished."),
    Setting("delegation_retention_days", "DELEGATION_RETENTION_DAYS", _positive_float, 30.0,
            "A completed or failed delegation (and its result) is deleted this many days after it settled; its "
            "idempotency_key may then be used again."),
    Setting("shutdown_grace_seconds", "MOLECULE_BOX_SHUTDOWN_GRACE", _positive_float, 20.0,
            "On SIGTERM, how long in-flight requests may take to finish."),
    Setting("log_level", "MOLECULE_BOX_LOG_LEVEL", _log_level, "info", "debug, info, warning or error."),
    # -- workspace supervision (all lifecycle backends) --
    Setting("restart_limit", "RESTART_LIMIT", _positive_int, 5,
            "A workload that exits unexpectedly is restarted at most this many times per window, then marked failed."),
    Setting("restart_window_seconds", "RESTART_WINDOW_SECONDS", _positive_float, 600.0,
            "The window of RESTART_LIMIT, in seconds."),
    Setting("restart_backoff_seconds", "RESTART_BACKOFF_SECONDS", _non_negative_float, 1.0,
            "Delay before the first automatic restart; doubles with each restart in the window (at most 60 s)."),
    Setting("orphan_grace_seconds", "ORPHAN_GRACE_SECONDS", _non_negative_float, 60.0,
            "Managed workloads of this box that belong to no live workspace are removed after this many seconds "
            "(first sweep after start, then every 60 s)."),
    # -- the docker backend --
    Setting("docker_host", "DOCKER_HOST", _str, None,
            "Docker engine address (unix:///var/run/docker.sock, tcp://...). Default: the Docker context, else the local socket."),
    Setting("workspace_image_prefix", "WORKSPACE_IMAGE_PREFIX", _str, "ghcr.io/molecule-ai/workspace-template-",
            "Image of a docker workspace: prefix + runtime + ':' + WORKSPACE_IMAGE_TAG. Pulled when missing."),
    Setting("workspace_image_tag", "WORKSPACE_IMAGE_TAG", _str, "latest", "Tag of workspace images."),
    Setting("allowed_runtimes", "ALLOWED_RUNTIMES", _name_list, DEFAULT_RUNTIMES,
            "Comma-separated runtimes a docker workspace may use; a create with another is refused (400)."),
    Setting("workspace_network", "WORKSPACE_NETWORK", _network_name, "molecule-box",
            "Docker bridge network of workspaces (created if missing; port 8000 published on 127.0.0.1), "
            "or host (each workspace gets a port from WORKSPACE_PORT_RANGE)."),
    Setting("workspace_port_range", "WORKSPACE_PORT_RANGE", _port_range, "30000-30999",
            "With WORKSPACE_NETWORK=host: the ports workspaces listen on (PORT), low-high."),
    Setting("tier1_memory_mb", "TIER1_MEMORY_MB", _positive_int, 512, "Memory limit of tier 1 (sandboxed) containers, in MiB."),
    Setting("tier2_memory_mb", "TIER2_MEMORY_MB", _positive_int, 512, "Memory limit of tier 2 containers, in MiB."),
    Setting("tier3_memory_mb", "TIER3_MEMORY_MB", _positive_int, 2048, "Memory limit of tier 3 containers, in MiB."),
    Setting("tier4_memory_mb", "TIER4_MEMORY_MB", _positive_int, 4096, "Memory limit of tier 4 containers, in MiB."),
    Setting("tier1_cpus", "TIER1_CPUS", _positive_float, 1.0, "CPU limit of tier 1 containers (fractions allowed; at most the host's CPUs)."),
    Setting("tier2_cpus", "TIER2_CPUS", _positive_float, 1.0, "CPU limit of tier 2 containers."),
    Setting("tier3_cpus", "TIER3_CPUS", _positive_float, 2.0, "CPU limit of tier 3 containers."),
    Setting("tier4_cpus", "TIER4_CPUS", _positive_float, 4.0, "CPU limit of tier 4 containers."),
    Setting("workspace_pids_limit", "WORKSPACE_PIDS_LIMIT", _positive_int, 1024, "Most processes a workspace container may run."),
    Setting("docker_allow_privileged", "DOCKER_ALLOW_PRIVILEGED", _bool, False,
            "Opt-in: tier 3 gets --privileged and the host PID namespace, tier 4 also the Docker socket. Off: never."),
    Setting("workspace_healthcheck_interval", "WORKSPACE_HEALTHCHECK_INTERVAL", _positive_float, 15.0,
            "Seconds between Docker health probes of the agent card (images with their own HEALTHCHECK keep theirs)."),
    Setting("image_pull_timeout_seconds", "IMAGE_PULL_TIMEOUT_SECONDS", _positive_float, 300.0,
            "A workspace image pull that takes longer fails the workspace."),
)


def markdown_table() -> str:
    """The settings table of ``docs/configuration.md`` (regenerate it with ``molecule-box config --markdown``)."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = "" if s.default in (None, ()) else f"`{s.default}`"
        rows.append(f"| `{s.env}` | {default} | {s.help} |")
    return "\n".join(rows)


def bind_scope(bind_addr: str) -> tuple[str, str]:
    """Where ``BIND_ADDR`` listens: ("loopback" | "any" | "address", the address as a URL's host)."""
    host = bind_addr.strip().strip("[]")
    if host == "localhost":
        return "loopback", "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "address", host  # a host name: taken as it is
    url_host = f"[{ip}]" if ip.version == 6 else str(ip)
    if ip.is_loopback:
        return "loopback", url_host
    if ip.is_unspecified:
        return "any", "127.0.0.1"
    return "address", url_host


def default_platform_url(network: str, bind_addr: str, port: int) -> str:
    """``PLATFORM_URL`` when unset: where a container on ``network`` reaches a box listening on ``bind_addr``.

    A host-network container shares the host's addresses, loopback included. A bridge one reaches the host
    only at one of its other addresses, and ``host.docker.internal`` (the engine's host gateway) is the one
    that needs no configuration when the box listens on every address; with a loopback-only box no URL works
    there, and the docker backend refuses docker workspaces (``backends.docker.spec.reach_problem``)."""
    scope, host = bind_scope(bind_addr)
    if network != "host" and scope != "address":
        host = "host.docker.internal"
    return f"http://{host}:{port}"


def _default_data_dir(environ: Mapping[str, str]) -> Path:
    state = environ.get("STATE_DIRECTORY")
    if state:
        # systemd passes a colon-separated list when several StateDirectory= are set.
        return Path(state.split(":")[0])
    xdg = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "molecule-box"


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a systemd/dotenv style file: ``KEY=VALUE``, ``#`` comments, optional quotes and ``export``."""
    values: dict[str, str] = {}
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"--env-file {path}: cannot read it ({exc.strerror})"]) from None
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.replace("_", "").isalnum():
            problems.append(f"--env-file {path}, line {number}: expected KEY=VALUE")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    if problems:
        raise ConfigError(problems)
    return values


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the box reads from its environment, validated. Build with :meth:`from_env`."""

    port: int = 8080
    bind_addr: str = "127.0.0.1"
    data_dir: Path = Path(".")
    admin_token: str | None = None
    secrets_encryption_key: bytes | None = None
    container_backend: str = "docker"
    org_id: str | None = None
    platform_url: str = "http://host.docker.internal:8080"
    external_platform_url: str | None = None
    remote_liveness_stale_after: float = 90.0
    liveness_ttl_seconds: float = 180.0
    provision_timeout_seconds: float = 600.0
    allow_agent_networks: tuple[IPNetwork, ...] = ()
    a2a_idle_timeout_seconds: float = 300.0
    a2a_active_limit: int = 4
    a2a_queue_limit: int = 1000
    connection_intake: int = 4
    head_timeout_seconds: float = 10.0
    keep_alive_timeout_seconds: float = 75.0
    streams_per_token: int = 16
    streams_total: int = 1000
    stream_buffer: int = 256
    activity_retention_days: float = 7.0
    inbox_ttl_days: float = 3.0
    event_retention_days: float = 7.0
    revoked_token_retention_days: float = 30.0
    queue_retention_days: float = 7.0
    delegation_retention_days: float = 30.0
    shutdown_grace_seconds: float = 20.0
    log_level: str = "info"
    restart_limit: int = 5
    restart_window_seconds: float = 600.0
    restart_backoff_seconds: float = 1.0
    orphan_grace_seconds: float = 60.0
    docker_host: str | None = None
    workspace_image_prefix: str = "ghcr.io/molecule-ai/workspace-template-"
    workspace_image_tag: str = "latest"
    allowed_runtimes: str = DEFAULT_RUNTIMES
    workspace_network: str = "molecule-box"
    workspace_port_range: str = "30000-30999"
    tier1_memory_mb: int = 512
    tier2_memory_mb: int = 512
    tier3_memory_mb: int = 2048
    tier4_memory_mb: int = 4096
    tier1_cpus: float = 1.0
    tier2_cpus: float = 1.0
    tier3_cpus: float = 2.0
    tier4_cpus: float = 4.0
    workspace_pids_limit: int = 1024
    docker_allow_privileged: bool = False
    workspace_healthcheck_interval: float = 15.0
    image_pull_timeout_seconds: float = 300.0

    @property
    def store_path(self) -> Path:
        return self.data_dir / "molecule-box.db"

    @property
    def default_backend(self) -> str:
        """Backend of non-external workspaces: ``MOLECULE_ORG_ID`` means the control plane, as on the platform."""
        return "controlplane" if self.org_id else self.container_backend

    @classmethod
    def from_mapping(cls, values: Mapping[str, str], *, environ: Mapping[str, str] | None = None) -> Settings:
        """Validate ``values`` (variable name → text); raise one :class:`ConfigError` listing every problem."""
        environ = values if environ is None else environ
        parsed: dict[str, Any] = {}
        problems: list[str] = []
        for setting in SETTINGS:
            raw = values.get(setting.env)
            if raw is None or raw.strip() == "":
                parsed[setting.field] = setting.default
                continue
            try:
                parsed[setting.field] = setting.parse(raw)
            except ValueError as exc:
                shown = "<hidden>" if setting.env in {"ADMIN_TOKEN", "SECRETS_ENCRYPTION_KEY"} else repr(raw)
                problems.append(f"{setting.env} {exc}, not {shown}")
        if problems:
            raise ConfigError(problems)
        if parsed["data_dir"] is None:
            parsed["data_dir"] = _default_data_dir(environ)
        if parsed["platform_url"] is None:
            parsed["platform_url"] = default_platform_url(parsed["workspace_network"], parsed["bind_addr"],
                                                          parsed["port"] or 8080)
        return cls(**parsed)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, env_file: Path | None = None) -> Settings:
        """Read the process environment; values in ``env_file`` fill in what the environment leaves unset."""
        environ = dict(os.environ if environ is None else environ)
        values = dict(environ)
        if env_file is not None:
            for key, value in read_env_file(env_file).items():
                values.setdefault(key, value)
        return cls.from_mapping(values, environ=environ)

    @property
    def allowed_runtime_names(self) -> frozenset[str]:
        return frozenset(self.allowed_runtimes.split(","))

    @property
    def workspace_ports(self) -> tuple[int, int]:
        """``WORKSPACE_PORT_RANGE`` as (first, last), both inclusive."""
        return parse_port_range(self.workspace_port_range)

    def tier_limits(self, tier: int) -> tuple[int, float]:
        """(memory MiB, CPUs) of a tier; anything but 1, 3 or 4 is sized as tier 2, as on the platform."""
        tier = tier if tier in (1, 2, 3, 4) else 2
        return getattr(self, f"tier{tier}_memory_mb"), getattr(self, f"tier{tier}_cpus")

    def liveness_deadline_for(self, *, remote: bool) -> float:
        return self.remote_liveness_stale_after if remote else self.liveness_ttl_seconds
