"""The conformance kit of molecule-box against the swarm backend on the session's real swarm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from molecule_box_swarm import SwarmBackend
from swarmutil import RUNTIME, Swarm, swarm_env

from molecule_box.config import Settings
from molecule_box.testing import BackendConformance


class TestSwarmBackend(BackendConformance):
    spec_overrides: ClassVar[dict[str, Any]] = {"runtime": RUNTIME}

    @pytest.fixture
    def backend_factory(self) -> Any:
        return SwarmBackend

    @pytest.fixture
    def backend_settings(self, tmp_path: Path, swarm: Swarm) -> Settings:
        return Settings.from_mapping({"MOLECULE_BOX_DATA": str(tmp_path), "ADMIN_TOKEN": "conformance-admin-token",
                                      **swarm_env(swarm)}, environ={})

    @pytest.fixture(autouse=True)
    def _cleanup(self, swarm: Swarm, conformance_box_id: str) -> Iterator[None]:
        yield
        swarm.remove_box(conformance_box_id)
