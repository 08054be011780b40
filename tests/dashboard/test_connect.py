"""Connect an agent: the page creates a remote workspace and shows its one-time token and snippets."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import Console, DashBox, login, shot

pytestmark = pytest.mark.browser


def test_connect_an_agent_shows_the_token_once_and_working_snippets(page: Page, dash: DashBox, console: Console,
                                                                   output_path: str) -> None:
    login(page, dash)
    page.get_by_role("button", name="Connect an agent").click()
    page.get_by_label("Workspace name").fill("laptop-agent")
    page.get_by_role("button", name="Create").click()
    token_box = page.get_by_test_id("connect-token").locator("pre")
    expect(token_box).to_have_text(re.compile(r"\S{32,}"))
    token = token_box.text_content() or ""
    curl = page.get_by_test_id("connect-curl").locator("pre").text_content() or ""
    python = page.get_by_test_id("connect-python").locator("pre").text_content() or ""
    assert f"{dash.url}/registry/register" in curl and "$MOLECULE_TOKEN" in curl
    assert "RemoteAgentClient" in python and dash.url in python
    # What the API returned, not a copy made up by the page: the register it shows works with the token.
    body = json.loads(curl.split("-d '", 1)[1].rstrip("'"))
    workspace_id = body["id"]
    body["url"] = "http://127.0.0.1:9/"
    registered = httpx.post(f"{dash.url}/registry/register", json=body,
                            headers={"Authorization": f"Bearer {token}"})
    assert registered.status_code == 200, registered.text
    shot(page, output_path, "connect")
    page.locator("#connect-close").click()
    expect(page.get_by_test_id(f"ws-{workspace_id}")).to_have_attribute("data-status", "online")
    assert token not in page.content()  # shown once: gone with the dialog
    page.get_by_role("button", name="Connect an agent").click()
    expect(page.get_by_test_id("connect-token")).to_have_count(0)
