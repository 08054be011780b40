"""A2A request/response shaping as plain functions (no I/O).

Both protocol generations (A2A 0.3 and 1.x) go through unchanged:
method names are never whitelisted; the box only adds what the platform
guarantees (JSON-RPC envelope, ``params.message.messageId``) and reads the
few fields it needs (method, message id, text) from either generation's shape.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from .. import strictjson
from ..errors import BadRequest

#: Request headers forwarded to the agent: the protocol's own, nothing identifying the caller's credentials.
FORWARDED_HEADERS = (b"content-type", b"accept", b"a2a-version", b"a2a-extensions")
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
              b"proxy-authorization", b"proxy-authenticate", b"content-length"}



@dataclass(frozen=True)
class Normalized:
    body: bytes
    method: str
    message_id: str | None
    payload: dict[str, Any]


def normalize(raw: bytes) -> Normalized:
    """Validate and complete a caller's A2A body; returns the exact bytes to forward.

    The body is forwarded byte for byte when nothing had to be added, so an
    agent sees precisely what its caller sent.
    """
    try:
        payload = strictjson.loads(raw)  # stored for the inbox and the queue, and re-emitted: strict JSON only
    except ValueError as exc:
        raise BadRequest(f"invalid JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise BadRequest("A2A body must be a JSON object")
    changed = False
    if "jsonrpc" not in payload:
        payload = {"jsonrpc": "2.0", "id": str(uuid.uuid4()), "method": payload.get("method"),
                   "params": payload.get("params")}
        changed = True
    method = payload.get("method")
    if not isinstance(method, str) or not method:
        raise BadRequest("A2A body needs a JSON-RPC method")
    params = payload.get("params")
    message_id: str | None = None
    if isinstance(params, dict) and isinstance(params.get("message"), dict):
        message = params["message"]
        mid = message.get("messageId")
        if not isinstance(mid, str) or not mid:
            message["messageId"] = mid = str(uuid.uuid4())
            changed = True
        message_id = mid
    body = json.dumps(payload, separators=(",", ":")).encode() if changed else raw
    return Normalized(body, method, message_id, payload)


def message_text(payload: dict[str, Any]) -> str:
    """The text parts of a JSON-RPC request's message, in either generation's shape (whole: it is what a
    poll-mode agent reads from its inbox)."""
    params = payload.get("params")
    message = params.get("message") if isinstance(params, dict) else None
    if not isinstance(message, dict):
        return ""
    texts = []
    for part in message.get("parts") or message.get("content") or []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):  # 0.3 {"kind": "text", "text"}; 1.x {"text"}
            texts.append(part["text"])
        elif isinstance(part.get("root"), dict) and isinstance(part["root"].get("text"), str):
            texts.append(part["root"]["text"])
    return "\n".join(texts)


def agent_error(status: int, body: bytes) -> str:
    """The error text the platform returns for an agent's non-2xx: its ``error`` string, else the status text."""
    from http import HTTPStatus

    try:
        parsed = strictjson.loads(body)
        if isinstance(parsed, dict):
            err = parsed.get("error")
            if isinstance(err, str) and err:
                return err
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                return str(err["message"])
    except ValueError:
        pass
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"agent answered HTTP {status}"


def summarize(method: str, target_name: str) -> str:
    return f"{method} → {target_name}"[:500]


def caller_timeout(raw: str | None) -> float | None:
    """``X-Timeout: <seconds>`` as a positive float, or None (absent); 400 when it is not a number."""
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest("X-Timeout must be a number of seconds") from None
    if not value > 0 or value != value:
        raise BadRequest("X-Timeout must be positive")
    return min(value, 24 * 3600.0)


# -- a poll-mode target's answers in the caller's protocol (docs/design.md, "Poll mode") ----------------------

