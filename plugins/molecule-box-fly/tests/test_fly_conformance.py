"""The conformance kit of molecule-box against the flyio backend and the emulator."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from flyutil import Fly, context
from molecule_box_fly import FlyBackend

from molecule_box.backends.base import BackendContext, BackendEvent
from molecule_box.testing import BackendConformance


class TestFlyBackend(BackendConformance):
    spec_overrides: ClassVar[dict[str, Any]] = {"runtime": "langgraph"}

    @pytest.fixture
    def backend_factory(self) -> Any:
        return FlyBackend

    @pytest.fixture
    def backend_context(self, fly: Fly, conformance_box_id: str,
                        backend_events: list[BackendEvent]) -> BackendContext[Any]:
        return context(fly, conformance_box_id, backend_events)
