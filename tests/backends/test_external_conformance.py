"""The built-in ``external`` backend passes the conformance kit, found through its entry point."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

import pytest

from molecule_box.testing import BackendConformance


class TestExternalBackend(BackendConformance):
    @pytest.fixture
    def backend_factory(self) -> Any:
        (ep,) = [ep for ep in entry_points(group="molecule_box.backends") if ep.name == "external"]
        return ep.load()
