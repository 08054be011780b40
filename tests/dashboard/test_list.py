"""The live workspace list in a real browser, against a real box, driven by real heartbeats."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Console, DashBox, login, shot

pytestmark = pytest.mark.browser

INJECTED = '<img src=x onerror="window.__pwned=1"><b>bold</b>'
#: Names refuse ``>`` (and a few more): the most a name can carry is an unclosed tag.
INJECTED_NAME = '<img src=x onerror="window.__pwned=1" <b'


def test_a_workspace_turns_online_and_offline_live(page: Page, dash: DashBox, console: Console,
                                                   output_path: str) -> None:
    login(page, dash)
    wid, token = dash.external("live-one")
    row = page.get_by_test_id(f"ws-{wid}")
    expect(row).to_have_attribute("data-status", "awaiting_agent")
    expect(row.get_by_test_id("status")).to_have_text("Awaiting agent")
    dash.heartbeat(wid, token, current_task="summarising the inbox", active_tasks=2)
    expect(row).to_have_attribute("data-status", "online")
    expect(row.get_by_test_id("status")).to_have_text("Online")
    expect(row.get_by_test_id("task")).to_have_text("Task: summarising the inbox")
    expect(row).to_contain_text("2 active")
    expect(row.get_by_test_id("age")).to_have_text("heartbeat 1s ago", timeout=5000)  # ticking, no event
    shot(page, output_path, "list-online")
    # No more heartbeats: the remote deadline passes and the box's event turns it offline, with no reload.
    expect(row).to_have_attribute("data-status", "offline", timeout=15000)
    expect(row.get_by_test_id("status")).to_have_text("Offline")
    dash.heartbeat(wid, token, error_rate=0.9, sample_error="tool call failed")
    expect(row).to_have_attribute("data-status", "degraded")
    expect(row.get_by_test_id("reason")).to_have_text("tool call failed")


def test_remote_badge_backend_tier_and_nesting(page: Page, dash: DashBox, console: Console,
                                               output_path: str) -> None:
    parent, _ = dash.external("team-lead", tier=3)
    child, _ = dash.external("team-member", parent_id=parent)
    login(page, dash)
    lead = page.get_by_test_id(f"ws-{parent}")
    expect(lead.get_by_test_id("remote").first).to_be_visible()
    expect(lead.get_by_test_id("remote").first).to_have_text("★ REMOTE")
    expect(lead.locator(".row").first).to_contain_text("external")
    expect(lead.locator(".row").first).to_contain_text("T3")
    # The child is drawn inside its parent.
    expect(lead.locator(f"ul [data-testid=ws-{child}]")).to_have_count(1)
    shot(page, output_path, "list-nested")


def test_names_are_text_never_html(page: Page, dash: DashBox, console: Console) -> None:
    wid, token = dash.external(INJECTED_NAME)
    login(page, dash)
    dash.heartbeat(wid, token, current_task=INJECTED)
    row = page.get_by_test_id(f"ws-{wid}")
    expect(row.get_by_test_id("name")).to_have_text(INJECTED_NAME)
    expect(row.get_by_test_id("task")).to_have_text(f"Task: {INJECTED}")
    assert row.locator("img, b").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_usable_at_360_px(page: Page, dash: DashBox, console: Console, output_path: str) -> None:
    wid, _ = dash.external("narrow-" + "x" * 60)
    page.set_viewport_size({"width": 360, "height": 740})
    login(page, dash)
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    # Keyboard reachable: tabbing through the page reaches the log-out button and the workspace rows.
    reached: set[str] = set()
    for _ in range(500):  # the shared box holds the other tests' workspaces too: a row each
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.id || document.activeElement.className"))
        if {"logout", "connect-open", "row", "feed-ws"} <= reached:
            break
    assert {"logout", "connect-open", "row", "feed-ws"} <= reached, reached
    shot(page, output_path, "list-360px")
    row = page.get_by_test_id(f"ws-{wid}").locator(".row").first
    row.focus()
    page.keyboard.press("Enter")  # a row opens with the keyboard too
    details = page.get_by_test_id("details")
    expect(details).to_be_visible()
    box = details.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, box
    assert details.evaluate("d => d.scrollWidth <= d.clientWidth")
    shot(page, output_path, "details-360px")
    page.keyboard.press("Escape")
    expect(details).to_be_hidden()


def test_screenshot_path_is_written(page: Page, dash: DashBox, output_path: str) -> None:
    login(page, dash)
    assert shot(page, output_path, "list").stat().st_size > 0
    assert Path(output_path).is_dir()



@pytest.mark.box_env(MOLECULE_BOX_STREAM_BUFFER="1")
def test_after_a_reconnect_the_list_is_read_again(page: Page, fresh_box: DashBox, console: Console) -> None:
    login(page, fresh_box)
    assert page.evaluate("document.body.dataset.hydrations") == "1"
    # A family deleted at once is a burst of events: one queued event is all this box lets a stream fall
    # behind by, so the stream ends with a reconnect hint and the page comes back and reads the list again.
    parent, _ = fresh_box.external("family")
    children = [fresh_box.external(f"child-{i}", parent_id=parent)[0] for i in range(4)]
    for wid in [parent, *children]:
        expect(page.get_by_test_id(f"ws-{wid}")).to_have_count(1)
    assert fresh_box.api.delete(f"/workspaces/{parent}", params={"confirm": "true"}).status_code == 200
    survivor, token = fresh_box.external("survivor")
    fresh_box.heartbeat(survivor, token)
    expect(page.locator("body")).not_to_have_attribute("data-hydrations", "1")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    for wid in [parent, *children]:
        expect(page.get_by_test_id(f"ws-{wid}")).to_have_count(0)
    expect(page.get_by_test_id(f"ws-{survivor}")).to_have_attribute("data-status", "online")
