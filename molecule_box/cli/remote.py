"""Operator commands over the HTTP API: ``login``, ``workspaces``, ``tokens``, ``secrets``, ``events``, ``logs``.

They talk to a running box like any other client. Where the box is: ``--url``
(on the group or the command), ``MOLECULE_BOX_URL``, else ``PORT`` and
``BIND_ADDR`` read as the box reads them: the environment, then ``--env-file``
or, once ``systemd install`` ran, the service's env file (as ``doctor`` and
``backup`` do). The admin token: ``ADMIN_TOKEN``, else the file
``~/.config/molecule-box/admin-token`` (mode 0600) that ``molecule-box login``
writes. Tables on a terminal, ``--json`` for scripts. Secret values are read
from stdin or a hidden prompt, never from the command line, where they would
land in shell history and ``ps``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

from ..config import Settings, read_env_file
from ..errors import ConfigError
from ..ops import ports, systemd
from ..ops.fsutil import atomic_write

TOKEN_FILE = Path("~/.config/molecule-box/admin-token").expanduser()
#: Where ``create --wait`` stops: up (online, degraded), or a state it will not leave by itself.
SETTLED_STATES = {"online", "degraded", "failed", "removed", "paused", "hibernated"}
UP_STATES = {"online", "degraded"}
_URL = "molecule_box.url"
_ENV_FILE = "molecule_box.env_file"
F = TypeVar("F", bound=Callable[..., Any])


class Api:
    def __init__(self, url: str, token: str | None, *, origin: str = "--url") -> None:
        self.url = url.rstrip("/")
        self.origin = origin
        self.token = token
        self.http = httpx.Client(base_url=self.url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"} if token else {})

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise click.ClickException(
                f"cannot reach the box at {self.url} ({self.origin}): {exc}; is `molecule-box run` running? "
                "Point the CLI at it with --url or MOLECULE_BOX_URL") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            hint = " (run `molecule-box login` with the admin token, or set ADMIN_TOKEN)" \
                if response.status_code == 401 else ""
            raise click.ClickException(f"{method} {path}: HTTP {response.status_code}: {message}{hint}")
        return response.json() if response.content else None

    def resolve(self, ref: str) -> str:
        """A workspace id from an id, a unique id prefix, or a unique name."""
        if len(ref) == 36:
            return ref
        rows = self.call("GET", "/workspaces")
        matches = [w["id"] for w in rows if w["id"].startswith(ref) or w["name"] == ref]
        if len(matches) != 1:
            raise click.ClickException(f"{ref!r} matches {len(matches)} workspaces; use more of the id")
        return str(matches[0])


def box_url(url: str | None = None, env_file: Path | None = None) -> tuple[str, str]:
    """(the box's URL, where it came from): ``--url``, ``MOLECULE_BOX_URL``, else ``PORT`` and ``BIND_ADDR``.

    ``PORT`` and ``BIND_ADDR`` are read as the box reads them: the environment first, then the env file
    (``--env-file``, else the installed service's), so ``molecule-box run --env-file F`` and
    ``molecule-box workspaces ls --env-file F`` meet, and so do the service and a root shell."""
    if url:
        return url.strip().rstrip("/"), "--url"
    if os.environ.get("MOLECULE_BOX_URL", "").strip():
        return os.environ["MOLECULE_BOX_URL"].strip().rstrip("/"), "MOLECULE_BOX_URL"
    values = {key: os.environ[key] for key in ("PORT", "BIND_ADDR") if os.environ.get(key, "").strip()}
    origin = "PORT and BIND_ADDR from the environment" if values else "the default"
    path = env_file or systemd.installed_env_file()
    if path is not None:
        try:
            from_file = read_env_file(path)
        except ConfigError as exc:
            if env_file is not None:
                raise click.ClickException("; ".join(exc.problems)) from None
            from_file = {}  # the service's, unreadable to this user: the defaults (the error names them)
            origin += f"; {path} is not readable by this user"
        if {"PORT", "BIND_ADDR"} & ({key for key, value in from_file.items() if value.strip()} - set(values)):
            origin = f"PORT and BIND_ADDR from {path}"
        for key in ("PORT", "BIND_ADDR"):
            values.setdefault(key, from_file.get(key, ""))
    try:
        settings = Settings.from_mapping(values, environ={})
    except ConfigError as exc:
        raise click.ClickException("; ".join(exc.problems) + " (or set MOLECULE_BOX_URL)") from None
    if settings.port == 0:
        raise click.ClickException("PORT=0: the box picked a free port at start; set MOLECULE_BOX_URL to the "
                                   "address it logged")
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.bind_addr, settings.bind_addr)
    return f"http://{ports.where(host, settings.port)}", origin


def admin_token() -> str | None:
    token = os.environ.get("ADMIN_TOKEN")
    if token:
        return token.strip()
    if TOKEN_FILE.exists():
        mode = stat.S_IMODE(TOKEN_FILE.stat().st_mode)
        if mode & 0o077:
            raise click.ClickException(f"{TOKEN_FILE} is readable by others (mode {mode:o}); chmod 600 it")
        return TOKEN_FILE.read_text().strip()
    return None


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Keep a box option for :func:`connect`; the command's own wins over its group's (parsed later)."""
    if value is not None:
        ctx.meta[_URL if param.name == "box_url" else _ENV_FILE] = value
    return value


def box_options(f: F) -> F:
    """``--url`` and ``--env-file``, accepted on a group and on each of its commands."""
    f = click.option("--url", "box_url", metavar="URL", expose_value=False, callback=_remember,
                     help="The box's address. Default: MOLECULE_BOX_URL, else PORT and BIND_ADDR as the box "
                          "reads them.")(f)
    return click.option("--env-file", "env_file", type=click.Path(dir_okay=False, path_type=Path),
                        expose_value=False, callback=_remember,
                        help="The box's env file, for its PORT and BIND_ADDR. Default, once `systemd install` "
                             "ran: the service's.")(f)


def _located() -> tuple[str, str]:
    meta = click.get_current_context().meta
    return box_url(meta.get(_URL), meta.get(_ENV_FILE))


def pass_api(f: F) -> F:
    """Call the command with an :class:`Api` for the box its options point at (and accept those options)."""
    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        url, origin = _located()
        return f(Api(url, admin_token(), origin=origin), *args, **kwargs)

    return box_options(command)  # type: ignore[return-value]


def _api_group(name: str, help: str) -> click.Group:
    @click.group(name=name, help=help)
    @box_options
    def group() -> None:
        pass

    return group


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")

@click.command("login")
@box_options
@json_option
def login(as_json: bool) -> None:
    """Check the admin token against the box, then keep it for the CLI in ~/.config/molecule-box/admin-token.

    The token is asked for without echo on a terminal, else read from stdin (a leading ADMIN_TOKEN= is
    accepted). A token the box refuses is not saved. The file is mode 0600 in a 0700 directory. After
    `systemd install`:

    \b
      sudo grep ^ADMIN_TOKEN= /etc/molecule-box/molecule-box.env | molecule-box login
    """
    if sys.stdin.isatty():
        raw = click.prompt("admin token", hide_input=True, err=True)
    else:
        raw = sys.stdin.read()
    token = raw.strip().removeprefix("ADMIN_TOKEN=").strip().strip("'\"")
    if not token:
        raise click.ClickException("no token given; nothing saved")
    url, origin = _located()
    api = Api(url, token, origin=origin)
    try:
        api.call("GET", "/settings/secrets")  # admin-only and small: proves the token is the box's admin token
    except click.ClickException as exc:
        raise click.ClickException(f"{exc.message}; nothing saved") from None
    TOKEN_FILE.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(TOKEN_FILE, f"{token}\n".encode(), mode=0o600)
    if as_json:
        emit({"status": "saved", "url": url, "token_file": str(TOKEN_FILE)}, True)
        return
    click.echo(f"logged in to the box at {url}; the admin token is in {TOKEN_FILE} (mode 0600)")
    if os.environ.get("ADMIN_TOKEN"):
        click.echo("note: ADMIN_TOKEN is set in this shell and wins over the file; unset it to use the file",
                   err=True)


def emit(data: Any, as_json: bool, columns: list[tuple[str, str]] | None = None) -> None:
    if as_json or columns is None:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    rows = data if isinstance(data, list) else [data]
    table = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max([len(title)] + [len(r[i]) for r in table]) for i, (_, title) in enumerate(columns)]
    click.echo("  ".join(title.ljust(w) for (_, title), w in zip(columns, widths, strict=True)).rstrip())
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def done(data: Any, as_json: bool, sentence: str) -> None:
    """What an action command prints: the API's answer for scripts, a sentence for people."""
    if as_json:
        emit(data, True)
    else:
        click.echo(sentence)


WS_COLUMNS = [("id", "ID"), ("name", "NAME"), ("status", "STATUS"), ("backend", "BACKEND"), ("runtime", "RUNTIME"),
              ("last_heartbeat_at", "LAST HEARTBEAT")]
#: Columns ``workspaces ls`` shortens, in this order, to fit the terminal: (key, narrowest it gets).
WS_SHRINK = (("name", 12), ("runtime", 8), ("backend", 8))
SHORT_ID = 8


def ago(timestamp: str | None, now: float | None = None) -> str:
    """An RFC 3339 timestamp as ``docker ps`` shows one: ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if not timestamp:
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - _parse_time(timestamp)))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _parse_time(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def short_rows(rows: list[dict[str, Any]], width: int | None) -> list[dict[str, Any]]:
    """``workspaces ls`` as people read it: short ids, relative times, and (``width``) no line wider than that.

    The id prefix still selects the workspace (every command takes a unique prefix)."""
    shown = [{**row, "id": row["id"][:SHORT_ID], "last_heartbeat_at": ago(row.get("last_heartbeat_at"))}
             for row in rows]
    if width is None or not shown:
        return shown
    widths = {key: max([len(title)] + [len(_cell(row.get(key))) for row in shown]) for key, title in WS_COLUMNS}
    excess = sum(widths.values()) + 2 * (len(WS_COLUMNS) - 1) - width
    for key, narrowest in WS_SHRINK:
        if excess <= 0:
            break
        cut = min(excess, max(0, widths[key] - narrowest))
        widths[key] -= cut
        excess -= cut
        for row in shown:
            row[key] = _shorten(_cell(row.get(key)), widths[key])
    return shown

# -- workspaces -------------------------------------------------------------------------------------

workspaces = _api_group("workspaces", "List, create and manage workspaces.")


@workspaces.command("ls")
@click.option("--no-trunc", is_flag=True, help="Full ids and timestamps, however wide the lines get.")
@json_option
@pass_api
def ws_ls(api: Api, no_trunc: bool, as_json: bool) -> None:
    """List workspaces: short ids (any unique prefix selects one) and relative times, fitted to the terminal."""
    rows = api.call("GET", "/workspaces")
    if not as_json and not no_trunc:
        rows = short_rows(rows, shutil.get_terminal_size().columns if sys.stdout.isatty() else None)
    emit(rows, as_json, WS_COLUMNS)


@workspaces.command("show")
@click.argument("workspace")
@json_option
@pass_api
def ws_show(api: Api, workspace: str, as_json: bool) -> None:
    """Show one workspace, with why it failed if it did."""
    wid = api.resolve(workspace)
    data = api.call("GET", f"/workspaces/{wid}")
    if as_json:
        emit(data, True)
        return
    for key, value in data.items():
        if value not in (None, "", {}, []):
            click.echo(f"{key:>20}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")


@workspaces.command("create")
@click.argument("name")
@click.option("--external", is_flag=True, help="A remote agent (laptop, CI runner) that registers itself.")
@click.option("--agent-url", "agent_url", help="The remote agent's A2A URL, if it has one.")
@click.option("--runtime", help="Agent runtime (image) for box-run workspaces.")
@click.option("--tier", type=click.IntRange(1, 4))
@click.option("--parent", help="Parent workspace (id, prefix or name).")
@click.option("--backend", help="Backend plugin to use instead of the default.")
@click.option("--wait", is_flag=True,
              help="Wait until the workspace is online, for every runtime: a box-run one once its workload is up, "
                   "an external one once its agent registers or heartbeats (start it with the token printed first). "
                   "Exit status 1 if it fails, is removed, paused or hibernated instead, or --timeout passes.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds --wait waits.")
@json_option
@pass_api
def ws_create(api: Api, name: str, external: bool, agent_url: str | None, runtime: str | None, tier: int | None,
              parent: str | None, backend: str | None, wait: bool, timeout: float, as_json: bool) -> None:
    """Create a workspace."""
    body: dict[str, Any] = {"name": name, "external": external}
    for key, value in (("url", agent_url), ("runtime", runtime), ("tier", tier), ("backend", backend)):
        if value is not None:
            body[key] = value
    if parent:
        body["parent_id"] = api.resolve(parent)
    created = api.call("POST", "/workspaces", json=body)
    if as_json:
        if wait:
            created["status"] = _wait(api, created["id"], timeout, quiet=True)
        emit(created, True)
        return
    click.echo(f"created {created['id']} ({created['status']})")
    connection = created.get("connection")
    if connection:
        click.echo("\nThe agent's token (shown only now; store it where the agent runs):\n")
        click.echo(f"  WORKSPACE_ID={connection['workspace_id']}")
        click.echo(f"  MOLECULE_TOKEN={connection['auth_token']}")
        click.echo(f"  PLATFORM_URL={connection['platform_url']}")
    if wait:
        click.echo(f"{name} is {_wait(api, created['id'], timeout, quiet=False)}")


def _wait(api: Api, wid: str, timeout: float, *, quiet: bool) -> str:
    """Poll until the workspace is up or settled elsewhere; anything but up is an error (exit status 1)."""
    deadline = time.monotonic() + timeout
    spinner = "|/-\\"
    status = "provisioning"
    tick = 0
    show = not quiet and sys.stderr.isatty()
    while time.monotonic() < deadline:
        status = api.call("GET", f"/workspaces/{wid}")["status"]
        if status in SETTLED_STATES:
            break
        if show:
            doing = "waiting for its agent to register" if status == "awaiting_agent" else status
            click.echo(f"\r{spinner[tick % 4]} {doing} ({int(deadline - time.monotonic())}s left) ", nl=False,
                       err=True)
        tick += 1
        time.sleep(0.5)
    if show:
        click.echo("\r" + " " * 60 + "\r", nl=False, err=True)
    if status == "failed":
        reason = api.call("GET", f"/workspaces/{wid}/failures").get("failure_reason")
        raise click.ClickException(f"workspace {wid} failed: {reason}")
    if status in SETTLED_STATES - UP_STATES:
        raise click.ClickException(f"workspace {wid} is {status}, not online")
    if status not in UP_STATES:
        raise click.ClickException(f"workspace {wid} still {status} after {timeout:g}s")
    return str(status)


@workspaces.command("rm")
@click.argument("workspace")
@click.option("--cascade", is_flag=True, help="Also delete its descendants.")
@click.option("--purge", is_flag=True, help="Remove the rows too, not just mark them removed.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask first (it asks only on a terminal).")
@json_option
@pass_api
def ws_rm(api: Api, workspace: str, cascade: bool, purge: bool, yes: bool, as_json: bool) -> None:
    """Delete a workspace (its workload and volumes too); on a terminal it asks first."""
    wid = api.resolve(workspace)
    if sys.stdin.isatty() and not yes:
        family = " and all its descendants" if cascade else ""
        click.confirm(f"Delete workspace {workspace} ({wid[:SHORT_ID]}){family}, with its workload and volumes?",
                      abort=True, err=True)
    params = {"confirm": "true"} if cascade else {}
    if purge:
        params["purge"] = "true"
    response = api.http.delete(f"/workspaces/{wid}", params=params)
    if response.status_code == 409:
        kids = ", ".join(c["name"] for c in response.json()["children"])
        raise click.ClickException(f"workspace has children ({kids}); pass --cascade to delete them too")
    if response.status_code >= 400:
        raise click.ClickException(f"DELETE: HTTP {response.status_code}: {response.json().get('error')}")
    data = response.json()
    descendants = data.get("cascade_deleted") or 0
    done(data, as_json, f"{data['status']} workspace {workspace}" +
         (f" and {descendants} descendant{'s' if descendants != 1 else ''}" if descendants else ""))


def _verb(name: str, help: str) -> None:
    @workspaces.command(name, help=help)
    @click.argument("workspace")
    @json_option
    @pass_api
    def command(api: Api, workspace: str, as_json: bool) -> None:
        data = api.call("POST", f"/workspaces/{api.resolve(workspace)}/{name}")
        done(data, as_json, _verb_sentence(name, workspace, data))


def _verb_sentence(verb: str, workspace: str, data: dict[str, Any]) -> str:
    count = data.get("paused_count") or data.get("resumed_count") or 1
    also = f" (and {count - 1} descendant{'s' if count > 2 else ''})" if count > 1 else ""
    status = data.get("status")
    now = f"; it is {status}" if status else ""
    return {"restart": f"restarting workspace {workspace}{now}", "pause": f"paused workspace {workspace}{also}",
            "resume": f"resumed workspace {workspace}{also}{now}", "hibernate": f"workspace {workspace}{now}",
            "wake": f"waking workspace {workspace}{now}"}[verb]


for _name, _help in (("restart", "Restart a box-run workspace's workload."),
                     ("pause", "Pause a workspace and its descendants."),
                     ("resume", "Resume a paused (or wake a hibernated) workspace."),
                     ("hibernate", "Hibernate an idle workspace."), ("wake", "Wake a hibernated workspace.")):
    _verb(_name, _help)

# -- tokens -----------------------------------------------------------------------------------------

tokens = _api_group("tokens", "Workspace bearer tokens: list, create (shown once), revoke.")


@tokens.command("ls")
@click.argument("workspace")
@json_option
@pass_api
def tokens_ls(api: Api, workspace: str, as_json: bool) -> None:
    """List a workspace's live tokens (prefixes only)."""
    data = api.call("GET", f"/workspaces/{api.resolve(workspace)}/tokens")
    emit(data if as_json else data["tokens"], as_json,
         [("id", "ID"), ("prefix", "PREFIX"), ("created_at", "CREATED"), ("last_used_at", "LAST USED")])


@tokens.command("create")
@click.argument("workspace")
@json_option
@pass_api
def tokens_create(api: Api, workspace: str, as_json: bool) -> None:
    """Mint a token; it is printed once."""
    data = api.call("POST", f"/workspaces/{api.resolve(workspace)}/tokens")
    if as_json:
        emit(data, True)
    else:
        click.echo(data["auth_token"])
        click.echo("(shown only once; store it now)", err=True)


@tokens.command("revoke")
@click.argument("workspace")
@click.argument("token_id")
@json_option
@pass_api
def tokens_revoke(api: Api, workspace: str, token_id: str, as_json: bool) -> None:
    """Revoke a token by its id."""
    data = api.call("DELETE", f"/workspaces/{api.resolve(workspace)}/tokens/{token_id}")
    done(data, as_json, f"revoked token {token_id} of workspace {workspace}")

# -- secrets ----------------------------------------------------------------------------------------


secrets = _api_group("secrets", "Secrets, global or per workspace. Values come from stdin or a prompt.")
workspace_option = click.option("--workspace", "-w", help="A workspace (id, prefix or name); default: global.")


def _secrets_path(api: Api, workspace: str | None) -> str:
    return f"/workspaces/{api.resolve(workspace)}/secrets" if workspace else "/settings/secrets"


def _scope(workspace: str | None) -> str:
    return f"of workspace {workspace}" if workspace else "(global)"


@secrets.command("set")
@click.argument("key")
@workspace_option
@json_option
@pass_api
def secrets_set(api: Api, key: str, workspace: str | None, as_json: bool) -> None:
    """Set KEY; the value is read from stdin (piped) or a hidden prompt, never from arguments."""
    if sys.stdin.isatty():
        value = click.prompt(f"value for {key}", hide_input=True, confirmation_prompt=True)
    else:
        value = sys.stdin.read().rstrip("\n")
    if not value:
        raise click.ClickException("empty value; nothing saved")
    data = api.call("PUT", _secrets_path(api, workspace), json={"key": key, "value": value})
    done(data, as_json, f"saved secret {key} {_scope(workspace)}")


@secrets.command("ls")
@workspace_option
@json_option
@pass_api
def secrets_ls(api: Api, workspace: str | None, as_json: bool) -> None:
    """List secret keys (never values)."""
    emit(api.call("GET", _secrets_path(api, workspace)), as_json,
         [("key", "KEY"), ("scope", "SCOPE"), ("updated_at", "UPDATED")])


@secrets.command("rm")
@click.argument("key")
@workspace_option
@json_option
@pass_api
def secrets_rm(api: Api, key: str, workspace: str | None, as_json: bool) -> None:
    """Delete a secret."""
    data = api.call("DELETE", f"{_secrets_path(api, workspace)}/{key}")
    done(data, as_json, f"deleted secret {key} {_scope(workspace)}")

# -- events and logs ---------------------------------------------------------------------------------


@click.command("events")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they happen.")
@click.option("--workspace", "-w", help="Only this workspace.")
@json_option
@pass_api
def events(api: Api, follow: bool, workspace: str | None, as_json: bool) -> None:
    """Recent events, or a live feed with --follow."""
    wid = api.resolve(workspace) if workspace else None
    if not follow:
        rows = list(reversed(api.call("GET", f"/events/{wid}" if wid else "/events")))
        if as_json:
            emit(rows, True)
        else:
            for row in rows:
                click.echo(_event_line(row["created_at"], row["event_type"], row["workspace_id"], row["payload"]))
        return
    try:
        for frame in _stream(api, "/events/stream"):
            if wid and frame.get("workspace_id") != wid:
                continue
            click.echo(json.dumps(frame) if as_json else
                       _event_line(frame["timestamp"], frame["event"], frame["workspace_id"], frame["payload"]))
    except KeyboardInterrupt:
        pass


def _stream(api: Api, path: str) -> Iterator[dict[str, Any]]:
    with api.http.stream("GET", path, timeout=httpx.Timeout(30, read=None)) as response:
        if response.status_code >= 400:
            raise click.ClickException(f"GET {path}: HTTP {response.status_code}")
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[6:])


def _event_line(when: str, kind: str, wid: str | None, payload: Any) -> str:
    details = " ".join(f"{k}={v}" for k, v in (payload or {}).items() if k != "agent_card")
    return f"{when}  {kind:<28} {(wid or '-')[:8]}  {details}".rstrip()


@click.command("logs")
@click.argument("workspace")
@click.option("--tail", "-n", default=200, show_default=True, help="Lines to show.")
@json_option
@pass_api
def logs(api: Api, workspace: str, tail: int, as_json: bool) -> None:
    """A workspace's container output (backends that keep logs, e.g. docker)."""
    data = api.call("GET", f"/workspaces/{api.resolve(workspace)}/logs", params={"tail": tail})
    if as_json:
        emit(data, True)
    else:
        click.echo(data["logs"], nl=False)


COMMANDS = (login, workspaces, tokens, secrets, events, logs)


def register(main: click.Group) -> None:
    for command in COMMANDS:
        main.add_command(command)
