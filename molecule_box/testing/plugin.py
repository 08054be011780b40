"""pytest plugin (entry point ``pytest11: molecule_box``): fixtures for the backend conformance kit."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from ..backends.base import Backend, BackendContext, BackendEvent, BackendSettings
from ..backends.loader import settings_type_of
from ..config import Settings


@pytest.fixture
def conformance_box_id() -> str:
    """A fresh box id per test, so workloads of different tests never look like each other's."""
    return "ct" + secrets.token_hex(5)


@pytest.fixture
def backend_events() -> list[BackendEvent]:
    return []


@pytest.fixture
def backend_settings(tmp_path: Any) -> Settings:
    """Settings handed to the backend; override to point it at your engine or emulator."""
    return Settings.from_mapping({"MOLECULE_BOX_DATA": str(tmp_path), "ADMIN_TOKEN": "conformance-admin-token"},
                                 environ={})


@pytest.fixture
def backend_context(conformance_box_id: str, backend_settings: Settings, backend_events: list[BackendEvent],
                    backend_factory: Callable[[BackendContext[Any]], Backend]) -> BackendContext[Any]:
    """The context the box would hand the backend: its own settings read from ``backend_settings``' environment
    (its defaults when it is not installed as an entry point), and the box's address."""
    kind = settings_type_of(backend_factory) or BackendSettings
    own = next((found for found in backend_settings.backends.values() if isinstance(found, kind)), kind())
    return BackendContext(box_id=conformance_box_id, settings=own, report=backend_events.append,
                          platform_url=backend_settings.platform_url, bind_addr=backend_settings.bind_addr)


@pytest.fixture
async def open_backend(nursery: trio.Nursery, backend_factory: Callable[[BackendContext[Any]], Backend],
                       backend_context: BackendContext[Any]) -> AsyncIterator[Callable[[], Any]]:
    """Start a backend instance (its ``serve`` in the test's nursery); call again to simulate a box restart."""
    scopes: list[trio.CancelScope] = []

    async def start() -> Backend:
        backend = backend_factory(backend_context)

        async def run(task_status: trio.TaskStatus[None]) -> None:
            with trio.CancelScope() as scope:
                scopes.append(scope)
                await backend.serve(task_status=task_status)

        with trio.fail_after(60):
            await nursery.start(run)
        return backend

    yield start
    for scope in scopes:
        scope.cancel()