#: Methods the box answers itself for a poll-mode target (it has no URL to forward them to).
GET_TASK_METHODS = ("tasks/get", "GetTask")
STREAM_METHODS = ("message/stream", "SendStreamingMessage")
#: What an A2A client may send a poll-mode agent: a message (its inbox holds messages, not task operations).
SEND_METHODS = ("message/send", "SendMessage", *STREAM_METHODS)
#: A poll inbox message's state (store/inbox.py) as the A2A task state its sender reads.
TASK_STATES = {"queued": "submitted", "fetched": "working", "replied": "completed", "expired": "failed"}
TASK_PREFIX = "inbox-"


def speaks_a2a(version: str | None) -> bool:
    """Whether a caller is an a2a-sdk client. Both generations' clients send ``A2A-Version`` (1.x "1.0", its 0.3
    transport "0.3"); the platform's canvas and SDK send none and keep the platform's 202 answer."""
    return bool(version and version.strip())


def generation(method: str) -> str:
    """"0.3" for the slash-separated method names (``message/send``), "1" for 1.x's (``SendMessage``)."""
    return "0.3" if "/" in method else "1"


def inbox_task_id(row_id: int) -> str:
    return f"{TASK_PREFIX}{row_id}"


def inbox_row_id(task_id: Any) -> int | None:
    """The inbox row a task id of ours names (None for any other id)."""
    if not isinstance(task_id, str) or not task_id.startswith(TASK_PREFIX):
        return None
    digits = task_id[len(TASK_PREFIX):]
    return int(digits) if digits.isdigit() and len(digits) < 19 else None


def _message(payload: Any) -> dict[str, Any]:
    params = payload.get("params") if isinstance(payload, dict) else None
    message = params.get("message") if isinstance(params, dict) else None
    return message if isinstance(message, dict) else {}


def is_reply(payload: dict[str, Any]) -> bool:
    """A message whose role is the agent's: what the platform's SDK sends to answer a peer (``reply()``)."""
    return _message(payload).get("role") in ("agent", "ROLE_AGENT")


def replied_task(payload: dict[str, Any]) -> int | None:
    """The inbox row a reply names as its task (``taskId`` or ``referenceTaskIds``), if it names one of ours."""
    message = _message(payload)
    refs = message.get("referenceTaskIds")
    for task_id in [message.get("taskId"), *(refs if isinstance(refs, list) else [])]:
        if (row_id := inbox_row_id(task_id)) is not None:
            return row_id
    return None


def inbox_task(method: str, request: Any, row_id: int, state: str, reply: str | None,
               at: str | None) -> dict[str, Any]:
    """The A2A ``Task`` of a poll inbox message in the generation of ``method``: its id names the row, its
    context is the message's own (else the task id), and a replied message carries the reply as the status
    message."""
    task_id = inbox_task_id(row_id)
    context = _message(request).get("contextId")
    context_id = context if isinstance(context, str) and context else task_id
    task_state = TASK_STATES[state]
    if generation(method) == "0.3":
        status: dict[str, Any] = {"state": task_state, "timestamp": at}
        if reply is not None:
            status["message"] = {"kind": "message", "messageId": f"{task_id}-reply", "role": "agent",
                                 "parts": [{"kind": "text", "text": reply}], "taskId": task_id,
                                 "contextId": context_id}
        return {"kind": "task", "id": task_id, "contextId": context_id, "status": status}
    status = {"state": f"TASK_STATE_{task_state.upper()}", "timestamp": at}
    if reply is not None:
        status["message"] = {"messageId": f"{task_id}-reply", "role": "ROLE_AGENT", "parts": [{"text": reply}],
                             "taskId": task_id, "contextId": context_id}
    return {"id": task_id, "contextId": context_id, "status": status}


def rpc_result(payload: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC answer to ``payload``: 1.x wraps a sent message's task (``{"task": ...}``), 0.3 does not."""
    method = str(payload.get("method"))
    if generation(method) == "1" and method not in GET_TASK_METHODS:
        result = {"task": result}
    return {"jsonrpc": "2.0", "id": payload.get("id"), "result": result}


#: JSON-RPC error codes of A2A (both generations).
TASK_NOT_FOUND = -32001
UNSUPPORTED_OPERATION = -32004


def rpc_error(payload: dict[str, Any], code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": payload.get("id"), "error": {"code": code, "message": message}}
