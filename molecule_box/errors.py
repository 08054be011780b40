"""One error vocabulary for the whole box.

Every error a client can see is an :class:`HTTPError` subclass carrying its
status code and JSON body; ``asgi.error_response`` turns them into responses
in exactly one place. Code deeper down (actors) raises these or its own
subclasses of :class:`MoleculeBoxError`, and never catches ``trio.Cancelled``.
The store raises only its own (``store/errors.py``), which say what happened
to the rows and leave the status to the API; a backend's (``BackendError``,
``BackendNotInstalled``) belong to the backend contract, ``backends/base.py``,
which imports this module for the root and nothing else of the box.
"""

from __future__ import annotations

from typing import Any, TypeVar


class MoleculeBoxError(Exception):
    """Root of every error the box raises on purpose."""


E = TypeVar("E", bound=BaseException)


def leaves(exc: BaseException, kind: type[E]) -> list[E]:
    """The exceptions of type ``kind`` in ``exc``, however deep in exception groups (trio wraps a task's error in
    one for every nursery it passes through)."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner, kind)]
    return [exc] if isinstance(exc, kind) else []


class ConfigError(MoleculeBoxError):
    """Bad settings at start: carries one message per bad value so an operator fixes them all at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class HTTPError(MoleculeBoxError):
    """An error with an HTTP status; ``extra`` fields are merged into the JSON body beside ``error``."""

    status: int = 500
    default_message = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        self.message = message or self.default_message
        self.extra = extra
        self.headers = headers or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **self.extra}


class BadRequest(HTTPError):
    status = 400
    default_message = "bad request"


class Unauthorized(HTTPError):
    status = 401
    default_message = "unauthorized"


class PaymentRequired(HTTPError):
    status = 402
    default_message = "workspace budget limit exceeded"


class Forbidden(HTTPError):
    status = 403
    default_message = "forbidden"


class NotFound(HTTPError):
    status = 404
    default_message = "not found"


class Conflict(HTTPError):
    status = 409
    default_message = "conflict"


class Gone(HTTPError):
    status = 410
    default_message = "gone"


class PayloadTooLarge(HTTPError):
    """413. Closes the connection: the unread rest of the body must not be parsed as the next request."""

    status = 413
    default_message = "request body too large"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        super().__init__(message, headers={"Connection": "close"}, **extra)


class RequestTimeout(HTTPError):
    """408. Closes the connection: the rest of a body that stalled must not be parsed as the next request."""

    status = 408
    default_message = "request body not received in time"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        super().__init__(message, headers={"Connection": "close"}, **extra)


class TooManyRequests(HTTPError):
    status = 429
    default_message = "too many requests"


class ServiceUnavailable(HTTPError):
    """503: the box or a workspace cannot serve this now; ``retry_after`` (seconds) becomes a header too."""

    status = 503
    default_message = "service unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int | None = None, **extra: Any) -> None:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if retry_after is not None:
            extra.setdefault("retry_after", retry_after)
        super().__init__(message, headers=headers, **extra)


class NotImplementedHere(HTTPError):
    """501: the route exists, but what it needs is not there for this workspace (e.g. its backend's files)."""

    status = 501
    default_message = "not implemented"


class BadGateway(HTTPError):
    """502: the workspace's agent could not be reached (the proxy)."""

    status = 502
    default_message = "failed to reach workspace agent"


class GatewayTimeout(HTTPError):
    """504: the agent did not answer within the caller's deadline, the idle window or the ceiling."""

    status = 504
    default_message = "the agent did not answer in time"



class UnprocessableEntity(HTTPError):
    """422: the request is well formed but refused on its content (an unpinned source, an integrity check)."""

    status = 422
    default_message = "unprocessable entity"
