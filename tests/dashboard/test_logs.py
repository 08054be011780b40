"""The logs pane of a container workspace: a box on the real Docker engine (host networking, the local test
agent image) runs a workspace, and the page shows a line its agent printed.

The docker backend runs in the box's own process (as every box under a browser test does), never in pytest's:
the browser tests keep asyncio's default policy, which the docker backend's trio-asyncio could not share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ..backends.dockerutil import HOW, RUNTIME, docker, docker_env, engine_problem, free_port, in_ci
from .conftest import Console, DashBox, login, shot

pytestmark = [pytest.mark.browser, pytest.mark.docker]


def _remove(wid: str) -> None:
    """Whatever the engine still holds of the workspace (its container and volumes), by the box's labels."""
    label = f"label=molecule-box.workspace={wid}"
    ids = docker("ps", "-a", "-q", "--no-trunc", "--filter", label).split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    vols = docker("volume", "ls", "-q", "--filter", label).split()
    if vols:
        docker("volume", "rm", "-f", *vols, check=False)


@pytest.fixture
def docker_dash(tmp_path: Path) -> Iterator[DashBox]:
    """A box process whose default backend is docker, at a port chosen first (its agents register there)."""
    problem = engine_problem()
    if problem is not None:
        if in_ci():
            pytest.fail(f"CI=true and {problem}. {HOW}", pytrace=False)
        pytest.skip(f"{problem}. {HOW}")
    data = tmp_path / "box"
    data.mkdir()
    box = DashBox(data, **docker_env(free_port()))
    box.start()
    try:
        yield box
    finally:
        listed = box.api.get("/workspaces")
        box.stop()  # a stopped box leaves its containers running, by design: removed here
        for ws in listed.json() if listed.status_code == 200 else []:
            _remove(ws["id"])


def test_the_logs_pane_shows_what_the_agent_printed(page: Page, docker_dash: DashBox, console: Console,
                                                    output_path: str) -> None:
    response = docker_dash.api.post("/workspaces", json={"name": "in-docker", "runtime": RUNTIME})
    assert response.status_code == 201, response.text
    wid = response.json()["id"]
    login(page, docker_dash)
    row = page.get_by_test_id(f"ws-{wid}")
    # The agent registers once its container runs: online, shown live.
    expect(row).to_have_attribute("data-status", "online", timeout=60000)
    row.locator(".row").first.click()
    logs = page.get_by_test_id("d-logs")
    page.get_by_role("button", name="Load the last 200 lines").click()
    # What the test agent prints when it registered, with the workspace's id in it.
    expect(logs).to_contain_text(f"test-agent {wid[:8]}: registered", timeout=15000)
    logs.scroll_into_view_if_needed()
    shot(page, output_path, "logs")
