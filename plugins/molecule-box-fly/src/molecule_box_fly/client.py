"""A small client of the Fly Machines API: every non-2xx answer is a typed outcome, never ignored.

The platform's provisioner read only the create's status and took every other answer (a 5xx, a decode error)
as "not found"; here a transport error or a 5xx is :class:`Unavailable` ("cannot tell, retry"), a 404 is
:class:`NotFound`, and any other non-2xx is :class:`Refused` carrying Fly's ``{error}`` text.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import trio

log = logging.getLogger("molecule_box_fly")

#: Longest ``/wait`` Fly serves (seconds); longer waits are re-issued.
WAIT_MAX = 60


class FlyFailure(Exception):
    """A Machines API call did not succeed."""

    def __init__(self, status: int | None, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class Unavailable(FlyFailure):
    """Transport error or 5xx: the API could not answer; the state of the machine is unknown."""


class NotFound(FlyFailure):
    """404: no such machine (or app)."""


class Refused(FlyFailure):
    """Any other non-2xx: Fly understood and said no (capacity, a held lease, a bad config)."""


def authorization(token: str) -> str:
    """``FlyV1 <macaroon>`` as it is (what ``fly tokens create`` prints), anything else as a bearer token."""
    return token if token.startswith("FlyV1 ") else f"Bearer {token}"


def error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        if parts:
            return ": ".join(parts)[:300]
    return f"HTTP {response.status_code}"


class MachinesClient:
    """One app's ``/apps/{app}/machines`` API. Concurrency-safe: one pooled httpx client."""

    def __init__(self, base_url: str, app: str, token: str, timeout: float) -> None:
        self.prefix = f"/apps/{app}/machines"
        self.timeout = timeout
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout,
                                      headers={"Authorization": authorization(token)},
                                      limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.http.aclose()

    async def call(self, method: str, path: str = "", *, json: Any = None, params: dict[str, Any] | None = None,
                   timeout: float | None = None, headers: dict[str, str] | None = None) -> Any:
        """The decoded JSON body of a 2xx answer (None when empty); raises a :class:`FlyFailure` otherwise."""
        url = self.prefix + path
        try:
            response = await self.http.request(method, url, json=json, params=params, headers=headers,
                                               timeout=timeout if timeout is not None else self.timeout)
        except httpx.TransportError as exc:
            # The request (with its Authorization header) is never logged: only what failed.
            raise Unavailable(None, f"Machines API unreachable ({type(exc).__name__})") from None
        if response.status_code >= 500:
            raise Unavailable(response.status_code, f"Machines API error {response.status_code}: "
                                                    f"{error_text(response)}")
        if response.status_code == 404:
            raise NotFound(404, error_text(response))
        if response.status_code >= 300:
            raise Refused(response.status_code, error_text(response))
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise Unavailable(response.status_code, "Machines API answered a body that is not JSON") from None

    async def wait(self, machine_id: str, state: str, *, instance_id: str | None = None,
                   timeout: int = WAIT_MAX) -> bool:
        """One ``/wait`` long-poll: True when the machine reached ``state``, False on Fly's 408 (keep waiting)."""
        params: dict[str, Any] = {"state": state, "timeout": min(timeout, WAIT_MAX)}
        if instance_id:
            params["instance_id"] = instance_id
        try:
            await self.call("GET", f"/{machine_id}/wait", params=params, timeout=self.timeout + min(timeout, WAIT_MAX))
        except Refused as exc:
            if exc.status == 408:
                return False
            raise
        return True
