"""Activity, notifications, the poll inbox and delegation, as the platform's SDK calls them."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

from quart import Blueprint, request

from .. import strictjson
from ..access import can_communicate
from ..errors import BadRequest, Forbidden, Gone
from ..models import rfc3339
from ..proxy.normalize import message_text
from ..schemas import Delegate, Notify, ReportActivity
from ..store import activity as activity_rows
from ..store import delegations as delegation_rows
from ..store import inbox
from ..store import queue as queue_rows
from .routing import Call, box, live, query_int, respond, route

bp = Blueprint("activity", __name__)

#: Stored body bytes one page of activity carries at most (at least one row): inbox messages are kept whole, up
#: to 1 MiB each, and 500 of them must not become one 1 GB answer. A page cut short ends at a row the cursor
#: continues from.
PAGE_BYTES = 4 * 1024 * 1024


def _json(text: str | None) -> Any:
    """A stored body as JSON, or as the text it is when that is not strict JSON (our answers are strict JSON)."""
    if text is None:
        return None
    try:
        return strictjson.loads(text.encode())
    except ValueError:
        return text


def shape(row: dict[str, Any], at: inbox.Cursor, expire_before: float) -> dict[str, Any]:
    """An activity row as the platform's SDK reads it: ``data`` carries what its inbox needs; ``inbox_state``
    what became of an inbox message (None on other rows)."""
    b = box()
    request_body = _json(row["request_body"])
    source = row["source_id"]
    peer = b.supervisor.record(source) if source else None
    text = message_text(request_body) if isinstance(request_body, dict) else ""
    if not text and row["method"] == "notify":
        response = _json(row["response_body"])
        text = response.get("result", "") if isinstance(response, dict) else ""
    return {
        "id": row["id"],
        "type": row["activity_type"],
        "activity_type": row["activity_type"],
        "workspace_id": row["workspace_id"],
        "source_id": source,
        "target_id": row["target_id"],
        "method": row["method"],
        "summary": row["summary"],
        "status": row["status"],
        "duration_ms": row["duration_ms"],
        "error_detail": row["error_detail"],
        "request_body": request_body,
        "response_body": _json(row["response_body"]),
        "created_at": rfc3339(row["created_at"]),
        "inbox_state": inbox.state(row, at, expire_before),
        "data": {
            "source": "canvas_user" if source is None else "peer_agent",
            "text": text,
            "message": text,
            "peer_name": peer.name if peer else None,
            "peer_role": peer.role if peer else None,
            "agent_card_url": f"{request.host_url.rstrip('/')}/registry/discover/{source}" if source else None,
        },
    }


@route(bp, "/workspaces/<raw_id>/activity", "GET", auth="workspace",
       summary="Activity of a workspace; with type=a2a_receive its poll inbox (oldest first after since_id)",
       query={"type": "activity type", "source": "canvas or agent", "limit": "1-500, default 100",
              "since_id": "cursor: rows after this id, oldest first (410 when pruned)",
              "peer_id": "only rows from this workspace", "before_ts": "RFC 3339: only older rows"},
       responses={200: "A list of rows", 410: "The since_id cursor was pruned: reset it"}, load="live")
async def list_activity(call: Call[None]) -> Any:
    b = box()
    wid, principal = call.workspace_id, call.principal
    source = request.args.get("source") or None
    if source not in (None, "canvas", "agent"):
        raise BadRequest("source must be canvas or agent")
    limit = query_int("limit", 100, low=1, high=500)
    since_id = request.args.get("since_id")
    since = None
    if since_id:
        since = query_int("since_id", 0, low=0, high=2**62)
        if since and since <= activity_rows.pruned_below(b.store.db) and not activity_rows.exists(b.store.db, since):
            raise Gone("activity cursor was pruned; reset since_id", code="cursor_pruned")
    before = None
    raw_before = request.args.get("before_ts")
    if raw_before:
        try:
            before = datetime.fromisoformat(raw_before.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadRequest("before_ts must be an RFC 3339 timestamp") from None
    activity_type = request.args.get("type") or None
    peer_id = request.args.get("peer_id") or None
    at = inbox.cursor(b.store.db, wid)
    expire_before = inbox.expire_before(b.settings.inbox_ttl_days, time.time())
    # The agent's own inbox poll (store/inbox.py): without since_id it resumes after the last row it confirmed,
    # oldest first; its since_id confirms the rows up to it. Every other read keeps its meaning.
    polling = not principal.is_admin and activity_type == "a2a_receive" and not (source or peer_id or before)
    rows = activity_rows.query(
        b.store.db, wid, activity_type=activity_type, since_id=at.taken_through if polling and since is None
        else since, before_ts=before, peer_id=peer_id, source=source, limit=limit,
        # An agent polling its own inbox never gets back what it sent itself (no self-echo loop).
        exclude_source=None if principal.is_admin else wid,
        newest_first=source is not None,
        expired=(at.fetched_through, expire_before) if polling else None)
    page: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        size += len(row["request_body"] or "") + len(row["response_body"] or "")
        if page and size > PAGE_BYTES:
            break
        page.append(row)
    if polling:
        fetched = page[-1]["id"] if page else 0
        if fetched > at.fetched_through or (since or 0) > at.taken_through:
            await b.store.write(inbox.advance(wid, fetched=fetched, taken=since or 0, expire_before=expire_before))
            was, at = at, inbox.cursor(b.store.db, wid)
            for row in page:  # handed to the agent for the first time: fetched
                if row["inbox"] == "open" and was.fetched_through < row["id"] <= at.fetched_through:
                    b.bus.publish(b.bus.make(inbox.EVENT, wid, inbox.event_payload(
                        wid, row["id"], "fetched", row["source_id"])))
    return respond([shape(row, at, expire_before) for row in page])


@route(bp, "/workspaces/<raw_id>/activity", "POST", auth="workspace", body=ReportActivity, load="live",
       summary="An agent reports an activity of its own", responses={200: "{status, id}", 403: "source_id spoof"})
async def report_activity(call: Call[ReportActivity]) -> Any:
    b = box()
    wid, body = call.workspace_id, call.body
    if body.source_id is not None and body.source_id != wid:
        raise Forbidden("source_id must be the reporting workspace")
    row_id = await b.store.write(activity_rows.insert(
        workspace_id=wid, activity_type=body.activity_type, source_id=wid, target_id=body.target_id,
        method=body.method, summary=body.summary, request_body=body.request_body, response_body=body.response_body,
        status=body.status, duration_ms=body.duration_ms, error_detail=body.error_detail))
    b.bus.publish(b.bus.make("ACTIVITY_LOGGED", wid, {
        "activity_type": body.activity_type, "method": body.method, "summary": body.summary,
        "status": body.status, "source_id": wid, "target_id": body.target_id, "duration_ms": body.duration_ms}))
    return respond({"status": "logged", "id": row_id})


@route(bp, "/workspaces/<raw_id>/notify", "POST", auth="workspace", body=Notify, load="live",
       summary="An agent pushes a message to its user", responses={200: "{status: sent}", 404: "Removed"})
async def notify(call: Call[Notify]) -> Any:
    b = box()
    wid, body, ws = call.workspace_id, call.body, call.ws
    attachments = [a.model_dump(exclude_none=True) for a in body.attachments]
    response: dict[str, Any] = {"result": body.message}
    if attachments:
        response["parts"] = [{"kind": "file", "file": a} for a in attachments]
    # source_id is the agent itself: it is chat history for the user, never an inbox message for the agent.
    log_row = activity_rows.insert(
        workspace_id=wid, activity_type="a2a_receive", source_id=wid, target_id=wid, method="notify",
        summary=body.message[:200], response_body=response, status="ok")
    answered = inbox.mark_replied(wid, None, response)  # a poll-mode agent answers its user's message this way
    _, replied = await b.store.write(lambda db: (log_row(db), answered(db)))
    if replied is not None:
        b.bus.publish(b.bus.make(inbox.EVENT, wid, inbox.event_payload(wid, replied, "replied", None)))
    payload: dict[str, Any] = {"message": body.message, "workspace_id": wid, "name": ws.name}
    if attachments:
        payload["attachments"] = attachments
    b.bus.publish(b.bus.make("AGENT_MESSAGE", wid, payload))
    return respond({"status": "sent"})


def _delegating(body: Delegate, path_id: str | None) -> str | None:
    """The platform's form (target_id in the body) delegates from the path's workspace; the SDK's form (no
    target_id) from the X-Workspace-ID caller, to the path's workspace."""
    return path_id if body.target_id is not None else None


