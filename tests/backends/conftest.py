"""The ``docker`` marker: tests that need a Docker engine skip without one, except in CI, where they fail."""

from __future__ import annotations

import pytest

from .dockerutil import HOW, engine_problem, in_ci


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("docker") is None:
        return
    problem = engine_problem()
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"CI=true and {problem}. {HOW}", pytrace=False)
    pytest.skip(f"{problem}. {HOW}")
