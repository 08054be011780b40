"""Forwarding a call to its agent: the vetted address, the keep-alive pools, the deadlines, and the reply
streamed back as it arrives. Queued deliveries reach agents through the same vetting and pools."""

from __future__ import annotations

import ipaddress
import logging
import math
from urllib.parse import urlsplit

import trio

from ..asgi import Receive, Send, send_json
from ..config import Settings
from ..errors import BadGateway, GatewayTimeout
from ..models import Event, Workspace
from ..security.ssrf import UnsafeAgentURL, resolve_checked, split_agent_url
from .activity import ActivityLog
from .admission import Admission
from .client import Pools, UpstreamError, UpstreamResponse
from .normalize import HOP_BY_HOP, Normalized, agent_error
from .route import Queue, Refuse, when_busy

log = logging.getLogger(__name__)

BOX_ASSIGNED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"))
ERROR_BODY_LIMIT = 64 * 1024
CAPTURE_LIMIT = 64 * 1024
AGENT_CEILING = 30 * 60.0
RESOLVE_TTL = 30.0
IDLE_BUMP_EVERY = 1.0
#: A reply up to this size is written to the caller inside the call's work slot (the socket buffer takes it
#: without waiting on the client); a bigger one leaves the slot first.
SEND_IN_SLOT = 64 * 1024

Vetted = tuple[str, str, int, str, str]


