"""The built-in ``docker`` backend passes the conformance kit against a real engine, found through its entry
point, on the host network (how CI runs the box) and on its own bridge network."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import pytest

from molecule_box.config import Settings
from molecule_box.testing import BackendConformance

from .dockerutil import IMAGE_PREFIX, RUNTIME, port_range, remove_box

pytestmark = pytest.mark.docker


def _docker_backend() -> Any:
    (ep,) = [ep for ep in entry_points(group="molecule_box.backends") if ep.name == "docker"]
    return ep.load()


class TestDockerBackendHostNetwork(BackendConformance):
    spec_overrides: ClassVar[dict[str, Any]] = {"runtime": RUNTIME}
    network = "host"
    settings_extra: ClassVar[dict[str, str]] = {}

    @pytest.fixture
    def backend_factory(self) -> Any:
        return _docker_backend()

    @pytest.fixture
    def backend_settings(self, tmp_path: Path) -> Settings:
        return Settings.from_mapping({
            "MOLECULE_BOX_DATA": str(tmp_path), "ADMIN_TOKEN": "conformance-admin-token",
            "WORKSPACE_IMAGE_PREFIX": IMAGE_PREFIX, "WORKSPACE_NETWORK": self.network,
            "WORKSPACE_PORT_RANGE": port_range(), **self.settings_extra,
        }, environ={})

    @pytest.fixture(autouse=True)
    def _cleanup(self, conformance_box_id: str) -> Iterator[None]:
        yield
        remove_box(conformance_box_id)


class TestDockerBackendBridgeNetwork(TestDockerBackendHostNetwork):
    network = "molecule-box-test"
    # No box listens here and the kit's workloads never call one, but a bridge network needs a PLATFORM_URL its
    # containers could reach (a loopback-only box's default is refused): an address of TEST-NET-1.
    settings_extra: ClassVar[dict[str, str]] = {"PLATFORM_URL": "http://192.0.2.1:8080"}
