"""The conformance kit of molecule-box against the flyio backend and the emulator."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from flyutil import APP, TOKEN, Fly
from molecule_box_fly import FlyBackend, FlySettings

from molecule_box.backends.base import BackendContext, BackendEvent
from molecule_box.testing import BackendConformance


def context(fly: Fly, box_id: str, events: list[BackendEvent] | None = None, **settings: Any) -> BackendContext[Any]:
    own = FlySettings(api_token=TOKEN, app=APP, api_base_url=fly.url, request_timeout=5, **settings)
    return BackendContext(box_id=box_id, settings=own, report=(events if events is not None else []).append,
                          platform_url="http://127.0.0.1:9", bind_addr="127.0.0.1")


class TestFlyBackend(BackendConformance):
    spec_overrides: ClassVar[dict[str, Any]] = {"runtime": "langgraph"}

    @pytest.fixture
    def backend_factory(self) -> Any:
        return FlyBackend

    @pytest.fixture
    def backend_context(self, fly: Fly, conformance_box_id: str,
                        backend_events: list[BackendEvent]) -> BackendContext[Any]:
        return context(fly, conformance_box_id, backend_events)
