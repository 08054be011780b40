"""A poll-mode agent's inbox holds every message whole, up to the body limit (issue #10 item 9)."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from molecule_box.proxy.service import BODY_LIMIT

from ..conftest import ADMIN, bearer, joined
from .test_proxy import send_body


async def _poller(client: httpx.AsyncClient) -> tuple[str, str]:
    return await joined(client, "poller", url="remote://no-inbound")


async def test_a_long_message_reaches_the_inbox_whole(client: httpx.AsyncClient) -> None:
    """Messages over 64 KiB were cut while the caller was told 202 "delivered"."""
    poller, token = await _poller(client)
    peer, peer_tok = await joined(client, "peer")
    text = "".join(f"line {n:06d} of a long report\n" for n in range(12_000))  # ~350 KiB
    body = send_body(text, "long-1")
    sent = await client.post(f"/workspaces/{poller}/a2a", json=body,
                             headers={"X-Workspace-ID": peer, **bearer(peer_tok)})
    assert sent.status_code == 202 and sent.json()["delivery"] == "poll", sent.text
    rows = (await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id=0",
                             headers=bearer(token))).json()
    assert len(rows) == 1
    assert rows[0]["data"]["text"] == text
    assert rows[0]["request_body"] == body


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # httpx, after an early 413
async def test_a_message_over_the_body_limit_is_413_and_not_delivered(client: httpx.AsyncClient) -> None:
    poller, token = await _poller(client)
    raw = json.dumps(send_body("x" * BODY_LIMIT, "too-long")).encode()
    sent = await client.post(f"/workspaces/{poller}/a2a", content=raw,
                             headers={**ADMIN, "content-type": "application/json"})
    assert sent.status_code == 413, sent.text
    assert (await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id=0",
                             headers=bearer(token))).json() == []


async def test_a_page_of_long_messages_is_bounded_and_the_cursor_gets_the_rest(client: httpx.AsyncClient) -> None:
    """Whole messages of up to 1 MiB, 500 to a page, would make one inbox poll a gigabyte: a page stops at about
    PAGE_BYTES of bodies, and the next since_id continues after its last row."""
    from molecule_box.api.activity import PAGE_BYTES

    poller, token = await _poller(client)
    texts = [f"{n}" * (PAGE_BYTES // 5) for n in range(6)]  # ~840 KB each, 5 MB in all
    for n, text in enumerate(texts):
        sent = await client.post(f"/workspaces/{poller}/a2a", json=send_body(text, f"big-{n}"), headers=ADMIN)
        assert sent.status_code == 202, sent.text
    got: list[str] = []
    since, pages = 0, 0
    with trio.fail_after(10):
        while len(got) < len(texts):
            page = await client.get(f"/workspaces/{poller}/activity?type=a2a_receive&since_id={since}&limit=500",
                                    headers=bearer(token))
            rows = page.json()
            assert rows and len(page.content) < 3 * PAGE_BYTES, len(page.content)
            got += [r["data"]["text"] for r in rows]
            since, pages = rows[-1]["id"], pages + 1
    assert got == texts and pages == 2
