"""Authentication tiers, stricter where the platform failed open: one :func:`authorize` for every entry point.

The quart routes (through their ``route(auth=...)`` declaration), the raw-ASGI heartbeat and the A2A proxy's
caller check all call :func:`authorize` with a plain header mapping, so a tier means the same everywhere and
every refusal is counted in ``/metrics`` (``molecule_box_auth_failures_total{tier=...}``). It lives outside
``api/`` because the proxy, a peer of the API, needs it too.

* admin: the admin token only; there is no fresh-install or dev-mode bypass.
* workspace: the workspace's own token, or the admin token.
* own: the workspace's own token only (secret values, which leave the box only to their owner).
* caller: ``X-Workspace-ID`` plus that caller's own token.
* register: own token or admin; no token only where the admin opened the SDK's bootstrap at create, and
  only until the workspace's first token (``store.tokens.bootstrap_open``).

The dashboard's session (:class:`Sessions`) stands for the admin wherever the admin token would (tiers
admin, workspace, state, and caller without ``X-Workspace-ID``), when no bearer token is presented: a
signed, expiring cookie of a session the box still holds, plus, on every request that is not a read
(``safe=False``, the default), the session's CSRF token in ``X-CSRF-Token``. A cookie alone never changes
anything.

Tokens are never logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, Protocol

from .access import SYSTEM_PREFIXES
from .errors import BadRequest, Forbidden, Unauthorized
from .models import WorkspaceStatus
from .security.tokens import hash_token, parse_bearer
from .store import tokens as token_rows
from .store import workspaces as workspace_rows

if TYPE_CHECKING:
    from .box import Box

class Headers(Protocol):
    """What :func:`authorize` reads request headers through: quart's headers, or a plain dict."""

    def get(self, key: str, /) -> str | None: ...


#: ``last_used_at`` is refreshed at most this often per token (a write per request would double the load).
TOUCH_EVERY = 60.0

#: Every tier a route may declare, as ``/openapi.json`` describes it; each is one rule in :data:`_RULES`.
AUTH_TIERS = {
    "none": "No authentication.",
    "admin": "Admin bearer token (ADMIN_TOKEN or the generated one).",
    "workspace": "The workspace's own bearer token, or the admin token.",
    "own": "The workspace's own bearer token only.",
    "caller": "X-Workspace-ID header plus that caller's own bearer token (or the admin token).",
    "state": "The workspace's own bearer token, or the admin token; after the workspace's deletion also a "
             "(revoked) token that belonged to it, which learns that it is gone (404).",
    "register": "The workspace's token or the admin token; none only for a workspace created with "
                "bootstrap 'open', until its first token or the bootstrap's expiry. After the workspace's "
                "deletion a (revoked) token that belonged to it learns that it is gone (404).",
    "source": "The delegating workspace's bearer token, or the admin token: the path's workspace when the body "
              "names target_id, else the X-Workspace-ID caller (which the admin must name too).",
}
Tier = Literal["none", "admin", "workspace", "own", "caller", "state", "register", "source"]


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a request speaks for. ``former``: a token of a deleted workspace, which may learn only that it is
    gone; ``bootstrap``: an agent registering bare through its workspace's open bootstrap."""

    kind: Literal["anonymous", "admin", "workspace", "former", "bootstrap"]
    workspace_id: str | None = None
    token_id: str | None = None  # the workspace token's row, so what it opened can be ended on revoke

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


ADMIN = Principal("admin")
ANONYMOUS = Principal("anonymous")


#: The dashboard's session cookie, and the header that carries its CSRF token on a mutating call.
SESSION_COOKIE = "mb_session"
CSRF_HEADER = "X-CSRF-Token"
#: How long a dashboard session lasts from its login.
SESSION_TTL = 12 * 3600.0
#: Sessions one box holds at once; past it a login ends the oldest.
SESSIONS_MAX = 64
#: The tiers the admin token satisfies, and so the admin's session too; ``caller`` only as the operator
#: (no ``X-Workspace-ID``: a session never speaks for a workspace), the rest never.
SESSION_TIERS = frozenset({"admin", "workspace", "state", "caller"})


@dataclasses.dataclass(frozen=True)
class Session:
    id: str
    csrf: str
    expires_at: float


