"""Settings: one typed object, read from the environment (and an optional env file) at start.

Every setting is declared once, as a field of :class:`Settings` (or of an installed backend's own settings
class) with its variable name, parser, default and help text. The same declarations validate the environment,
document it (``docs/configuration.md`` and ``systemd/molecule-box.env.example`` are checked against them by a
test) and report *every* bad value at once, so an operator fixes a broken env file in one pass instead of one
restart per typo. Names follow the platform's where it has the setting, so an env file written for the platform
keeps its meaning here.
"""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from .backends import loader, options
from .backends.base import BackendSettings, bind_scope
from .backends.options import (
    Setting,
    boolean,
    name,
    non_negative_float,
    option,
    positive_float,
    positive_int,
    read,
    shown_default,
    table,
    text,
)
from .errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _port(raw: str) -> int:
    wanted = "must be an integer between 1 and 65535 (or 0 for a free port)"
    value = options.number(int, raw, wanted)
    if not 0 <= value <= 65535:
        raise ValueError(wanted)
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
    return name(raw, "must be a backend name such as docker, external or flyio")


def _log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"debug", "info", "warning", "error"}:
        raise ValueError("must be one of debug, info, warning, error")
    return value


def _data_dir(raw: str) -> Path:
    return Path(raw).expanduser()


def _duration(raw: str) -> float:
    """Seconds, or the platform's Go-style ``300s`` / ``5m`` / ``1h`` (an env file written for it keeps working)."""
    raw = raw.strip().lower()
    scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(raw[-1:], None)
    try:
        value = float(raw[:-1] if scale else raw) * (scale or 1.0)
    except ValueError:
        raise ValueError("must be a number of seconds, or a duration such as 90s, 5m or 1h") from None
    if not value > 0:
        raise ValueError("must be more than 0")
    return value


