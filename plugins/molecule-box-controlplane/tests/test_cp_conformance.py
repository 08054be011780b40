"""The backend contract's conformance kit (``molecule_box.testing``) against the control-plane emulator."""

from __future__ import annotations

from typing import Any

import pytest
from cp_support import RunningEmulator, cp_env
from molecule_box.backends.base import BackendContext, BackendEvent
from molecule_box.backends.options import parse
from molecule_box.testing import BackendConformance

from molecule_box_controlplane.backend import ControlPlaneBackend
from molecule_box_controlplane.settings import ControlPlaneSettings


class TestControlPlaneBackend(BackendConformance):
    @pytest.fixture
    def backend_factory(self) -> Any:
        return ControlPlaneBackend

    @pytest.fixture
    def backend_context(self, conformance_box_id: str, backend_events: list[BackendEvent],
                        emulator: RunningEmulator) -> BackendContext[ControlPlaneSettings]:
        """The backend's own settings read from the emulator's environment, as the box reads them."""
        problems: list[str] = []
        settings = parse(ControlPlaneSettings, cp_env(emulator), problems)
        assert not problems, problems
        return BackendContext(box_id=conformance_box_id, settings=settings, report=backend_events.append,
                              platform_url="http://127.0.0.1:9", bind_addr="127.0.0.1")
