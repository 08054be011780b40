"""The platform SDK's own poll loop as a separate process, for the inbox tests that kill it.

``python poll_agent.py BOX_URL WORKSPACE_ID TOKEN RECORD [BLOCK_AT]``: a ``RemoteAgentClient`` with the
workspace's token and a ``PollDelivery`` without a cursor file (so every start polls from scratch, as an
agent restarted without one does) runs until killed. Its handler appends each message's text to RECORD (one
``write`` per message: what was written survives SIGKILL). With BLOCK_AT, the handler of the BLOCK_AT-th
message prints ``blocked`` and hangs before recording it, so a test can kill the agent in the middle of a page.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from molecule_agent import PollDelivery, RemoteAgentClient


def main(url: str, workspace_id: str, token: str, record: str, block_at: int) -> None:
    client = RemoteAgentClient(workspace_id, url, token_dir=Path(record).parent / f"token-{os.getpid()}",
                               origin=None)
    client.save_token(token)
    delivery = PollDelivery(client, interval=0.05)
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    handled = 0

    def handler(message: Any, _client: Any) -> None:
        nonlocal handled
        handled += 1
        if handled == block_at:
            print("blocked", flush=True)
            time.sleep(3600)
        os.write(fd, f"{message.text}\n".encode())

    print("polling", flush=True)
    while True:
        if delivery.run_once(handler) == 0:
            time.sleep(delivery.interval)


if __name__ == "__main__":
    main(*sys.argv[1:5], int(sys.argv[5]) if len(sys.argv) > 5 else 0)
