"""The contract tests every backend passes (see ``docs/plugins.md``)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, ClassVar

import pytest
import trio

from ..backends import archive as ar
from ..backends.base import (
    CONTRACT_VERSION,
    Backend,
    Capabilities,
    ConfigFiles,
    FilesNotSupported,
    Workload,
    WorkloadSpec,
    WorkloadState,
    table,
)
from ..backends.loader import settings_type_of


def make_spec(**overrides: Any) -> WorkloadSpec:
    wid = str(uuid.uuid4())
    fields: dict[str, Any] = dict(
        workspace_id=wid, name=f"conformance-{wid[:8]}", runtime="conformance", tier=2,
        env={"CONFORMANCE": "1"}, platform_url="http://127.0.0.1:9", auth_token="conformance-token-" + wid[:8],
    )
    fields.update(overrides)
    return WorkloadSpec(**fields)


async def wait_for_state(backend: Backend, handle: dict[str, Any], wanted: set[WorkloadState],
                         timeout: float = 60) -> WorkloadState:
    state = WorkloadState.UNKNOWN
    with trio.move_on_after(timeout):
        while True:
            state = (await backend.inspect(handle)).state
            if state in wanted:
                return state
            await trio.sleep(0.2)
    return state


class BackendConformance:
    """Subclass in your tests and provide a ``backend_factory`` fixture (``BackendContext -> Backend``).

    Override ``spec_overrides`` to adjust the workload spec (e.g. the runtime your test image serves).
    """

    spec_overrides: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def spec(self) -> WorkloadSpec:
        return make_spec(**self.spec_overrides)

    async def test_declares_contract(self, open_backend: Any) -> None:
        backend = await open_backend()
        assert isinstance(backend, Backend)
        assert backend.contract_version == CONTRACT_VERSION
        assert isinstance(backend.name, str) and backend.name
        assert isinstance(backend.version, str) and backend.version
        assert isinstance(backend.capabilities(), Capabilities)

    async def test_declares_its_settings(self, open_backend: Any) -> None:
        """``settings_type`` is a settings class the box can read (every field an ``option``), and the backend
        was handed an instance of it, read from ``backend_settings``' environment."""
        backend = await open_backend()
        kind = settings_type_of(type(backend))
        assert kind is not None, "settings_type must be a frozen dataclass subclassing BackendSettings"
        rows = table(kind)
        assert len(rows) == len(dataclasses.fields(kind)), "declare every settings field with option(...)"
        assert len({row.env for row in rows}) == len(rows), "one variable per field"
        context = getattr(backend, "context", None)  # BaseBackend keeps it there
        if context is not None:
            assert isinstance(context.settings, kind)

    async def test_start_reports_a_handle(self, open_backend: Any, spec: WorkloadSpec) -> None:
        backend = await open_backend()
        workload = await backend.start(spec)
        try:
            assert isinstance(workload, Workload)
            assert workload.handle.get("workspace_id") == spec.workspace_id
            if backend.capabilities().lifecycle:
                state = await wait_for_state(backend, workload.handle, {WorkloadState.RUNNING})
                assert state is WorkloadState.RUNNING
        finally:
            await backend.destroy(workload.handle)

    async def test_stop_is_idempotent(self, open_backend: Any, spec: WorkloadSpec) -> None:
        backend = await open_backend()
        workload = await backend.start(spec)
        try:
            await backend.stop(workload.handle, grace=2)
            await backend.stop(workload.handle, grace=2)
            if backend.capabilities().lifecycle:
                state = (await backend.inspect(workload.handle)).state
                assert state in (WorkloadState.STOPPED, WorkloadState.MISSING)
        finally:
            await backend.destroy(workload.handle)

    async def test_inspect_of_a_missing_workload(self, open_backend: Any) -> None:
        backend = await open_backend()
        status = await backend.inspect({"workspace_id": str(uuid.uuid4())})
        expected = {WorkloadState.MISSING} if backend.capabilities().lifecycle else {WorkloadState.UNKNOWN,
                                                                                    WorkloadState.MISSING}
        assert status.state in expected
        await backend.stop({"workspace_id": str(uuid.uuid4())}, grace=1)  # stop of nothing is fine too

    async def test_adopt_after_restart(self, open_backend: Any, spec: WorkloadSpec) -> None:
        first = await open_backend()
        workload = await first.start(spec)
        try:
            if first.capabilities().lifecycle:
                await wait_for_state(first, workload.handle, {WorkloadState.RUNNING})
            before = (await first.inspect(workload.handle)).started_at
            second = await open_backend()  # a new instance, as after a box restart
            adopted = await second.adopt(workload.handle)
            assert adopted is not None
            assert adopted.get("workspace_id") == spec.workspace_id
            if second.capabilities().lifecycle:
                status = await second.inspect(adopted)
                assert status.state is WorkloadState.RUNNING
                assert status.started_at == before, "adopt must not restart a running workload"
                assert {h["workspace_id"] for h in await second.list_managed()} >= {spec.workspace_id}
        finally:
            await first.destroy(workload.handle)

    async def test_adopt_of_a_gone_workload(self, open_backend: Any, spec: WorkloadSpec) -> None:
        first = await open_backend()
        workload = await first.start(spec)
        await first.destroy(workload.handle)
        second = await open_backend()
        adopted = await second.adopt(workload.handle)
        if second.capabilities().lifecycle:
            assert adopted is None, "a destroyed workload cannot be adopted"

    async def test_start_is_idempotent_per_workspace(self, open_backend: Any, spec: WorkloadSpec) -> None:
        backend = await open_backend()
        first = await backend.start(spec)
        second = await backend.start(spec)  # e.g. the box crashed after start, before storing the handle
        try:
            if backend.capabilities().lifecycle:
                mine = [h for h in await backend.list_managed() if h["workspace_id"] == spec.workspace_id]
                assert len(mine) == 1, f"start must replace a leftover workload, not add one: {mine}"
                assert (await wait_for_state(backend, second.handle, {WorkloadState.RUNNING})) is WorkloadState.RUNNING
        finally:
            await backend.destroy(second.handle)
            await backend.destroy(first.handle)

    async def test_restart_after_stop(self, open_backend: Any, spec: WorkloadSpec) -> None:
        """Pause/resume and restart: stop, then start again with the previous handle (volumes are kept)."""
        backend = await open_backend()
        first = await backend.start(spec)
        second = None
        try:
            await backend.stop(first.handle, grace=2)
            second = await backend.start(dataclasses.replace(spec, previous=first.handle))
            assert second.handle.get("workspace_id") == spec.workspace_id
            if backend.capabilities().lifecycle:
                assert (await wait_for_state(backend, second.handle, {WorkloadState.RUNNING})) is WorkloadState.RUNNING
        finally:
            await backend.destroy(second.handle if second is not None else first.handle)

    async def test_list_managed(self, open_backend: Any, spec: WorkloadSpec) -> None:
        backend = await open_backend()
        workload = await backend.start(spec)
        try:
            managed = await backend.list_managed()
            assert all("workspace_id" in handle for handle in managed)
            if backend.capabilities().lifecycle:
                assert spec.workspace_id in {h["workspace_id"] for h in managed}
            else:
                assert managed == []
        finally:
            await backend.destroy(workload.handle)

    async def test_destroy_leaves_nothing(self, open_backend: Any, spec: WorkloadSpec) -> None:
        backend = await open_backend()
        workload = await backend.start(spec)
        if backend.capabilities().lifecycle:
            await wait_for_state(backend, workload.handle, {WorkloadState.RUNNING})
        await backend.destroy(workload.handle)
        await backend.destroy(workload.handle)  # idempotent
        if backend.capabilities().lifecycle:
            assert (await backend.inspect(workload.handle)).state is WorkloadState.MISSING
        assert spec.workspace_id not in {h["workspace_id"] for h in await backend.list_managed()}

    async def test_config_files(self, open_backend: Any, spec: WorkloadSpec) -> None:
        """With ``Capabilities.files``: the seed lands before the start, writes (parents created) and deletes
        work on a running and on a stopped workload, and a read lists what is there. Without: the operations
        raise ``FilesNotSupported`` (the API's 501)."""
        backend: Backend = await open_backend()
        if not isinstance(backend, ConfigFiles):
            assert not backend.capabilities().files, "files=True needs the ConfigFiles methods"
            return
        if not backend.capabilities().files:
            with pytest.raises(FilesNotSupported):
                await backend.read_config_files({"workspace_id": spec.workspace_id})
            return
        seed = ar.pack([ar.Entry("config.yaml", b"name: conformance\n")])
        workload = await backend.start(dataclasses.replace(spec, seed_files=seed))

        async def files() -> dict[str, bytes | None]:
            return {m.name: m.data for m in ar.members(await backend.read_config_files(workload.handle))}

        try:
            assert (await files())["config.yaml"] == b"name: conformance\n"
            await backend.write_config_files(workload.handle, ar.pack([ar.Entry("plugins/p/a.md", b"a")]))
            assert (await files())["plugins/p/a.md"] == b"a"
            await backend.stop(workload.handle, grace=2)
            await backend.write_config_files(workload.handle, ar.pack([ar.Entry("b.txt", b"b")]))
            await backend.delete_config_files(workload.handle, ["plugins", "missing"])
            found = await files()
            assert found["b.txt"] == b"b" and "plugins/p/a.md" not in found and "plugins" not in found
            await backend.write_config_files(workload.handle, ar.pack([ar.Entry("only", b"1")]), replace=True)
            assert {name for name in await files() if name != ar.TOKEN_FILE} == {"only"}
        finally:
            await backend.destroy(workload.handle)