@route(bp, "/workspaces/<raw_id>/delegate", "POST", auth="source", body=Delegate, id_from=_delegating,
       summary="Hand a task to another workspace asynchronously (idempotent by idempotency_key)",
       responses={200: "Idempotent hit", 202: "{delegation_id, status: delegated, target_id}",
                  400: "Bad body or self-delegation", 403: "Hierarchy forbids it",
                  429: "The target's queue is full (A2A_QUEUE_LIMIT)"})
async def delegate(call: Call[Delegate]) -> Any:
    b = box()
    body = call.body
    if body.target_id is not None:  # the platform's form: :id is the source
        source, target = call.workspace_id, body.target_id
    else:  # the SDK's form: :id is the target, the caller is X-Workspace-ID
        source, target = call.principal.workspace_id or "", call.workspace_id
    if source == target:
        raise BadRequest("a workspace cannot delegate to itself")
    live(source)
    live(target)
    if not can_communicate(b.supervisor.record, source, target):
        raise Forbidden("access denied: workspaces cannot communicate per hierarchy rules")
    if body.idempotency_key:
        row = delegation_rows.by_key(b.store.db, source, target, body.idempotency_key)
        if row is not None and row["status"] != "failed":
            return respond({"delegation_id": row["id"], "status": row["status"], "target_id": target,
                            "idempotent_hit": True})
        if row is not None:
            await b.store.write(delegation_rows.delete(row["id"]))
    delegation_id = str(uuid.uuid4())
    message = {"jsonrpc": "2.0", "id": delegation_id, "method": "message/send", "params": {"message": {
        "role": "user", "messageId": delegation_id, "parts": [{"kind": "text", "text": body.task}],
        "metadata": {"delegation_id": delegation_id, "source_workspace_id": source}}}}
    encoded = json.dumps(message, separators=(",", ":")).encode()
    now = time.time()
    record = delegation_rows.insert(delegation_id, source, target, body.task, body.idempotency_key, now)
    await b.proxy.queue.put(target, source, delegation_id, "message/send", encoded,
                            {"content-type": "application/json"}, delegation_id=delegation_id, along=record)
    b.proxy.queue.request_drain(target)
    b.bus.publish(b.bus.make("DELEGATION_SENT", source, {"delegation_id": delegation_id, "target_id": target,
                                                         "task": body.task[:500]}))
    return respond({"delegation_id": delegation_id, "status": "delegated", "target_id": target}, 202)


