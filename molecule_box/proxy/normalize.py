"""A2A request/response shaping as plain functions (no I/O).

Both protocol generations go through unchanged (reference a2a-generations.md):
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