class Forwarder:
    def __init__(self, settings: Settings, activity: ActivityLog) -> None:
        self._settings = settings
        self._activity = activity
        self.pools = Pools()
        self._vetted: dict[tuple[str, bool], tuple[float, Vetted]] = {}
        #: In-flight calls per target: their idle scopes and idle windows, bumped by the target's events.
        self._inflight: dict[str, dict[trio.CancelScope, float]] = {}
        self._bumped: dict[str, float] = {}

    def on_event(self, event: Event) -> None:
        """A sign of life from a target pushes back the idle deadline of every call in flight to it.

        At most once per IDLE_BUMP_EVERY per target (the window gets that much slack in exchange):
        bumping on every event is O(calls in flight) per event, so O(n^2) when n calls finish
        together, each finished call publishing its own ACTIVITY_LOGGED."""
        workspace_id = event.workspace_id or ""
        calls = self._inflight.get(workspace_id)
        if not calls:
            return
        now = trio.current_time()
        if now < self._bumped.get(workspace_id, -math.inf) + IDLE_BUMP_EVERY:
            return
        self._bumped[workspace_id] = now
        for scope, idle in calls.items():
            deadline = now + idle + IDLE_BUMP_EVERY
            if scope.deadline < deadline:
                scope.deadline = deadline

    async def resolve(self, url: str, *, box_assigned: bool = False) -> Vetted:
        """(scheme, vetted address, port, host name, path): DNS re-resolved (cached briefly), SSRF-checked.

        The whole answer is cached per URL for RESOLVE_TTL (a literal-IP URL is pure parsing and policy,
        a host name's address is re-resolved after that), so the hot path skips urlsplit, ipaddress
        parsing and the network checks on all but the first call of each window."""
        vetted = self._vetted_now(url, box_assigned)
        if vetted is not None:
            return vetted
        now = trio.current_time()
        host, port = split_agent_url(url)
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        allowed = self._settings.allow_agent_networks
        if box_assigned:
            # A URL the box's own backend assigned (a container port on 127.0.0.1) is trusted for loopback and
            # private ranges; link-local, metadata and the like stay refused.
            allowed = (*allowed, *BOX_ASSIGNED_NETWORKS)
        addresses = await resolve_checked(host, port, allowed)
        vetted = (parts.scheme, str(addresses[0]), port, host, path)
        if len(self._vetted) > 4096:
            self._vetted.clear()
        self._vetted[(url, box_assigned)] = (now + RESOLVE_TTL, vetted)
        return vetted

    def _vetted_now(self, url: str, box_assigned: bool) -> Vetted | None:
        """The cached answer of :meth:`resolve`, if still fresh (keyed with the policy it passed)."""
        cached = self._vetted.get((url, box_assigned))
        return cached[1] if cached is not None and cached[0] > trio.current_time() else None

    def _idle_window(self, ws: Workspace) -> float:
        meta = ws.runtime_metadata if isinstance(ws.runtime_metadata, dict) else {}
        custom = meta.get("idle_timeout_seconds")
        return float(custom) if isinstance(custom, (int, float)) and custom > 0 else \
            self._settings.a2a_idle_timeout_seconds

    async def call(self, receive: Receive, send: Send, ws: Workspace, caller: str | None,
                   norm: Normalized, headers: list[tuple[bytes, bytes]], timeout: float | None, started: float,
                   admission: Admission) -> Queue | Refuse | None:
        """Forwards the call and relays the answer (None); a connection that reset or timed out before any
        answer is the agent being busy, and what becomes of the call then is returned for the caller to act on."""
        try:
            vetted = self._vetted_now(ws.url or "", ws.url_from_backend)
            if vetted is None:  # a DNS lookup may wait: not in a work slot
                admission.leave()
                vetted = await self.resolve(ws.url or "", box_assigned=ws.url_from_backend)
                await admission.enter()
            scheme, address, port, host, path = vetted
        except UnsafeAgentURL as exc:
            raise BadGateway(
                f"workspace URL is not allowed: {exc.message.removeprefix('agent URL refused: ')}") from None
        now = trio.current_time()
        hard = min(now + timeout if timeout else math.inf, now + AGENT_CEILING if caller else math.inf)
        idle = self._idle_window(ws)
        idle_scope = trio.CancelScope(deadline=now + idle)
        calls = self._inflight.setdefault(ws.id, {})
        calls[idle_scope] = idle
        status, captured, error, response_started = 502, bytearray(), None, False
        try:
            with trio.CancelScope(deadline=hard) as hard_scope, idle_scope:
                pool = self.pools.get(scheme, address, port, host)
                # The pool leaves the work slot before it waits on the network (connect, the agent's answer).
                async with pool.post(path, headers, norm.body, waiting=admission.leave) as resp:
                    await admission.enter()
                    status = resp.status
                    if status >= 300:
                        body = await resp.read(ERROR_BODY_LIMIT)
                        captured += body
                        error = agent_error(status, body)
                        await send_json(send, status, {"error": error})
                        response_started = True
                    else:
                        response_started = True
                        await self._relay(send, receive, resp, idle_scope, idle, captured, admission)
            if not response_started:
                cause = "X-Timeout deadline" if hard_scope.cancelled_caught and timeout else (
                    "30 min agent-to-agent ceiling" if hard_scope.cancelled_caught else f"idle {idle:g}s")
                error = f"the agent did not answer in time ({cause})"
                status = 504
                raise GatewayTimeout(error)
            return None
        except UpstreamError as exc:
            admission.leave()  # what follows waits (a commit, our client)
            error = exc.detail
            if exc.response_started or response_started:
                log.warning("workspace %s: response cut mid-stream: %s", ws.id, exc.detail)
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                return None
            if exc.kind in ("reset", "timeout"):
                busy = when_busy(ws, norm.message_id, exc.detail)
                status = 202 if isinstance(busy, Queue) else busy.error.status
                return busy
            status = 502
            log.warning("workspace %s: cannot reach the agent: %s", ws.id, exc.detail)
            raise BadGateway(exc.detail if exc.kind == "tls" else None, delivery_confirmed=False) from None
        finally:
            calls.pop(idle_scope, None)
            if not calls:
                self._inflight.pop(ws.id, None)
                self._bumped.pop(ws.id, None)
            self._activity.call(ws, caller, norm, status, bytes(captured), started, error)

    async def _relay(self, send: Send, receive: Receive, resp: UpstreamResponse, idle_scope: trio.CancelScope,
                     idle: float, captured: bytearray, admission: Admission) -> None:
        out_headers = [(k, v) for k, v in resp.headers if k not in HOP_BY_HOP]
        length = resp.header(b"content-length")
        if length is not None:
            out_headers.append((b"content-length", length))
        streaming = length is None
        if not streaming:
            body = await resp.read(10 * 1024 * 1024)
            if len(body) > SEND_IN_SLOT:
                admission.leave()  # a big reply may wait on a slow client
            captured += body[:CAPTURE_LIMIT]
            await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
            await send({"type": "http.response.body", "body": body})
            return
        admission.leave()  # a stream waits on the agent between events
        await send({"type": "http.response.start", "status": resp.status, "headers": out_headers})
        # A stream: pass chunks on as they arrive, and stop the upstream call if our client goes away.
        async with trio.open_nursery() as nursery:
            async def watch_client() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_client)
            async for chunk in resp.chunks():
                idle_scope.deadline = max(idle_scope.deadline, trio.current_time() + idle)
                if len(captured) < CAPTURE_LIMIT:
                    captured += chunk[:CAPTURE_LIMIT - len(captured)]
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            nursery.cancel_scope.cancel()
