"""``molecule-box migrate``: move workspaces from one backend to another (e.g. docker → swarm) through the
running box, one at a time, each new workload registered and serving before the old one is removed.

The box does the move (``POST /admin/workspaces/:id/migrate``, owned by the workspace's actor); this command
picks the workspaces, asks for each move in turn and waits for it to finish before the next, so at most one
workspace is between two workloads at any time. Remote agents are never moved (the box does not run them).
"""

from __future__ import annotations

import time
from typing import Any

import click

from .remote import Api, done, json_option, pass_api

LIVE = ("online", "degraded")


MOVE_EVENTS = ("WORKSPACE_MIGRATING", "WORKSPACE_MIGRATED", "WORKSPACE_MIGRATION_FAILED")


def _move_failed(api: Api, wid: str) -> str | None:
    """Why the move asked for last failed, once the box says so. The box records the start of the move before
    it answers the request, so the newest move event is that move's until it ends."""
    for event in api.call("GET", f"/events/{wid}"):  # newest first
        if event["event_type"] in MOVE_EVENTS:
            if event["event_type"] == "WORKSPACE_MIGRATION_FAILED":
                return str(event["payload"].get("error") or "no reason given")
            return None
    return None


def _wait_moved(api: Api, wid: str, to: str, timeout: float) -> dict[str, Any]:
    """The workspace once it runs on ``to`` and is live; a ClickException when the move failed, the workspace
    left the live states or the move did not finish in time (the box keeps the old workload then: nothing is
    lost)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.call("GET", f"/workspaces/{wid}")
        if body["backend"] == to and body["status"] in LIVE:
            return body
        if body["status"] not in LIVE:
            raise click.ClickException(f"workspace {body['name']} became {body['status']} while moving: "
                                       f"{body.get('failure_reason') or 'see molecule-box logs'}")
        reason = _move_failed(api, wid)
        if reason is not None:
            raise click.ClickException(f"workspace {body['name']} was not moved to {to}: {reason}; it stays on "
                                       f"{body['backend']}, its workload untouched")
        time.sleep(0.25)
    raise click.ClickException(f"workspace {body.get('name', wid)} is still on {body.get('backend')} after "
                               f"{timeout:g}s; the box keeps its old workload (see the box's log for why)")


@click.command("migrate")
@click.argument("workspace", required=False)
@click.option("--all", "every", is_flag=True, help="Every live workspace of the --from backend.")
@click.option("--to", "to", required=True, metavar="BACKEND", help="The backend to move to (e.g. swarm).")
@click.option("--from", "source", default="docker", show_default=True, metavar="BACKEND",
              help="With --all: the backend whose workspaces move.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds one move may take.")
@json_option
@pass_api
def migrate(api: Api, workspace: str | None, every: bool, to: str, source: str, timeout: float,
            as_json: bool) -> None:
    """Move WORKSPACE (or --all of a backend's) to backend --to, one at a time: the new workload starts and
    its agent registers while the old one still answers; then the old one is removed."""
    if bool(workspace) == every:
        raise click.UsageError("name one WORKSPACE or pass --all")
    if every:
        rows = api.call("GET", "/workspaces")
        targets = [(w["id"], w["name"]) for w in rows if w["backend"] == source and w["status"] in LIVE]
    else:
        wid = api.resolve(str(workspace))
        targets = [(wid, str(workspace))]
    moved: list[dict[str, Any]] = []
    for wid, name in targets:
        started = time.monotonic()
        answer = api.call("POST", f"/admin/workspaces/{wid}/migrate", json={"to": to})
        body = _wait_moved(api, wid, to, timeout) if answer.get("migrating") else api.call("GET", f"/workspaces/{wid}")
        moved.append({"id": wid, "name": name, "backend": body["backend"], "status": body["status"],
                      "seconds": round(time.monotonic() - started, 2), "moved": bool(answer.get("migrating"))})
        if not as_json:
            if answer.get("migrating"):
                click.echo(f"moved {name} ({wid[:8]}) to {to} in {moved[-1]['seconds']}s")
            else:
                click.echo(f"{name} ({wid[:8]}) is already on {to}")
    done({"moved": moved}, as_json, f"{sum(m['moved'] for m in moved)} of {len(moved)} workspace(s) moved to {to}")