@route(bp, "/workspaces/<raw_id>/delegations", "GET", auth="workspace",
       summary="Delegations a workspace sent or received, newest first")
async def list_delegations(call: Call[None]) -> Any:
    rows = delegation_rows.listing(box().store.db, call.workspace_id)
    return respond([{"delegation_id": r["id"], "source_id": r["source_id"], "target_id": r["target_id"],
                     "task": r["task"], "status": r["status"], "result": _json(r["result"]),
                     "created_at": rfc3339(r["created_at"]), "updated_at": rfc3339(r["updated_at"])} for r in rows])


@route(bp, "/workspaces/<raw_id>/queue", "GET", auth="workspace",
       summary="Messages queued for a busy workspace and their delivery state (molecule-box addition)")
async def list_queue(call: Call[None]) -> Any:
    rows = queue_rows.listing(box().store.db, call.workspace_id)
    return respond([{**r, "enqueued_at": rfc3339(r["enqueued_at"]), "completed_at": rfc3339(r["completed_at"])}
                    for r in rows])


@route(bp, "/workspaces/<raw_id>/inbox", "GET", auth="workspace",
       summary="A poll-mode agent's inbox: where its poll resumes, and what is waiting (molecule-box addition)",
       query={"state": "queued, fetched, replied or expired", "limit": "1-500, default 100"},
       responses={200: "{workspace_id, cursor, counts, messages (newest first)}", 400: "Unknown state"}, load="live")
async def inbox_state(call: Call[None]) -> Any:
    b = box()
    wid = call.workspace_id
    only = request.args.get("state") or None
    if only is not None and only not in inbox.STATES:
        raise BadRequest(f"state must be one of {', '.join(inbox.STATES)}")
    limit = query_int("limit", 100, low=1, high=500)
    at = inbox.cursor(b.store.db, wid)
    expire_before = inbox.expire_before(b.settings.inbox_ttl_days, time.time())
    rows = inbox.messages(b.store.db, wid, at, expire_before, only=only, limit=limit)
    return respond({
        "workspace_id": wid,
        "cursor": {"fetched_through": at.fetched_through, "taken_through": at.taken_through},
        "counts": inbox.counts(b.store.db, wid, at, expire_before),
        "messages": [{**row, "created_at": rfc3339(row["created_at"])} for row in rows]})
