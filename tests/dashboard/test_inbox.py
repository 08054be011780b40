"""A poll-mode agent's inbox in the live feed: each message's state (queued, fetched, replied, expired) as a text
label, changed live by the box's INBOX_MESSAGE events while a real poll-mode agent fetches and answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import Console, DashBox, login, shot

pytestmark = pytest.mark.browser

#: INBOX_TTL_DAYS of the box under test: about 8.6 s, so a message nobody fetches expires during the test.
TTL_DAYS = "0.0001"


def _send(box: DashBox, wid: str, text: str) -> int:
    """The operator's message to the poll-mode agent: accepted for its inbox, the row's id."""
    body = {"jsonrpc": "2.0", "id": text, "method": "message/send",
            "params": {"message": {"role": "user", "messageId": text, "parts": [{"kind": "text", "text": text}]}}}
    answer = box.api.post(f"/workspaces/{wid}/a2a", json=body)
    assert answer.status_code == 202 and answer.json()["delivery"] == "poll", answer.text
    return int(answer.json()["activity_id"])


def _agent(box: DashBox, token: str) -> httpx.Client:
    return httpx.Client(base_url=box.url, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def _states(box: DashBox, wid: str) -> dict[int, Any]:
    listed = box.api.get(f"/workspaces/{wid}/inbox")
    assert listed.status_code == 200, listed.text
    return {m["id"]: m["state"] for m in listed.json()["messages"]}


@pytest.mark.box_env(INBOX_TTL_DAYS=TTL_DAYS)
def test_inbox_messages_show_their_state_live(page: Page, fresh_box: DashBox, console: Console,
                                              output_path: str) -> None:
    wid, token = fresh_box.external("poller")
    with _agent(fresh_box, token) as agent:
        # No inbound URL: the agent polls (the platform SDK's PollDelivery registers this way).
        registered = agent.post("/registry/register", json={"id": wid, "url": "remote://no-inbound",
                                                            "agent_card": {"name": "poller"}})
        assert registered.status_code == 200, registered.text
        login(page, fresh_box)
        feed = page.get_by_test_id("feed")

        answered = _send(fresh_box, wid, "first")
        line = feed.get_by_test_id(f"inbox-{answered}")
        expect(line.get_by_test_id("inbox-state")).to_have_text("queued")
        expect(line).to_contain_text("operator → poller")

        polled = agent.get(f"/workspaces/{wid}/activity", params={"type": "a2a_receive"})
        assert [row["id"] for row in polled.json()] == [answered], polled.text
        expect(line.get_by_test_id("inbox-state")).to_have_text("fetched by its agent")
        expect(line).to_have_attribute("data-inbox-state", "fetched")

        replied = agent.post(f"/workspaces/{wid}/notify", json={"message": "done with first"})
        assert replied.status_code == 200, replied.text
        expect(line.get_by_test_id("inbox-state")).to_have_text("replied")

        # Nobody fetches the second one: it expires INBOX_TTL_DAYS after it arrived, with the box agreeing.
        unread = _send(fresh_box, wid, "second")
        late = feed.get_by_test_id(f"inbox-{unread}")
        expect(late.get_by_test_id("inbox-state")).to_have_text("queued")
        expect(late.get_by_test_id("inbox-state")).to_have_text("expired", timeout=30000)
        assert _states(fresh_box, wid) == {answered: "replied", unread: "expired"}
        # Each message is one line, whatever became of it; the replied one stayed replied.
        expect(feed.locator("[data-type=INBOX_MESSAGE]")).to_have_count(2)
        expect(line).to_have_attribute("data-inbox-state", "replied")
        shot(page, output_path, "inbox")


@pytest.mark.box_env(MOLECULE_BOX_STREAM_BUFFER="2")
def test_after_a_reconnect_inbox_lines_are_read_again(page: Page, fresh_box: DashBox, console: Console) -> None:
    """A state that changed while the page's stream was away (its event missed) is read from the inbox."""
    wid, token = fresh_box.external("poller")
    console.expect("ERR_FAILED|events/stream")  # the stream's reconnects refused below, on purpose
    with _agent(fresh_box, token) as agent:
        assert agent.post("/registry/register", json={"id": wid, "url": "remote://no-inbound"}).status_code == 200
        login(page, fresh_box)
        row = _send(fresh_box, wid, "while away")
        line = page.get_by_test_id("feed").get_by_test_id(f"inbox-{row}")
        expect(line.get_by_test_id("inbox-state")).to_have_text("queued")
        # The stream is kept from coming back, then ended: a family deleted at once is a burst of events more
        # than this box lets a stream fall behind by.
        page.route("**/events/stream", lambda route: route.abort())
        parent, _ = fresh_box.external("family")
        for i in range(6):
            fresh_box.external(f"child-{i}", parent_id=parent)
        hydrated = page.evaluate("document.body.dataset.hydrations")
        assert fresh_box.api.delete(f"/workspaces/{parent}", params={"confirm": "true"}).status_code == 200
        expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
        assert agent.get(f"/workspaces/{wid}/activity", params={"type": "a2a_receive"}).status_code == 200
        assert _states(fresh_box, wid) == {row: "fetched"}
        expect(line.get_by_test_id("inbox-state")).to_have_text("queued")  # its event went nowhere
        page.unroute("**/events/stream")
        expect(page.locator("body")).not_to_have_attribute("data-hydrations", hydrated or "")
        expect(line.get_by_test_id("inbox-state")).to_have_text("fetched by its agent")
