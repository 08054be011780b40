"""pytest plugin (entry point ``pytest11: molecule_box``): fixtures for the backend conformance kit."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from ..backends.base import Backend, BackendContext, BackendEvent
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
def backend_context(conformance_box_id: str, backend_settings: Settings,
                    backend_events: list[BackendEvent]) -> BackendContext:
    return BackendContext(box_id=conformance_box_id, settings=backend_settings, report=backend_events.append)


@pytest.fixture
async def open_backend(nursery: trio.Nursery, backend_factory: Callable[[BackendContext], Backend],
                       backend_context: BackendContext) -> AsyncIterator[Callable[[], Any]]:
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
