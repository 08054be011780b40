"""Request bodies: one pydantic model each, used both to validate (strict types, 400 on anything else)
and to describe the body in ``/openapi.json``. Unknown keys are ignored, as on the platform."""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from .strictjson import finite

_BANNED = re.compile(r"[\n\r{}\[\]|>*&!]")
_NEWLINE = re.compile(r"[\n\r]")


def _no_banned(value: str) -> str:
    if _BANNED.search(value):
        raise ValueError("must not contain newlines or any of {}[]|>*&!")
    return value


def _no_newline(value: str) -> str:
    if _NEWLINE.search(value):
        raise ValueError("must not contain newlines")
    return value


def _uuid(value: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise ValueError("must be a UUID") from None
    return str(parsed)


def _finite_json(value: Any) -> Any:
    if not finite(value):
        raise ValueError("numbers must be finite (no NaN, Infinity or overflowing values)")
    return value


def _abs_dir(value: str) -> str:
    if not value.startswith("/") or ".." in value.split("/"):
        raise ValueError("must be an absolute path without '..'")
    for system in ("/etc", "/var", "/proc", "/sys", "/dev", "/boot", "/sbin", "/bin", "/lib", "/usr"):
        if value == system or value.startswith(system + "/"):
            raise ValueError(f"must not be a system directory ({system})")
    return value


Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_no_banned)]
Role = Annotated[str, Field(max_length=1000), AfterValidator(_no_banned)]
Short = Annotated[str, Field(max_length=100), AfterValidator(_no_newline)]
RuntimeName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
UUIDStr = Annotated[str, AfterValidator(_uuid)]
Dir = Annotated[str, Field(max_length=4096), AfterValidator(_abs_dir)]
SecretKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
MetadataKey = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")]
SecretValue = Annotated[str, Field(min_length=1, max_length=65536)]
Text = Annotated[str, Field(max_length=8192)]
#: Free-form JSON the box stores and re-emits: a NaN or infinity in it would make later answers non-strict JSON.
JSONValue = Annotated[Any, AfterValidator(_finite_json)]
JSONObject = Annotated[dict[str, Any], AfterValidator(_finite_json)]
#: What an SQLite INTEGER holds: the bound of every count and amount without a tighter one of its own.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
#: A canvas coordinate (floats are finite in every body: see Body).
Coordinate = Annotated[float, Field(ge=-1e9, le=1e9)]


class Body(BaseModel):
    #: allow_inf_nan=False: every float field refuses NaN, Infinity and numbers that overflow to infinity.
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class Canvas(Body):
    x: Coordinate = 0
    y: Coordinate = 0


class CreateWorkspace(Body):
    """``POST /workspaces``."""

    name: Name
    role: Role | None = None
    template: Short | None = None
    tier: int | None = Field(default=None, ge=0, le=4)
    model: Short | None = None
    runtime: RuntimeName | None = None
    external: bool = False
    url: Annotated[str, Field(max_length=2048)] | None = None
    workspace_dir: Dir | None = None
    workspace_access: Literal["none", "read_only", "read_write"] = "none"
    parent_id: UUIDStr | None = None
    budget_limit: Int64 | None = Field(default=None, ge=0)
    secrets: dict[SecretKey, SecretValue] | None = Field(default=None, max_length=200)
    max_concurrent_tasks: Int64 | None = Field(default=None, le=1000)
    canvas: Canvas | None = None
    #: molecule-box addition: pick an installed backend for this workspace instead of the default.
    backend: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")] | None = None
    #: molecule-box addition, remote agents only: "token" (default) mints the agent's token now, in the
    #: connection block; "open" mints none and lets the first bearer-less register (the SDK's bootstrap)
    #: claim the workspace, within ``bootstrap_expires_in`` seconds (default 3600, at most 7 days).
    bootstrap: Literal["token", "open"] = "token"
    bootstrap_expires_in: int | None = Field(default=None, ge=1, le=7 * 86400)
    #: molecule-box addition: placement hints handed to the backend (``region`` for flyio), kept with the
    #: workspace's config.
    metadata: dict[MetadataKey, Short] | None = Field(default=None, max_length=20)


