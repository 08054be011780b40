"""The ``controlplane`` backend: one control-plane instance per workspace, driven over the CP's HTTP API.

Routes and headers are the platform tenant's (``/cp/workspaces/provision``, ``.../status``, ``DELETE
/cp/workspaces/{id}``, ``/cp/admin/workspaces/{id}/console``); where the platform ignored an answer this backend
reads it: a deprovision is retried until the instance reads terminated, under its own deadline, and an outage
is "unknown", never "gone". Only the contract (``molecule_box.backends``) is imported.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import httpx
import trio
from molecule_box.backends.base import (
    BackendContext,
    BackendError,
    BackendEvent,
    BaseBackend,
    Capabilities,
    Handle,
    Workload,
    WorkloadSpec,
    WorkloadState,
    WorkloadStatus,
)

from . import __version__
from .settings import ControlPlaneSettings

log = logging.getLogger("molecule_box.backends.controlplane")

#: Every control-plane answer is read up to this many bytes (the console up to CONSOLE_CAP); more is an outage.
BODY_CAP = 64 * 1024
CONSOLE_CAP = 256 * 1024
#: Longest pause between two attempts of a retried call.
MAX_BACKOFF = 5.0
#: Status checks the watcher has in flight at once.
WATCH_CONCURRENCY = 8
#: What the instance states mean to the box (EC2's, as the control plane reports them).
STATES = {"running": WorkloadState.RUNNING, "pending": WorkloadState.STARTING, "stopping": WorkloadState.STOPPED,
          "terminated": WorkloadState.MISSING}


class Outage(Exception):
    """The control plane could not be asked (unreachable, too slow, 5xx, an unreadable answer): retry later."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ControlPlaneBackend(BaseBackend):
    name = "controlplane"
    version = __version__
    settings_type = ControlPlaneSettings

    def __init__(self, context: BackendContext[ControlPlaneSettings]) -> None:
        super().__init__(context)
        self.settings: ControlPlaneSettings = context.settings
        self._client = httpx.AsyncClient(base_url=self.settings.base_url, timeout=self.settings.http_timeout)
        #: Instances this box started or adopted, by workspace: the watcher reports the ones that end.
        self._watched: dict[str, Handle] = {}

    def capabilities(self) -> Capabilities:
        # The token travels in the provision's env (MOLECULE_WORKSPACE_TOKEN): the CP has no file delivery.
        return Capabilities(lifecycle=True, remote=False, tiers=frozenset({1, 2, 3, 4}), prewrites_token=False,
                            logs=True)

    # -- the wire --------------------------------------------------------------------------------

    def _headers(self, *, admin: bool) -> dict[str, str]:
        headers = {}
        bearer = self.settings.admin_bearer if admin else self.settings.bearer
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if self.settings.tenant_admin_token:
            headers["X-Molecule-Admin-Token"] = self.settings.tenant_admin_token
        return headers

    async def _call(self, method: str, path: str, *, admin: bool = False, body: Any = None,
                    params: dict[str, str] | None = None, cap: int = BODY_CAP) -> tuple[int, Any]:
        """(status, parsed JSON body or None). A 5xx, a transport error, a call past ``CP_HTTP_TIMEOUT``, a
        body over ``cap`` or one that is not JSON raise :class:`Outage`. Bodies are never logged."""
        raw = b""
        status = 0
        with trio.move_on_after(self.settings.http_timeout) as scope:
            try:
                async with self._client.stream(method, path, json=body, params=params,
                                               headers=self._headers(admin=admin)) as response:
                    status = response.status_code
                    async for chunk in response.aiter_bytes():
                        raw += chunk
                        if len(raw) > cap:
                            raise Outage(f"control plane answered {method} {path} with a body over {cap} bytes")
            except httpx.HTTPError as exc:
                raise Outage(f"control plane unreachable ({type(exc).__name__})") from None
        if scope.cancelled_caught:
            raise Outage(f"control plane did not answer {method} {path} within {self.settings.http_timeout:g} s")
        if status >= 500:
            raise Outage(f"control plane answered {method} {path} with HTTP {status}")
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise Outage(f"control plane answered {method} {path} with malformed JSON ({len(raw)} bytes)") from None

    @staticmethod
    def _refusal(what: str, status: int, body: Any) -> BackendError:
        """The error a definite refusal becomes: only the CP's ``error`` field is quoted (short), never the body."""
        error = body.get("error") if isinstance(body, dict) else None
        said = str(error)[:200] if error else f"<unstructured body, {len(str(body or ''))} bytes>"
        return BackendError(f"control plane refused the {what} (HTTP {status}): {said}")

    async def _retrying(self, what: str, fn: Any) -> Any:
        """Call ``fn`` until it returns, backing off after each :class:`Outage` (the caller's deadline ends it)."""
        delay = 0.25
        while True:
            try:
                return await fn()
            except Outage as exc:
                log.warning("control plane %s: %s; retrying in %.1f s", what, exc.reason, delay)
            await trio.sleep(delay)
            delay = min(MAX_BACKOFF, delay * 2)

    # -- lifecycle -------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            task_status.started()
            while True:
                await trio.sleep(self.settings.watch_interval)
                await self._watch_once()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await self._client.aclose()

    async def _watch_once(self) -> None:
        """Report instances that ended without the box asking (the actor confirms with inspect and applies its
        restart policy, quoting the console in a failure)."""
        limiter = trio.CapacityLimiter(WATCH_CONCURRENCY)  # one slow answer does not hold up the others

        async def check(workspace_id: str, handle: Handle) -> None:
            async with limiter:
                status = await self.inspect(handle)
            if status.state in (WorkloadState.MISSING, WorkloadState.STOPPED) and \
                    self._watched.get(workspace_id) is handle:
                del self._watched[workspace_id]
                self.context.report(BackendEvent(workspace_id=workspace_id, kind="exited",
                                                 detail="control-plane instance ended"))

        async with trio.open_nursery() as nursery:
            for workspace_id, handle in list(self._watched.items()):
                nursery.start_soon(check, workspace_id, handle)

    async def start(self, spec: WorkloadSpec) -> Workload:
        self._watched.pop(spec.workspace_id, None)
        listed = await self._retrying("list", self._list)
        leftovers = {h["instance_id"] for h in listed or [] if h["workspace_id"] == spec.workspace_id}
        if spec.previous and spec.previous.get("instance_id"):
            leftovers.add(str(spec.previous["instance_id"]))
        for instance_id in sorted(leftovers):  # replaced, never duplicated
            await self._deprovision(spec.workspace_id, instance_id)
        env = dict(spec.env)
        if spec.auth_token:
            env["MOLECULE_WORKSPACE_TOKEN"] = spec.auth_token
        body = {"org_id": self.settings.org_id or "", "workspace_id": spec.workspace_id, "runtime": spec.runtime,
                "tier": spec.tier, "platform_url": spec.platform_url, "env": env, "box_id": self.context.box_id}

        async def provision() -> tuple[int, Any]:
            return await self._call("POST", "/cp/workspaces/provision", body=body)

        status, answer = await self._retrying("provision", provision)
        instance_id = answer.get("instance_id") if isinstance(answer, dict) else None
        if status != 201:
            raise self._refusal("provision", status, answer)
        if not isinstance(instance_id, str) or not instance_id:
            raise BackendError("control plane accepted the provision without an instance_id")
        tier = answer.get("tier", spec.tier)
        handle: Handle = {"workspace_id": spec.workspace_id, "instance_id": instance_id, "tier": tier,
                          "created": time.time()}
        if tier != spec.tier:
            self.context.report(BackendEvent(workspace_id=spec.workspace_id, kind="progress",
                                             detail=f"the control plane runs tier {spec.tier} as tier {tier}"))
        self._watched[spec.workspace_id] = handle
        return Workload(handle=handle)

    async def _deprovision(self, workspace_id: str, instance_id: str) -> None:
        """DELETE until the instance reads terminated (or unknown to the CP), under ``CP_DEPROVISION_TIMEOUT``:
        a stuck shutdown is a failure the caller sees and retries, never a silent leak."""
        delay = 0.1
        with trio.move_on_after(self.settings.deprovision_timeout):
            while True:
                try:
                    status, body = await self._call("DELETE", f"/cp/workspaces/{workspace_id}",
                                                    params={"instance_id": instance_id})
                    if status == 409:
                        return  # not this workspace's instance: nothing of ours to end
                    if status >= 400 and status != 404:
                        raise self._refusal("deprovision", status, body)
                    if await self._state(workspace_id, instance_id) is WorkloadState.MISSING:
                        return
                except Outage as exc:
                    log.warning("control plane deprovision of %s: %s; retrying", instance_id, exc.reason)
                await trio.sleep(delay)
                delay = min(MAX_BACKOFF, delay * 2)
        raise BackendError(f"control plane did not terminate instance {instance_id} within "
                           f"{self.settings.deprovision_timeout:g} s")

    async def _status(self, workspace_id: str, instance_id: str) -> tuple[WorkloadState, Any]:
        status, body = await self._call("GET", f"/cp/workspaces/{workspace_id}/status",
                                        params={"instance_id": instance_id})
        if status in (404, 409):
            return WorkloadState.MISSING, body
        if status >= 300 or not isinstance(body, dict):
            raise Outage(f"control plane answered the status with HTTP {status}")
        return STATES.get(str(body.get("state")), WorkloadState.UNKNOWN), body

    async def _state(self, workspace_id: str, instance_id: str) -> WorkloadState:
        return (await self._status(workspace_id, instance_id))[0]

    async def stop(self, handle: Handle, *, grace: float = 10.0) -> None:
        # An instance cannot be paused: stopping is terminating; a later start provisions a new one.
        self._watched.pop(handle["workspace_id"], None)
        if handle.get("instance_id"):
            await self._deprovision(handle["workspace_id"], str(handle["instance_id"]))

    async def destroy(self, handle: Handle) -> None:
        """Deprovision the handle's instance and any other the control plane lists for the workspace (a handle
        the box never stored: its start was cut short after the provision)."""
        await self.stop(handle)
        try:
            listed = await self._list()
        except Outage as exc:
            raise BackendError(exc.reason) from None
        for other in listed or []:
            if other["workspace_id"] == handle["workspace_id"]:
                await self._deprovision(other["workspace_id"], other["instance_id"])

    async def inspect(self, handle: Handle) -> WorkloadStatus:
        if not handle.get("instance_id"):
            return WorkloadStatus(WorkloadState.MISSING, detail="no instance provisioned")
        try:
            state, body = await self._status(handle["workspace_id"], str(handle["instance_id"]))
        except Outage as exc:
            return WorkloadStatus(WorkloadState.UNKNOWN, detail=exc.reason)
        launched = body.get("launched_at") if isinstance(body, dict) else None
        return WorkloadStatus(state, detail=f"instance {handle['instance_id']}",
                              started_at=launched if isinstance(launched, (int, float)) else None)

    async def adopt(self, handle: Handle) -> Handle | None:
        adopted = await super().adopt(handle)
        if adopted is not None and adopted.get("instance_id"):
            self._watched[adopted["workspace_id"]] = adopted
        return adopted

    async def _list(self) -> list[Handle] | None:
        """The box's live instances; None when the control plane has no such listing (it is the box's addition,
        answered 404 or 405 by a control plane without it): start then replaces only the previous instance."""
        status, body = await self._call("GET", "/cp/admin/workspaces", admin=True,
                                        params={"org_id": self.settings.org_id or "", "box_id": self.context.box_id})
        if status in (404, 405):
            return None
        rows = body.get("instances") if isinstance(body, dict) else None
        if status != 200 or not isinstance(rows, list):
            raise self._refusal("instance list", status, body)
        return [{"workspace_id": str(row["workspace_id"]), "instance_id": str(row["instance_id"]),
                 "tier": row.get("tier"), "created": row.get("launched_at")}
                for row in rows if isinstance(row, dict) and row.get("state") != "terminated"
                and row.get("workspace_id") and row.get("instance_id")]

    async def list_managed(self) -> list[Handle]:
        try:
            listed = await self._list()
        except Outage as exc:
            raise BackendError(exc.reason) from None
        if listed is None:
            raise BackendError("this control plane does not list instances (GET /cp/admin/workspaces)")
        return listed

    async def logs(self, handle: Handle, *, tail: int = 100) -> str:
        """The instance's serial console (the EC2 console output), best effort: a failure reads as no output."""
        try:
            status, body = await self._call("GET", f"/cp/admin/workspaces/{handle['workspace_id']}/console",
                                            admin=True, cap=CONSOLE_CAP)
        except Outage:
            return ""
        output = body.get("output") if isinstance(body, dict) and status == 200 else None
        if not isinstance(output, str):
            return ""
        return "\n".join(output.splitlines()[-tail:]) if tail > 0 else ""


