"""One workspace's panel in a real browser: lifecycle with confirmation, tokens shown once, secrets by name."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import Console, DashBox, login, shot

pytestmark = pytest.mark.browser


def _open(page: Page, wid: str) -> None:
    page.get_by_test_id(f"ws-{wid}").locator(".row").first.click()
    expect(page.get_by_test_id("details")).to_be_visible()


def _do(page: Page, action: str) -> None:
    page.locator(f"#details [data-action={action}]").click()
    expect(page.locator("#confirm")).to_be_visible()
    page.locator("#confirm-yes").click()


def test_lifecycle_buttons_change_the_state(page: Page, dash: DashBox, console: Console,
                                            output_path: str) -> None:
    wid, token = dash.external("lifecycle")
    dash.heartbeat(wid, token)
    login(page, dash)
    row = page.get_by_test_id(f"ws-{wid}")
    expect(row).to_have_attribute("data-status", "online")
    _open(page, wid)
    expect(page.locator("#d-facts")).to_contain_text(wid)
    shot(page, output_path, "details")
    # Cancel changes nothing.
    page.locator("#details [data-action=pause]").click()
    page.locator("#confirm-no").click()
    expect(page.locator("#confirm")).to_be_hidden()
    assert dash.api.get(f"/workspaces/{wid}").json()["status"] == "online"
    _do(page, "pause")
    expect(row).to_have_attribute("data-status", "paused")
    expect(page.get_by_test_id("d-status")).to_have_text("Paused")
    _do(page, "resume")
    expect(row).not_to_have_attribute("data-status", "paused")
    dash.heartbeat(wid, token)
    expect(row).to_have_attribute("data-status", "online")
    _do(page, "hibernate")
    expect(row).to_have_attribute("data-status", "hibernated")
    _do(page, "wake")
    expect(row).not_to_have_attribute("data-status", "hibernated")
    # A remote agent's workload is not the box's to restart (its backend has no lifecycle capability).
    expect(page.locator("#details [data-action=restart]")).to_be_disabled()
    _do(page, "delete")
    expect(page.get_by_test_id("details")).to_be_hidden()
    expect(row).to_have_count(0)
    assert dash.api.get(f"/workspaces/{wid}").json()["status"] == "removed"


def test_a_minted_token_is_shown_once_and_can_be_revoked(page: Page, dash: DashBox, console: Console,
                                                        output_path: str) -> None:
    wid, _ = dash.external("tokens")
    login(page, dash)
    _open(page, wid)
    tokens = page.get_by_test_id("d-tokens").locator("li")
    expect(tokens).to_have_count(1)
    page.get_by_role("button", name="Mint a token").click()
    minted = page.get_by_test_id("minted-token")
    expect(minted).to_have_text(re.compile(r"\S{32,}"))  # the whole token, this once
    token = minted.text_content() or ""
    expect(tokens).to_have_count(2)
    shot(page, output_path, "token-minted")
    dash.heartbeat(wid, token)  # it is a real token of the workspace
    page.locator("#d-close").click()
    _open(page, wid)
    expect(page.get_by_test_id("minted-token")).to_be_hidden()
    assert token not in page.content()
    prefixes = [tokens.nth(i).get_attribute("data-prefix") or "" for i in range(2)]
    mine = next(i for i, prefix in enumerate(prefixes) if prefix and token.startswith(prefix))
    tokens.nth(mine).get_by_role("button", name="Revoke").click()
    page.locator("#confirm-yes").click()
    expect(tokens).to_have_count(1)
    refused = httpx.post(f"{dash.url}/registry/heartbeat", json={"workspace_id": wid},
                         headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 401


def test_secrets_show_names_only(page: Page, dash: DashBox, console: Console) -> None:
    wid, _ = dash.external("secrets")
    login(page, dash)
    _open(page, wid)
    page.locator("#d-secret-key").fill("OPENAI_API_KEY")
    page.locator("#d-secret-value").fill("sk-very-secret-value")
    page.get_by_role("button", name="Set secret").click()
    secrets = page.get_by_test_id("d-secrets")
    expect(secrets).to_contain_text("OPENAI_API_KEY")
    assert "sk-very-secret-value" not in page.content()
    expect(page.locator("#d-secret-value")).to_have_value("")
    secrets.get_by_role("button", name="Delete").click()
    page.locator("#confirm-yes").click()
    expect(secrets.locator("li")).to_have_count(0)
    assert dash.api.get(f"/workspaces/{wid}/secrets").json() == []


def test_agent_cards_are_text_never_html(page: Page, dash: DashBox, console: Console) -> None:
    wid, token = dash.external("carded")
    card = {"name": '<img src=x onerror="window.__pwned=1">', "description": "<script>window.__pwned=2</script>"}
    registered = httpx.post(f"{dash.url}/registry/register", json={"id": wid, "url": "http://127.0.0.1:9/",
                                                                    "agent_card": card},
                            headers={"Authorization": f"Bearer {token}"})
    assert registered.status_code == 200, registered.text
    login(page, dash)
    _open(page, wid)
    expect(page.get_by_test_id("d-card")).to_contain_text("<script>window.__pwned=2</script>")
    assert page.get_by_test_id("details").locator("img, script").count() == 0
    assert page.evaluate("window.__pwned") is None
