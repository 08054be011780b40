"""Chat through the box's A2A proxy to a real a2a-sdk agent, the reply streamed into the page."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import Console, DashBox, login, shot

pytestmark = pytest.mark.browser

AGENT_SCRIPT = Path(__file__).parent.parent / "proxy" / "a2a_sdk_agent.py"


@pytest.fixture
def sdk_agent(tmp_path: Path) -> Iterator[str]:
    """The SDK's own agent app (streams ``events=N`` status updates ``gap=S`` apart), its JSON-RPC URL."""
    markers = tmp_path / "markers"
    markers.mkdir()
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(AGENT_SCRIPT), str(markers)], stdout=subprocess.PIPE, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()  # printed once it listens (the SDK import takes seconds)
        assert url.startswith("http://127.0.0.1:"), (tmp_path / "agent.log").read_text()
        base = url.rsplit("/", 1)[0]
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/.well-known/agent-card.json", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the a2a-sdk agent did not answer"
            time.sleep(0.1)
        yield url
    finally:
        assert proc.stdout is not None
        proc.stdout.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def test_a_chat_round_trip_streams_the_reply(page: Page, dash: DashBox, sdk_agent: str, console: Console,
                                            output_path: str) -> None:
    created = dash.api.post("/workspaces", json={"name": "sdk-agent", "external": True, "url": sdk_agent})
    assert created.status_code == 201, created.text
    wid = created.json()["id"]
    login(page, dash)
    page.get_by_test_id(f"ws-{wid}").locator(".row").first.click()
    page.get_by_label("Message").fill("events=2 gap=1.5")
    page.get_by_role("button", name="Send").click()
    reply = page.get_by_test_id("chat-reply").last
    # The first update is on the page while the agent is still working: streamed, not buffered.
    expect(reply).to_contain_text("step 1/2")
    assert "done:" not in (reply.text_content() or "")
    expect(reply).to_have_attribute("data-state", "streaming")
    expect(reply).to_contain_text("done: events=2 gap=1.5", timeout=20000)
    expect(reply).to_have_attribute("data-state", "done")
    shot(page, output_path, "chat")


def test_chat_replies_are_text_never_html(page: Page, dash: DashBox, sdk_agent: str, console: Console) -> None:
    created = dash.api.post("/workspaces", json={"name": "sdk-echo", "external": True, "url": sdk_agent})
    wid = created.json()["id"]
    login(page, dash)
    page.get_by_test_id(f"ws-{wid}").locator(".row").first.click()
    injected = '<img src=x onerror="window.__pwned=1"> events=1'
    page.get_by_label("Message").fill(injected)
    page.get_by_role("button", name="Send").click()
    reply = page.get_by_test_id("chat-reply").last
    expect(reply).to_contain_text(f"done: {injected}", timeout=20000)  # the agent echoes the text back
    assert page.get_by_test_id("chat").locator("img").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_the_feed_shows_the_a2a_call_and_filters(page: Page, dash: DashBox, sdk_agent: str, console: Console,
                                                 output_path: str) -> None:
    created = dash.api.post("/workspaces", json={"name": "feed-agent", "external": True, "url": sdk_agent})
    wid = created.json()["id"]
    other, other_token = dash.external("feed-other")
    login(page, dash)
    page.get_by_test_id(f"ws-{wid}").locator(".row").first.click()
    page.get_by_label("Message").fill("events=1")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("chat-reply").last).to_have_attribute("data-state", "done", timeout=20000)
    page.locator("#d-close").click()
    dash.heartbeat(other, other_token)  # an event of another workspace
    feed = page.get_by_test_id("feed")
    call = feed.get_by_test_id("a2a").first
    expect(call).to_contain_text("operator → feed-agent")
    expect(call).to_contain_text("message/stream")
    expect(call).to_contain_text(" ms")
    expect(feed.locator(f"li[data-ws='{other}']").first).to_be_visible()
    page.get_by_label("Show workspace").select_option(wid)
    expect(feed.locator(f"li[data-ws='{other}']")).to_have_count(0)
    expect(feed.get_by_test_id("a2a").first).to_be_visible()
    page.get_by_label("Show type").select_option("ACTIVITY_LOGGED")
    expect(feed.locator("li:not([data-type=ACTIVITY_LOGGED])")).to_have_count(0)
    shot(page, output_path, "feed")
