"""Login and logout in a real browser: the token goes once into an HttpOnly, SameSite=Strict cookie."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Page, expect

from molecule_box.authz import SESSION_COOKIE

from .conftest import Console, DashBox, login, shot

pytestmark = pytest.mark.browser


def test_login_and_logout(page: Page, dash: DashBox, console: Console, output_path: str) -> None:
    page.goto(dash.url + "/")
    expect(page.get_by_label("Admin token")).to_be_visible()
    expect(page.locator("#main-view")).to_be_hidden()
    shot(page, output_path, "login")
    login(page, dash)
    expect(page.locator("#main-view")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert dash.admin_token not in page.url
    stored = page.evaluate("JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])")
    assert dash.admin_token not in stored and SESSION_COOKIE not in stored
    page.reload()  # the session outlives a reload
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Admin token")).to_be_visible()
    expect(page.locator("#login-error")).to_have_text("Logged out.")
    # Ended on the server: the old cookie, replayed, opens nothing.
    replay = httpx.get(f"{dash.url}/workspaces", headers={"Cookie": f"{SESSION_COOKIE}={cookie['value']}"})
    assert replay.status_code == 401


def test_wrong_token_is_refused(page: Page, dash: DashBox, console: Console) -> None:
    console.expect(r"401")  # the refused POST /session is logged by the browser
    page.goto(dash.url + "/")
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("Wrong admin token.")
    expect(page.locator("#main-view")).to_be_hidden()


def test_a_restart_with_a_new_admin_token_ends_the_session(page: Page, fresh_box: DashBox,
                                                           console: Console) -> None:
    console.expect(r"401|ERR_CONNECTION_REFUSED|net::")  # the box going away is seen by the page
    login(page, fresh_box)
    cookie = next(c for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    fresh_box.stop()
    fresh_box.admin_token = "a-new-admin-token-0123456789abcdef"
    fresh_box.start()
    replay = httpx.get(f"{fresh_box.url}/workspaces", headers={"Cookie": f"{SESSION_COOKIE}={cookie['value']}"})
    assert replay.status_code == 401
    page.goto(fresh_box.url + "/")
    expect(page.get_by_label("Admin token")).to_be_visible()