class PatchWorkspace(Body):
    """``PATCH /workspaces/:id``: only the keys present are changed. ``parent_id``, ``tier``, ``runtime``,
    ``max_concurrent_tasks``, ``budget_limit`` and ``workspace_dir`` need the admin token."""

    name: Name | None = None
    role: Role | None = None
    tier: int | None = Field(default=None, ge=1, le=4)
    parent_id: UUIDStr | None = None
    runtime: RuntimeName | None = None
    collapsed: bool | None = None
    workspace_dir: Dir | None = None
    x: Coordinate | None = None
    y: Coordinate | None = None
    max_concurrent_tasks: int | None = Field(default=None, ge=1, le=1000)
    budget_limit: Int64 | None = Field(default=None, ge=0)


class Register(Body):
    """``POST /registry/register``. Without ``url`` (or with ``remote://no-inbound``) the agent is polled."""

    id: UUIDStr
    url: Annotated[str, Field(max_length=2048)] | None = None
    agent_card: JSONObject = Field(default_factory=dict)


class RuntimeMetadata(Body):
    capabilities: dict[str, bool] | None = None
    idle_timeout_seconds: float | None = Field(default=None, gt=0, le=86400)


class Heartbeat(Body):
    """``POST /registry/heartbeat``."""

    workspace_id: UUIDStr
    error_rate: float = Field(default=0.0, ge=0, le=1)
    sample_error: Text | None = None
    active_tasks: int = Field(default=0, ge=0, le=1_000_000)
    uptime_seconds: float = Field(default=0, ge=0, le=2**53 - 1)
    current_task: Text | None = None
    monthly_spend: Int64 = 0
    runtime_state: Literal["", "wedged"] | None = None
    runtime_metadata: RuntimeMetadata | None = None


class UpdateCard(Body):
    """``POST /registry/update-card``."""

    workspace_id: UUIDStr
    agent_card: JSONObject


class CheckAccess(Body):
    """``POST /registry/check-access``."""

    caller_id: Annotated[str, Field(min_length=1, max_length=100)]
    target_id: Annotated[str, Field(min_length=1, max_length=100)]


class PutSecret(Body):
    """``POST``/``PUT`` of a workspace or global secret."""

    key: SecretKey
    value: SecretValue


class PutModel(Body):
    """``PUT /workspaces/:id/model``: an empty model clears it."""

    model: Annotated[str, Field(max_length=200)] = ""


class Restart(Body):
    """``POST /workspaces/:id/restart`` (all optional). The platform's options are accepted, and refused with
    a workspace's own token (they would change what the container is built from), but not applied yet: a
    restart rebuilds the workload the admin configured."""

    template: Short | None = None
    apply_template: bool = False
    reset: bool = False
    rebuild_config: bool = False


class BootstrapFailed(Body):
    """``POST /admin/workspaces/:id/bootstrap-failed``: the control plane's bootstrap watcher saw the
    workspace's runtime crash while it booted (the platform's body, both fields optional)."""

    error: Annotated[str, Field(max_length=8192)] = ""
    log_tail: Annotated[str, Field(max_length=65536)] = ""


class Attachment(Body):
    uri: Annotated[str, Field(min_length=1, max_length=4096)]
    name: Annotated[str, Field(max_length=1000)] = ""
    mimeType: Annotated[str, Field(max_length=200)] | None = None
    size: Int64 | None = Field(default=None, ge=0)


class Notify(Body):
    """``POST /workspaces/:id/notify``: an agent's message to its user."""

    message: Annotated[str, Field(min_length=1, max_length=65536)]
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)


