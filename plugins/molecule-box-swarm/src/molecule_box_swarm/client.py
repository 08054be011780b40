"""The swarm manager's API (services, tasks, secrets, configs, nodes) over the docker backend's engine bridge.

The bridge (``molecule_box.backends.docker.client``) owns the trio-asyncio loop, the aiodocker client, the
deadlines and the translation of engine failures into ``EngineError``/``EngineNotFound``/``EngineUnreachable``;
this class adds the Engine API calls a swarm needs, each the documented endpoint with its JSON body (aiodocker's
service helpers change their arguments in place and can update only the image, so the raw API is used).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from molecule_box.backends.docker.client import DockerClient


class SwarmClient:
    """Trio-facing calls to a swarm manager; concurrency-safe like the bridge under it."""

    def __init__(self, engine: DockerClient) -> None:
        self.engine = engine

    async def _json(self, path: str, method: str = "GET", *, params: dict[str, Any] | None = None,
                    body: Any = None, deadline: float | None = 30.0) -> Any:
        docker = self.engine.docker
        data = None if body is None else json.dumps(body)
        return await self.engine.run(lambda: docker._query_json(path, method, params=params, data=data),
                                     deadline=deadline)

    @staticmethod
    def _filters(filters: dict[str, list[str]]) -> dict[str, Any]:
        return {"filters": json.dumps(filters)}

    async def swarm(self) -> dict[str, Any]:
        """``GET /swarm``: answers 503 on an engine that is not a manager of a swarm."""
        return dict(await self._json("swarm", deadline=10))

    async def info(self) -> dict[str, Any]:
        return await self.engine.info()

    # -- services and tasks -------------------------------------------------------------------

    async def services(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        return list(await self._json("services", params=self._filters(filters)) or [])

    async def service(self, ref: str) -> dict[str, Any]:
        return dict(await self._json(f"services/{ref}"))

    async def create_service(self, spec: dict[str, Any]) -> str:
        return str((await self._json("services/create", "POST", body=spec))["ID"])

    async def update_service(self, ref: str, version: int, spec: dict[str, Any]) -> None:
        await self._json(f"services/{ref}/update", "POST", params={"version": version}, body=spec)

    async def delete_service(self, ref: str) -> None:
        await self._json(f"services/{ref}", "DELETE")

    async def tasks(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        return list(await self._json("tasks", params=self._filters(filters)) or [])

    async def service_logs(self, ref: str, tail: int) -> str:
        docker = self.engine.docker

        async def read() -> str:
            found = docker.services.logs(ref, stdout=True, stderr=True, tail=str(tail))
            lines = await found  # type: ignore[misc]  # not following: a coroutine of the lines
            return "".join(lines)

        return await self.engine.run(read)

    # -- secrets, nodes, networks, images -----------------------------------------------------

    async def create_secret(self, name: str, data: str, labels: dict[str, str]) -> str:
        body = {"Name": name, "Labels": labels, "Data": base64.b64encode(data.encode()).decode()}
        return str((await self._json("secrets/create", "POST", body=body))["ID"])

    async def secrets(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        return list(await self._json("secrets", params=self._filters(filters)) or [])

    async def delete_secret(self, ref: str) -> None:
        await self._json(f"secrets/{ref}", "DELETE")

    async def create_config(self, name: str, data: bytes, labels: dict[str, str]) -> str:
        body = {"Name": name, "Labels": labels, "Data": base64.b64encode(data).decode()}
        return str((await self._json("configs/create", "POST", body=body))["ID"])

    async def configs(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Configs with their data (a config, unlike a secret, is readable back)."""
        return list(await self._json("configs", params=self._filters(filters)) or [])

    async def delete_config(self, ref: str) -> None:
        await self._json(f"configs/{ref}", "DELETE")

    async def node(self, ref: str) -> dict[str, Any]:
        return dict(await self._json(f"nodes/{ref}"))

    async def down_nodes(self) -> frozenset[str]:
        """Ids of the nodes the managers see as down (or disconnected): their tasks last said what they said."""
        return frozenset(str(n.get("ID")) for n in await self._json("nodes") or []
                         if (n.get("Status") or {}).get("State") in ("down", "disconnected"))

    async def find_network(self, name: str) -> dict[str, Any] | None:
        return await self.engine.find_network(name)

    async def create_network(self, config: dict[str, Any]) -> str:
        """The new network's id (a new overlay may not be listed yet by name)."""
        return str((await self._json("networks/create", "POST", body=config))["Id"])

    async def image(self, ref: str) -> dict[str, Any]:
        return await self.engine.inspect_image(ref)