def own_platform_url(bind_addr: str, port: int) -> str:
    """The box's own address as a URL: ``PLATFORM_URL`` when no installed backend knows better."""
    return f"http://{bind_scope(bind_addr)[1]}:{port}"


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

    port: int = option(
        "PORT", _port, 8080,
        "TCP port of the HTTP API (0 picks a free port).")
    bind_addr: str = option(
        "BIND_ADDR", text, "127.0.0.1",
        "Address the HTTP API listens on. Keep 127.0.0.1 unless a TLS proxy fronts the box.")
    data_dir: Path = option(
        "MOLECULE_BOX_DATA", _data_dir, Path("."),
        "Data directory (SQLite store, secrets key). Default: $STATE_DIRECTORY under systemd, else "
        "$XDG_DATA_HOME/molecule-box.", derived=True)
    templates_dir: Path | None = option(
        "MOLECULE_BOX_TEMPLATES_DIR", _data_dir, None,
        "Workspace templates, the platform's CONFIGS_DIR layout: one folder per template holding its config.yaml "
        "(org-templates/ is not a template). Default: <MOLECULE_BOX_DATA>/templates.")
    admin_token: str | None = option(
        "ADMIN_TOKEN", _admin_token, None,
        "Admin bearer token; it replaces the stored one, which is how a lost token is recovered. Unset: one is "
        "generated on first start, shown once, and stored only as a hash.")
    secrets_encryption_key: bytes | None = option(
        "SECRETS_ENCRYPTION_KEY", parse_encryption_key, None,
        "32-byte AES-256-GCM key for secrets at rest (base64 or raw). Unset: a key file is generated in the data "
        "dir (mode 0600).")
    container_backend: str = option(
        "CONTAINER_BACKEND", _backend_name, "docker",
        "Backend for non-external workspaces (an installed molecule_box.backends entry point).")
    org_id: str | None = option(
        "MOLECULE_ORG_ID", text, None,
        "When set, non-external workspaces default to the controlplane backend (before CONTAINER_BACKEND), as on "
        "the platform; install its plugin, plugins/molecule-box-controlplane.")
    platform_url: str = option(
        "PLATFORM_URL", _url, "http://host.docker.internal:8080",
        "URL of this box as workloads reach it. Default: http://<BIND_ADDR>:<PORT> (127.0.0.1 for 0.0.0.0); "
        "on a bridge network with BIND_ADDR 0.0.0.0, http://host.docker.internal:<PORT>. A loopback BIND_ADDR "
        "cannot be reached from a bridge network: the docker backend then refuses docker workspaces, saying what to "
        "change (docs/docker.md).", derived=True)
    external_platform_url: str | None = option(
        "EXTERNAL_PLATFORM_URL", _url, None,
        "URL of this box shown to remote agents in connection snippets. Default: the request's own scheme and host.")
    remote_liveness_stale_after: float = option(
        "REMOTE_LIVENESS_STALE_AFTER", positive_float, 90.0,
        "Heartbeat deadline of external workspaces, in seconds (fractions allowed).")
    liveness_ttl_seconds: float = option(
        "LIVENESS_TTL_SECONDS", positive_float, 180.0,
        "Heartbeat deadline of container workspaces, in seconds.")
    provision_timeout_seconds: float = option(
        "PROVISION_TIMEOUT_SECONDS", positive_float, 600.0,
        "A workspace still provisioning after this many seconds becomes failed.")
    allow_agent_networks: tuple[IPNetwork, ...] = option(
        "MOLECULE_BOX_ALLOW_AGENT_NETWORKS", _networks, (),
        "Comma-separated CIDRs agent URLs may use besides public addresses, e.g. 127.0.0.0/8,10.0.0.0/8.")
    a2a_idle_timeout_seconds: float = option(
        "A2A_IDLE_TIMEOUT_SECONDS", positive_float, 300.0,
        "An A2A call is cancelled when the target shows no sign of life (events, heartbeats, bytes) this long.")
    a2a_active_limit: int = option(
        "A2A_ACTIVE_LIMIT", positive_int, 4,
        "Proxied A2A calls worked on at once (waiting for an agent does not count): keeps heartbeats and the API "
        "responsive while the proxy is saturated.")
    connection_intake: int = option(
        "MOLECULE_BOX_CONNECTION_INTAKE", positive_int, 4,
        "New connections worked on at once until their first request reaches the API; more wait their turn, "
        "client address by address, so a burst of clients connecting cannot starve heartbeats and one address "
        "cannot hold up the others.")
    head_timeout_seconds: float = option(
        "MOLECULE_BOX_HEAD_TIMEOUT", positive_float, 10.0,
        "A new connection that has not sent its first request head this many seconds after its accept is closed.")
    keep_alive_timeout_seconds: float = option(
        "MOLECULE_BOX_KEEP_ALIVE_TIMEOUT", positive_float, 75.0,
        "An idle keep-alive connection is closed after this many seconds without a request (agents heartbeat "
        "every 30 s).")
    streams_per_token: int = option(
        "MOLECULE_BOX_STREAMS_PER_TOKEN", positive_int, 16,
        "Event streams (/ws, SSE) open at once per token; the tokens of one workspace share this allowance "
        "(any of them can mint more). Beyond it: 429 with Retry-After.")
    streams_total: int = option(
        "MOLECULE_BOX_STREAMS_TOTAL", positive_int, 1000,
        "Event streams open at once on the box, the admin's included. Beyond it: 429 with Retry-After.")
    stream_buffer: int = option(
        "MOLECULE_BOX_STREAM_BUFFER", positive_int, 256,
        "Events queued for one stream whose client reads slower than they come; a stream further behind "
        "is ended with a reconnect hint (WebSocket close 1013, SSE 'event: reconnect').")
    a2a_queue_limit: int = option(
        "A2A_QUEUE_LIMIT", positive_int, 1000,
        "Most messages queued for one busy workspace; a call beyond it gets 429 with Retry-After.")
    activity_retention_days: float = option(
        "ACTIVITY_RETENTION_DAYS", positive_float, 7.0,
        "Activity rows older than this are pruned.")
    inbox_ttl_days: float = option(
        "INBOX_TTL_DAYS", positive_float, 3.0,
        "A poll-mode agent's inbox message it has not fetched this many days after it arrived is expired: no "
        "longer handed to the agent, and its sender's task reads failed. Keep it below ACTIVITY_RETENTION_DAYS, "
        "which deletes the row.")
    event_retention_days: float = option(
        "EVENT_RETENTION_DAYS", positive_float, 7.0,
        "Recorded events (GET /events history) and actor failures are deleted after this many days.")
    revoked_token_retention_days: float = option(
        "REVOKED_TOKEN_RETENTION_DAYS", positive_float, 30.0,
        "A revoked token's row is deleted this many days after its revocation (until then, a removed "
        "workspace's agent presenting it learns that its workspace is gone).")
    queue_retention_days: float = option(
        "QUEUE_RETENTION_DAYS", positive_float, 7.0,
        "A delivered or finally failed A2A queue row is deleted this many days after it finished.")
    delegation_retention_days: float = option(
        "DELEGATION_RETENTION_DAYS", positive_float, 30.0,
        "A completed or failed delegation (and its result) is deleted this many days after it settled; its "
        "idempotency_key may then be used again.")
    shutdown_grace_seconds: float = option(
        "MOLECULE_BOX_SHUTDOWN_GRACE", positive_float, 20.0,
        "On SIGTERM, how long in-flight requests may take to finish.")
    log_level: str = option(
        "MOLECULE_BOX_LOG_LEVEL", _log_level, "info",
        "debug, info, warning or error.")
    # -- workspace supervision (all lifecycle backends) --
    restart_limit: int = option(
        "RESTART_LIMIT", positive_int, 5,
        "A workload that exits unexpectedly is restarted at most this many times per window, then marked failed.")
    restart_window_seconds: float = option(
        "RESTART_WINDOW_SECONDS", positive_float, 600.0,
        "The window of RESTART_LIMIT, in seconds.")
    restart_backoff_seconds: float = option(
        "RESTART_BACKOFF_SECONDS", non_negative_float, 1.0,
        "Delay before the first automatic restart; doubles with each restart in the window (at most 60 s).")
    orphan_grace_seconds: float = option(
        "ORPHAN_GRACE_SECONDS", non_negative_float, 60.0,
        "Managed workloads of this box that belong to no live workspace are removed after this many seconds "
        "(first sweep after start, then every 60 s).")
    # -- agent plugins (docs/agent-plugins.md) --
    plugins_dir: Path = option(
        "MOLECULE_BOX_PLUGINS_DIR", _data_dir, Path("plugins"),
        "The agent plugin registry: one directory per plugin. Default: $CONFIGS_DIR/../plugins when CONFIGS_DIR "
        "is set (the platform's layout), else <data dir>/plugins.", derived=True)
    plugin_max_dir_bytes: int = option(
        "PLUGIN_INSTALL_MAX_DIR_BYTES", positive_int, 104857600,
        "Largest plugin (sum of its file sizes) the box stages, installs or serves; counted while reading (413).")
    plugin_max_files: int = option(
        "MOLECULE_BOX_PLUGIN_MAX_FILES", positive_int, 10000,
        "Most files a plugin may hold (413 beyond).")
    plugin_fetch_timeout: float = option(
        "PLUGIN_INSTALL_FETCH_TIMEOUT", _duration, 300.0,
        "Deadline of fetching a github plugin source, in seconds or as 90s/5m/1h (504 beyond).")
    plugin_allow_unpinned: bool = option(
        "PLUGIN_ALLOW_UNPINNED", boolean, False,
        "Allow github://owner/repo plugin sources without a #tag, #branch or #sha pin (refused with 422 otherwise).")
    plugin_body_max_bytes: int = option(
        "PLUGIN_INSTALL_BODY_MAX_BYTES", positive_int, 65536,
        "Largest plugin install request body (413 beyond).")
    #: Each installed backend's own settings by backend name, read from the same environment.
    backends: Mapping[str, BackendSettings] = dataclasses.field(default_factory=dict)

    @property
    def store_path(self) -> Path:
        return self.data_dir / "molecule-box.db"

    @property
    def templates_root(self) -> Path:
        return self.templates_dir if self.templates_dir is not None else self.data_dir / "templates"

    @property
    def default_backend(self) -> str:
        """Backend of non-external workspaces: ``MOLECULE_ORG_ID`` means the control plane, as on the platform."""
        return default_backend(self.org_id, self.container_backend)

    def not_installed_fix(self, backend: str) -> str | None:
        """What to do about a missing backend plugin: the control plane is the default because of
        ``MOLECULE_ORG_ID``, so changing ``CONTAINER_BACKEND`` would not help there."""
        if backend == "controlplane" and self.org_id:
            return ("install molecule-box-controlplane (pip install molecule-box-controlplane), or unset "
                    "MOLECULE_ORG_ID (with it set, controlplane is the default backend, whatever CONTAINER_BACKEND "
                    "says)")
        return None

    @classmethod
    def from_mapping(cls, values: Mapping[str, str], *, environ: Mapping[str, str] | None = None) -> Settings:
        """Validate ``values`` (variable name → text) against the box's settings and every installed backend's;
        raise one :class:`ConfigError` listing every problem."""
        environ = values if environ is None else environ
        problems: list[str] = []
        parsed = read(SETTINGS, values, problems)
        backends = {backend: options.parse(kind, values, problems)
                    for backend, kind in loader.settings_types().items()}
        problems = list(dict.fromkeys(problems))  # a bad variable two backends read is said once
        if problems:
            raise ConfigError(problems)
        if parsed["data_dir"] is None:
            parsed["data_dir"] = _default_data_dir(environ)
        if parsed["plugins_dir"] is None:
            configs = values.get("CONFIGS_DIR", "").strip()
            parsed["plugins_dir"] = (Path(configs).expanduser().parent / "plugins" if configs
                                     else parsed["data_dir"] / "plugins")
        if parsed["platform_url"] is None:
            default = default_backend(parsed["org_id"], parsed["container_backend"])
            parsed["platform_url"] = _default_platform_url(backends, default, parsed["bind_addr"],
                                                           parsed["port"] or 8080)
        return cls(**parsed, backends=backends)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, env_file: Path | None = None) -> Settings:
        """Read the process environment; values in ``env_file`` fill in what the environment leaves unset."""
        environ = dict(os.environ if environ is None else environ)
        values = dict(environ)
        if env_file is not None:
            for key, value in read_env_file(env_file).items():
                values.setdefault(key, value)
        return cls.from_mapping(values, environ=environ)

    def liveness_deadline_for(self, *, remote: bool) -> float:
        return self.remote_liveness_stale_after if remote else self.liveness_ttl_seconds