class ReportActivity(Body):
    """``POST /workspaces/:id/activity``: an agent reports what it did."""

    activity_type: Literal["a2a_send", "a2a_receive", "task_update", "agent_log", "skill_promotion",
                           "memory_write", "error"]
    source_id: Annotated[str, Field(max_length=100)] | None = None
    target_id: Annotated[str, Field(max_length=100)] | None = None
    method: Annotated[str, Field(max_length=200)] | None = None
    summary: Annotated[str, Field(max_length=2000)] | None = None
    request_body: JSONValue = None
    response_body: JSONValue = None
    status: Annotated[str, Field(max_length=50)] | None = None
    duration_ms: Int64 | None = Field(default=None, ge=0)
    error_detail: Annotated[str, Field(max_length=8192)] | None = None


class Delegate(Body):
    """``POST /workspaces/:id/delegate``: platform form (``target_id`` set; ``:id`` is the source) or SDK form
    (no ``target_id``; ``:id`` is the target and ``X-Workspace-ID`` the source)."""

    task: Annotated[str, Field(min_length=1, max_length=262144)]
    target_id: UUIDStr | None = None
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class PatchConfig(Body):
    """``PATCH /workspaces/:id/config``: the keys to set, shallow-merged into the stored config. The platform's
    body is the object itself; ``{"data": {...}}`` (what GET answers) is taken as the same."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    @model_validator(mode="after")
    def _finite(self) -> PatchConfig:
        _finite_json(self.model_extra)
        return self

    def changes(self) -> dict[str, Any]:
        extra = dict(self.model_extra or {})
        data = extra.get("data")
        return dict(data) if set(extra) == {"data"} and isinstance(data, dict) else extra


MemoryKey = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f/]+$")]


class PutMemory(Body):
    """``POST /workspaces/:id/memory``: set one entry. ``if_match_version``: write only if the live entry is at
    that version (0: only if there is none), else 409 with ``current_version``."""

    key: MemoryKey
    value: JSONValue
    ttl_seconds: int | None = Field(default=None, ge=1, le=10 * 365 * 86400)
    if_match_version: int | None = Field(default=None, ge=0, le=2**62)


FilePath = Annotated[str, Field(min_length=1, max_length=1024)]


class PutFile(Body):
    """``PUT /workspaces/:id/files/*path``: one file's content (``encoding`` base64 for bytes that are not
    UTF-8); ``restart`` (or ``?restart=true``): restart a running workload afterwards, so its agent reads it."""

    content: Annotated[str, Field(max_length=1024 * 1024)]
    encoding: Literal["utf-8", "base64"] = "utf-8"
    restart: bool = False


class ReplaceFiles(Body):
    """``PUT /workspaces/:id/files``: ``/configs`` becomes exactly these files (path → content)."""

    files: dict[FilePath, Annotated[str, Field(max_length=1024 * 1024)]] = Field(max_length=1000)
    encoding: Literal["utf-8", "base64"] = "utf-8"
    restart: bool = False


class Login(Body):
    """``POST /session``: the dashboard's login (the token in the body, never in a URL)."""

    admin_token: Annotated[str, Field(min_length=1, max_length=512)]


class Migrate(Body):
    """``POST /admin/workspaces/:id/migrate`` (molecule-box addition): the backend to move the workload to."""

    to: RuntimeName


class Empty(Body):
    """A body-less request (anything sent is ignored)."""


def describe_error(exc: Exception) -> str:
    """A pydantic ValidationError as one readable line: ``field: problem; field: problem``."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    parts = []
    for err in errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


class InstallPlugin(Body):
    """``POST /workspaces/:id/plugins``. ``sha256``: the caller's pin, the hex SHA-256 of the plugin's
    ``plugin.yaml`` (422 when it differs)."""

    source: str = Field("", max_length=1024)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")


class PluginAllowlist(Body):
    """``PUT /orgs/:id/plugins/allowlist``: the org's allowed plugins (empty: all), replacing the list."""

    plugins: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=1000)
    enabled_by: str = Field("", max_length=256)
