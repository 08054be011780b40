"""Raw ASGI I/O shared by the API's hot routes and the A2A proxy, and the one mapping of exceptions to HTTP.

Neutral ground: the API and the proxy are peers, and both answer on raw ASGI where quart-trio costs too much
(heartbeats, proxied calls). ``error_response`` is the only place where an exception becomes a status and a
body; :mod:`molecule_box.api.errors` re-exports it for the app.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException as WerkzeugHTTPException

from .backends.archive import ArchiveTooLarge, UnsafeArchive
from .backends.base import BackendError, BackendNotInstalled, FilesNotSupported
from .errors import (
    BadRequest,
    ConfigError,
    Conflict,
    HTTPError,
    NotImplementedHere,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from .schemas import describe_error
from .store.errors import BootstrapClosed, QueueFull, StoreError, StoreUnavailable, TooManyTokens, VersionMismatch

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_HEADERS = [(b"content-type", b"application/json")]
#: Longest a request body may take to arrive, on the raw routes as on the app's (its BODY_TIMEOUT).
BODY_DEADLINE = 60.0
#: Retry-After of a write refused because the store is unavailable, and of a call refused by a full queue.
STORE_RETRY_AFTER = 5
QUEUE_FULL_RETRY_AFTER = 30


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(BODY_DEADLINE):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    raise RequestTimeout()


async def send_json(send: Send, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    payload = encode(body)
    raw_headers = [*JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _from_store(exc: StoreError) -> HTTPError | StoreError:
    """The store says what happened to the rows; this says what the client hears."""
    if isinstance(exc, QueueFull):
        return TooManyRequests(str(exc), headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER)}, queued=False,
                               queue_depth=exc.queued, retry_after=QUEUE_FULL_RETRY_AFTER)
    if isinstance(exc, TooManyTokens):
        return TooManyRequests(str(exc))
    if isinstance(exc, BootstrapClosed):  # a register that lost the race for the bootstrap, like one without any
        return Unauthorized("missing workspace auth token")
    if isinstance(exc, VersionMismatch):
        return Conflict(str(exc), current_version=exc.current)
    if isinstance(exc, StoreUnavailable):  # exc.detail is for the log, never the client
        return ServiceUnavailable(str(exc), retry_after=STORE_RETRY_AFTER, code="platform_unavailable")
    return exc  # unmapped: a 500 below, with its traceback in the log


def error_response(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, JSON body, extra headers) for any exception a handler let out."""
    if isinstance(exc, StoreError):
        exc = _from_store(exc)
    if isinstance(exc, BackendNotInstalled):
        exc = BadRequest(str(exc), code="backend_not_installed", backend=exc.name)
    if isinstance(exc, FilesNotSupported):
        exc = NotImplementedHere(exc.reason, code="files_not_supported")
    elif isinstance(exc, BackendError):  # a backend call a route waited for (file operations)
        exc = ServiceUnavailable(exc.reason, code="backend_error")
    if isinstance(exc, ArchiveTooLarge):
        exc = PayloadTooLarge(str(exc))
    elif isinstance(exc, UnsafeArchive):
        exc = BadRequest(str(exc))
    if isinstance(exc, HTTPError):
        return exc.status, exc.body(), exc.headers
    if isinstance(exc, ValidationError):
        invalid_json = any(err.get("type") == "json_invalid" for err in exc.errors())
        message = "invalid JSON body" if invalid_json else f"invalid request body: {describe_error(exc)}"
        return 400, {"error": message}, {}
    if isinstance(exc, WerkzeugHTTPException):
        status = exc.code or 500
        if status == 413:
            too_large = PayloadTooLarge()
            return status, too_large.body(), too_large.headers
        return status, {"error": (exc.description or exc.name).rstrip(".").lower()
                        if status != 404 else "not found"}, {}
    if isinstance(exc, ConfigError):  # a backend loaded at its first use refused the box's settings
        return 503, {"error": "; ".join(exc.problems), "code": "backend_misconfigured"}, {}
    if isinstance(exc, (UnicodeDecodeError, json.JSONDecodeError)):
        return 400, BadRequest("invalid JSON body").body(), {}
    log.error("unhandled error", exc_info=(type(exc), exc, exc.__traceback__))
    return 500, {"error": "internal error"}, {}


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def scope_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """The headers the box's auth check (``authz.authorize``) reads, from a raw-ASGI scope."""
    wanted = {b"authorization": "Authorization", b"x-workspace-id": "X-Workspace-ID", b"cookie": "Cookie",
              b"x-csrf-token": "X-CSRF-Token"}
    out: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = wanted.get(key)
        if name is not None:
            out[name] = value.decode("latin-1")
    return out