#: The box's own settings, in the order they are documented.
SETTINGS: tuple[Setting, ...] = table(Settings)


def default_backend(org_id: str | None, container_backend: str) -> str:
    """``MOLECULE_ORG_ID`` set means the control plane (the ``controlplane`` plugin), before
    ``CONTAINER_BACKEND``, as on the platform; where workloads reach the box is then that backend's knowledge
    first (a control-plane instance cannot use the docker bridge's gateway)."""
    return "controlplane" if org_id else container_backend


def _default_platform_url(backends: Mapping[str, BackendSettings], container_backend: str, bind_addr: str,
                          port: int) -> str:
    """The first answer of the default backend's settings, then of the others' by name, else the box's own
    address: where workloads reach the box is the backends' knowledge (a bridge network's gateway, say)."""
    order = sorted(backends, key=lambda backend: (backend != container_backend, backend))
    for backend in order:
        url = backends[backend].default_platform_url(bind_addr, port)
        if url is not None:
            return url
    return own_platform_url(bind_addr, port)


def sections() -> list[tuple[str | None, tuple[Setting, ...]]]:
    """(backend name, its settings) for the box itself (None) and every installed backend that has settings:
    what ``molecule-box config``, the docs, the env example and ``doctor`` list."""
    found: list[tuple[str | None, tuple[Setting, ...]]] = [(None, SETTINGS)]
    seen = {(s.env, s.help) for s in SETTINGS}
    for backend, kind in loader.settings_types().items():
        # A setting a backend inherits from another's settings class (the swarm plugin's from docker's) is
        # listed once, where it is declared; a variable re-declared with a meaning of its own keeps its row.
        rows = tuple(s for s in table(kind) if (s.env, s.help) not in seen)
        seen.update((s.env, s.help) for s in rows)
        if rows:
            found.append((backend, rows))
    return found


def all_settings() -> list[Setting]:
    return [setting for _, rows in sections() for setting in rows]


def section_title(backend: str | None) -> str:
    return "The box" if backend is None else f"The {backend} backend"


def markdown_table() -> str:
    """The settings tables of ``docs/configuration.md`` (regenerate them with ``molecule-box config --markdown``):
    the box's, then one section per installed backend."""
    out: list[str] = []
    for backend, rows in sections():
        if backend is not None:
            out += ["", f"### {section_title(backend)}", ""]
        out += ["| Variable | Default | Meaning |", "|---|---|---|"]
        for s in rows:
            default = shown_default(s)
            out.append(f"| `{s.env}` | {f'`{default}`' if default else ''} | {s.help} |")
    return "\n".join(out)
