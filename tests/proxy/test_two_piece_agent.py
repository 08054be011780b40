"""An agent whose server writes a reply's head and body in two writes, without TCP_NODELAY (Python's http.server
does), answered through the box's kept-alive upstream connection.

Without a prompt ACK from the box, Nagle's rule on the agent holds the body until the box's delayed ACK
(about 40 ms on Linux): each call took about 44 ms through the pool against 0.6 ms on a fresh connection. That
latency is a figure of ``bench/a2a_proxy.py`` (scenario ``two-piece``), not of a test. Here: a reply whose head
and body arrive as separate segments is read whole, and every call goes over the one kept-alive connection.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from molecule_box.proxy.client import AgentPool


class TwoPieceAgent(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[set[tuple[str, int]]] = set()  # every handler instance adds to the one set

    def do_POST(self) -> None:
        TwoPieceAgent.connections.add(self.client_address)
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"echo": True}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()  # the head: one write
        self.wfile.write(body)  # the body: a second one

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def two_piece_agent() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TwoPieceAgent)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_a_reply_in_two_writes_over_one_kept_alive_connection(two_piece_agent: int) -> None:
    TwoPieceAgent.connections.clear()
    pool = AgentPool("http", "127.0.0.1", two_piece_agent, "127.0.0.1")
    try:
        for _ in range(8):
            async with pool.post("/", [(b"content-type", b"application/json")], b'{"jsonrpc":"2.0"}') as resp:
                assert resp.status == 200
                assert json.loads(await resp.read(10_000))["result"] == {"echo": True}
        assert pool.opened == 1 and len(TwoPieceAgent.connections) == 1
    finally:
        pool.close()
