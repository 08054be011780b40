"""Authentication tiers (reference §1), stricter where the platform failed open.

* admin: the admin token only; there is no fresh-install or dev-mode bypass.
* workspace: the workspace's own token, or the admin token.
* own: the workspace's own token only (secret values, which leave the box only to their owner).
* caller: ``X-Workspace-ID`` plus that caller's own token.
* register: own token or admin; no token only where the admin opened the SDK's bootstrap at create, and
  only until the workspace's first token (``store.tokens.bootstrap_open``).

Tokens are never logged; failures are counted in ``/metrics``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from quart import request

from ..access import SYSTEM_PREFIXES
from ..errors import Forbidden, Unauthorized
from ..security.tokens import hash_token, parse_bearer
from ..store import tokens as token_rows

#: ``last_used_at`` is refreshed at most this often per token (a write per request would double the load).
TOUCH_EVERY = 60.0


@dataclasses.dataclass(frozen=True)
class Principal:
    kind: str  # "admin" or "workspace"
    workspace_id: str | None = None
    token_id: str | None = None  # the workspace token's row, so what it opened can be ended on revoke

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


ADMIN = Principal("admin")


def bearer_from(headers: Any) -> str | None:
    return parse_bearer(headers.get("Authorization"))


def may_learn_removal(box: Any, token: str | None, workspace_id: str) -> bool:
    """Whether a token may be told that a workspace is gone: the admin's, or one (revoked on delete) that
    belonged to it, so its agent shuts down. Anyone else gets the refusal a live workspace gives."""
    return token is not None and (box.admin.check(token)
                                  or token_rows.belonged_to(box.store.db, hash_token(token), workspace_id))


async def identify(box: Any, token: str | None, *, proof_of_life: bool = True) -> Principal | None:
    """Who a presented token belongs to (admin, a live workspace) or None; marks the token used.

    A workspace's token is its agent speaking: unless the caller records liveness itself (the heartbeat),
    the request is proof of life for the workspace's actor (user asks #1)."""
    if token is None:
        return None
    if box.admin.check(token):
        return ADMIN
    row = token_rows.lookup(box.store.db, hash_token(token))
    if row is None:
        return None
    now = time.time()
    last = row["last_used_at"]
    if last is None or now - last > TOUCH_EVERY:
        box.store.submit(token_rows.touch(row["id"], now))
    if proof_of_life:
        box.supervisor.seen(row["workspace_id"])
    return Principal("workspace", row["workspace_id"], row["id"])


def _refuse(box: Any, message: str) -> Unauthorized:
    box.metrics.auth_failures.inc()
    return Unauthorized(message)


async def require_admin(box: Any, headers: Any = None) -> Principal:
    token = bearer_from(headers if headers is not None else request.headers)
    if token is None:
        raise _refuse(box, "admin auth required")
    if not box.admin.check(token):
        raise _refuse(box, "invalid admin auth token")
    return ADMIN


async def require_workspace(box: Any, workspace_id: str, *, allow_admin: bool = True,
                            headers: Any = None, proof_of_life: bool = True) -> Principal:
    token = bearer_from(headers if headers is not None else request.headers)
    if token is None:
        raise _refuse(box, "missing workspace auth token")
    principal = await identify(box, token, proof_of_life=proof_of_life)
    if principal is None or (principal.is_admin and not allow_admin) or (
        not principal.is_admin and principal.workspace_id != workspace_id
    ):
        raise _refuse(box, "invalid workspace auth token")
    return principal


async def require_caller(box: Any, *, headers: Any = None) -> Principal:
    """The ``X-Workspace-ID`` caller, proven by its own token; the admin token stands for the operator."""
    headers = headers if headers is not None else request.headers
    caller = (headers.get("X-Workspace-ID") or "").strip()
    token = bearer_from(headers)
    if caller.startswith(SYSTEM_PREFIXES):
        raise Forbidden("invalid caller ID")
    if not caller:
        if token is not None and box.admin.check(token):
            return ADMIN
        raise _refuse(box, "X-Workspace-ID header is required")
    if token is None:
        raise _refuse(box, "missing caller auth token")
    principal = await identify(box, token)
    if principal is None or (not principal.is_admin and principal.workspace_id != caller):
        raise _refuse(box, "invalid caller auth token")
    return Principal("workspace", caller) if principal.is_admin else principal