class Sessions:
    """The dashboard's logins, held in memory only: a restart (with a new admin token or not) ends them all,
    and a logout ends one on the server, whatever the browser keeps.

    The cookie is ``<id>.<expiry>.<signature>``, signed with a key made at start; a cookie is good only while
    its signature holds, its expiry is ahead and its id is still held."""

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._key = secrets.token_bytes(32)
        self._held: dict[str, Session] = {}
        self._now = now

    def _sign(self, sid: str, expires: int) -> str:
        return hmac.new(self._key, f"{sid}.{expires}".encode(), hashlib.sha256).hexdigest()

    def open(self) -> tuple[str, Session]:
        """A new session and its cookie value."""
        now = self._now()
        for sid in [sid for sid, s in self._held.items() if s.expires_at <= now]:
            del self._held[sid]
        while len(self._held) >= SESSIONS_MAX:
            del self._held[next(iter(self._held))]
        expires = int(now + SESSION_TTL)
        session = Session(secrets.token_urlsafe(24), secrets.token_urlsafe(24), float(expires))
        self._held[session.id] = session
        return f"{session.id}.{expires}.{self._sign(session.id, expires)}", session

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie value proves, or None."""
        if not cookie:
            return None
        sid, _, rest = cookie.partition(".")
        expires, _, signature = rest.partition(".")
        if not expires.isdigit() or not hmac.compare_digest(signature, self._sign(sid, int(expires))):
            return None
        session = self._held.get(sid)
        if session is None or session.expires_at != float(expires) or session.expires_at <= self._now():
            return None
        return session

    def close(self, cookie: str | None) -> None:
        session = self.find(cookie)
        if session is not None:
            self._held.pop(session.id, None)


def session_cookie(headers: Headers) -> str | None:
    """The session cookie's value in a ``Cookie`` header, or None."""
    for part in (headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE:
            return value
    return None


def _session(box: Box, headers: Headers, safe: bool) -> Principal | None:
    """The admin, for a live session with (unless the request only reads) its CSRF token; None without a
    session cookie; Unauthorized for a cookie that proves nothing, or a mutating call without the token."""
    cookie = session_cookie(headers)
    if cookie is None:
        return None
    session = box.sessions.find(cookie)
    if session is None:
        raise Unauthorized("session expired or ended: log in again")
    if not safe and not hmac.compare_digest((headers.get(CSRF_HEADER) or "").encode(), session.csrf.encode()):
        raise Unauthorized(f"missing or wrong {CSRF_HEADER}")
    return ADMIN


def bearer_from(headers: Headers) -> str | None:
    return parse_bearer(headers.get("Authorization"))


def may_learn_removal(box: Box, token: str | None, workspace_id: str) -> bool:
    """Whether a token may be told that a workspace is gone: the admin's, or one (revoked on delete) that
    belonged to it, so its agent shuts down. Anyone else gets the refusal a live workspace gives."""
    return token is not None and (box.admin.check(token)
                                  or token_rows.belonged_to(box.store.db, hash_token(token), workspace_id))


def _gone(box: Box, workspace_id: str) -> bool:
    """Unknown or deleted, by its committed row (asked only of a token that failed)."""
    ws = workspace_rows.get(box.store.db, workspace_id)
    return ws is None or ws.status is WorkspaceStatus.REMOVED


async def identify(box: Box, token: str | None, *, proof_of_life: bool = True) -> Principal | None:
    """Who a presented token belongs to (admin, a live workspace) or None; marks the token used.

    A workspace's token is its agent speaking: unless the caller records liveness itself (the heartbeat,
    the register), the request is proof of life for the workspace's actor."""
    if token is None:
        return None
    if box.admin.check(token):
        return ADMIN
    row = token_rows.lookup_cached(box.store.db, box.store.token_cache, hash_token(token))
    if row is None:
        return None
    now = time.time()
    last = row["last_used_at"]
    if last is None or now - last > TOUCH_EVERY:
        row["last_used_at"] = now  # the cached row: touched once per TOUCH_EVERY, not once per commit wait
        box.store.submit(token_rows.touch(row["id"], now))
    if proof_of_life:
        box.supervisor.seen(row["workspace_id"])
    return Principal("workspace", row["workspace_id"], row["id"])


Rule = Callable[["Box", Headers, "str | None", bool], Awaitable[Principal]]


async def _admin(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool) -> Principal:
    token = bearer_from(headers)
    if token is None:
        raise Unauthorized("admin auth required")
    if not box.admin.check(token):
        raise Unauthorized("invalid admin auth token")
    return ADMIN


async def _workspace_rule(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool,
                          *, allow_admin: bool = True) -> Principal:
    token = bearer_from(headers)
    if token is None:
        raise Unauthorized("missing workspace auth token")
    principal = await identify(box, token, proof_of_life=proof_of_life)
    if principal is None or (principal.is_admin and not allow_admin) or (
        not principal.is_admin and principal.workspace_id != workspace_id
    ):
        raise Unauthorized("invalid workspace auth token")
    return principal


async def _workspace(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool) -> Principal:
    return await _workspace_rule(box, headers, workspace_id, proof_of_life)


async def _own(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool) -> Principal:
    return await _workspace_rule(box, headers, workspace_id, proof_of_life, allow_admin=False)


async def _caller(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool) -> Principal:
    """The ``X-Workspace-ID`` caller, proven by its own token; the admin token stands for the operator."""
    caller = (headers.get("X-Workspace-ID") or "").strip()
    token = bearer_from(headers)
    if caller.startswith(SYSTEM_PREFIXES):
        raise Forbidden("invalid caller ID")
    if not caller:
        if token is not None and box.admin.check(token):
            return ADMIN
        raise Unauthorized("X-Workspace-ID header is required")
    if token is None:
        raise Unauthorized("missing caller auth token")
    principal = await identify(box, token, proof_of_life=proof_of_life)
    if principal is None or (not principal.is_admin and principal.workspace_id != caller):
        raise Unauthorized("invalid caller auth token")
    return Principal("workspace", caller) if principal.is_admin else principal


async def _state(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool) -> Principal:
    assert workspace_id is not None
    try:
        return await _workspace_rule(box, headers, workspace_id, proof_of_life)
    except Unauthorized:
        if may_learn_removal(box, bearer_from(headers), workspace_id) and _gone(box, workspace_id):
            return Principal("former", workspace_id)
        raise


async def _register(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool) -> Principal:
    """Only the admin and the workspace's own (revoked) token learn that it is unknown or gone; anyone else
    gets the refusal a known workspace gives, so register is no existence check. A register is a proof of
    life of its own."""
    assert workspace_id is not None
    if bearer_from(headers) is None:
        # The SDK's bootstrap, only where the operator opened it at create (and before its first token).
        if not _gone(box, workspace_id) and token_rows.bootstrap_open(box.store.db, workspace_id, box.now()):
            return Principal("bootstrap", workspace_id)
        raise Unauthorized("missing workspace auth token")
    return await _state(box, headers, workspace_id, False)


async def _source(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool) -> Principal:
    if workspace_id is not None:
        return await _workspace_rule(box, headers, workspace_id, proof_of_life)
    principal = await _caller(box, headers, None, proof_of_life)
    if principal.workspace_id is None:
        raise BadRequest("X-Workspace-ID (the delegating workspace) is required")
    return principal


async def _none(box: Box, headers: Headers, workspace_id: str | None, proof_of_life: bool) -> Principal:
    return ANONYMOUS


_RULES: dict[str, Rule] = {"none": _none, "admin": _admin, "workspace": _workspace, "own": _own,
                           "caller": _caller, "state": _state, "register": _register, "source": _source}
assert _RULES.keys() == AUTH_TIERS.keys()


async def authorize(box: Box, tier: Tier, headers: Headers, workspace_id: str | None = None, *,
                    proof_of_life: bool = True, safe: bool = False) -> Principal:
    """The principal ``headers`` prove for ``tier`` on ``workspace_id``, or Unauthorized/Forbidden, counted.

    ``headers`` is any mapping with the canonical names (``Authorization``, ``X-Workspace-ID``): quart's
    request headers, or ``asgi.scope_headers`` of a raw-ASGI request. ``proof_of_life=False`` where the request
    records liveness itself (the heartbeat). ``safe``: the request only reads (GET), so a dashboard session
    needs no CSRF token for it."""
    try:
        if tier in SESSION_TIERS and bearer_from(headers) is None and not (
                tier == "caller" and (headers.get("X-Workspace-ID") or "").strip()):
            principal = _session(box, headers, safe)
            if principal is not None:
                return principal
        return await _RULES[tier](box, headers, workspace_id, proof_of_life)
    except (Unauthorized, Forbidden):
        box.metrics.auth_failures.labels(tier).inc()
        raise
