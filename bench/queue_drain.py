#!/usr/bin/env python3
"""Queue-drain benchmark: how long 1,000 messages queued for a busy workspace take to reach its agent once it
has room again (issue #11 item 7: each heartbeat with spare capacity delivered one message, so at a 30 s
heartbeat a queue of 1,000 took about 8 hours).

    python bench/queue_drain.py                           # 1,000 messages, an agent answering in 10 ms, capacity 4
    python bench/queue_drain.py --messages 200 --delay 0.05
    python bench/queue_drain.py --box-src /path/to/old/tree --timeout 20   # the same against another tree

What it starts (under one temp dir, all stopped in ``finally``, all on 127.0.0.1): the box (``python -m
molecule_box run``, fresh data dir) and the trio raw-socket agent of ``a2a_proxy.py`` (``/slow`` answers after
``--delay`` s and counts its calls in flight). Steps:

  1. ceiling: ``--messages`` POSTs straight to the agent from ``--capacity`` keep-alive connections at once
     (what the agent can do at that concurrency on this machine, in this run);
  2. a workspace with ``max_concurrent_tasks`` ``--capacity`` whose agent reported all of it in use gets
     ``--messages`` message/send calls through ``POST /workspaces/:id/a2a``: each is queued (202);
  3. one heartbeat with ``active_tasks`` 0, and no other: the time from it until the box has marked every
     message ``completed`` (read from its SQLite file, read-only), the agent's peak calls in flight.

Reported: the drain time against the target (30 s), the ideal (messages x delay / capacity) and the ceiling.
Targets: every message completed within --timeout, drain time <= 30 s, the agent never had more than
--capacity calls in flight.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import a2a_proxy as ap

TARGET_SECONDS = 30.0


def role_direct(args: argparse.Namespace) -> None:
    """--n POSTs to --url from --capacity keep-alive connections at once; prints JSON (elapsed, errors)."""
    import trio

    _, _, path = ap.split_url(args.url)
    headers = [("content-type", "application/json")]
    left = [args.n]
    errors: list[str] = []

    async def worker() -> None:
        client = await ap.Client.open(args.url)
        try:
            while left[0] > 0:
                left[0] -= 1
                status, _, _, _ = await client.post(path, headers, ap.BODY)
                if status != 200:
                    errors.append(str(status))
        finally:
            await client.aclose()

    async def main() -> float:
        began = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(args.capacity):
                nursery.start_soon(worker)
        return trio.current_time() - began

    elapsed = trio.run(ap.run_until_signalled, main, ap.CHILD_MAX_SECONDS)
    print(json.dumps({"elapsed": elapsed, "errors": errors[:10]}), flush=True)


def queue_counts(db: Path, wid: str) -> dict[str, int]:
    """The workspace's queue rows per status, from the box's SQLite file (read-only, beside the running box)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute("SELECT status, count(*) FROM a2a_queue WHERE workspace_id = ? GROUP BY status", [wid])
        return {status: int(n) for status, n in rows}


def enqueue_all(box_url: str, wid: str, messages: int) -> list[int]:
    """``messages`` message/send calls to the busy workspace, 8 at a time; their status codes."""
    admin = {"Authorization": f"Bearer {ap.ADMIN_TOKEN}", "Content-Type": "application/json"}

    def send(chunk: range) -> list[int]:
        with httpx.Client(base_url=box_url, timeout=30) as client:
            return [client.post(f"/workspaces/{wid}/a2a", headers=admin, content=json.dumps({
                "jsonrpc": "2.0", "id": n, "method": "message/send", "params": {"message": {
                    "role": "user", "messageId": f"drain-{n:05d}", "parts": [{"kind": "text", "text": "work"}]}}})
            ).status_code for n in chunk]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return [code for codes in pool.map(send, [range(i, messages, 8) for i in range(8)]) for code in codes]


def drive(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="drain-bench-"))
    procs = ap.Procs(tmp)
    print(f"queue-drain bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, temp dir {tmp}",
          flush=True)
    try:
        agent_port, box_port = ap.free_port(), ap.free_port()
        agent = procs.role("agent", "agent", "--port", str(agent_port), "--delay", str(args.delay))
        ap.wait_port(agent_port, agent, "agent")
        ap.start_box(procs, box_port, args.box_src, A2A_QUEUE_LIMIT=str(max(1000, args.messages)))
        box_url, agent_url = f"http://{ap.HOST}:{box_port}", f"http://{ap.HOST}:{agent_port}"

        direct = ap.role_json(procs.start("direct", [sys.executable, str(Path(__file__).resolve()), "--role",
                                                     "direct", "--url", f"{agent_url}/slow", "--n",
                                                     str(args.messages), "--capacity", str(args.capacity)],
                                          stdout=subprocess.PIPE), args.timeout + 60)
        admin = {"Authorization": f"Bearer {ap.ADMIN_TOKEN}"}
        with httpx.Client(base_url=box_url, timeout=30) as client:
            created = client.post("/workspaces", headers=admin, json={
                "name": "paced", "external": True, "max_concurrent_tasks": args.capacity})
            created.raise_for_status()
            wid, token = created.json()["id"], created.json()["connection"]["auth_token"]
            agent_auth = {"Authorization": f"Bearer {token}"}
            client.post("/registry/register", headers=agent_auth, json={
                "id": wid, "url": f"{agent_url}/slow", "agent_card": {"name": "paced"}}).raise_for_status()
            client.post("/registry/heartbeat", headers=agent_auth, json={
                "workspace_id": wid, "active_tasks": args.capacity}).raise_for_status()
            began = time.monotonic()
            codes = enqueue_all(box_url, wid, args.messages)
            enqueue_seconds = time.monotonic() - began
            not_queued = sum(code != 202 for code in codes)
            httpx.get(f"{agent_url}/stats/reset", timeout=10)
            db = tmp / "box-data" / "molecule-box.db"
            print(f"queued {args.messages - not_queued} of {args.messages} in {enqueue_seconds:.1f} s "
                  f"({queue_counts(db, wid)}); one heartbeat with spare capacity ...", flush=True)

            began = time.monotonic()
            client.post("/registry/heartbeat", headers=agent_auth, json={
                "workspace_id": wid, "active_tasks": 0}).raise_for_status()
            counts: dict[str, int] = {}
            drained = math.nan
            while time.monotonic() - began < args.timeout:
                counts = queue_counts(db, wid)
                if counts.get("completed", 0) >= args.messages:
                    drained = time.monotonic() - began
                    break
                time.sleep(0.02)
            stats = httpx.get(f"{agent_url}/stats", timeout=10).json()

        ideal = args.messages * args.delay / args.capacity
        done = counts.get("completed", 0)
        print(f"\n== {args.messages} queued messages, agent answering in {args.delay * 1000:g} ms, "
              f"max_concurrent_tasks {args.capacity}")
        print(f"ceiling (straight to the agent, {args.capacity} at once): {direct['elapsed']:.2f} s"
              f"{'  errors ' + str(direct['errors']) if direct['errors'] else ''}")
        print(f"ideal (messages x delay / capacity): {ideal:.2f} s")
        if math.isnan(drained):
            print(f"box: {done} of {args.messages} completed after {args.timeout:g} s ({counts}); the agent served "
                  f"{stats['slow_served']}, at most {stats['peak']} at once")
        else:
            print(f"box: drained in {drained:.2f} s: {drained / ideal:.2f}x the ideal, "
                  f"{drained / direct['elapsed']:.2f}x the ceiling; the agent served {stats['slow_served']}, "
                  f"at most {stats['peak']} at once")
        checks = [("messages queued (202)", args.messages - not_queued, f"== {args.messages}", not_queued == 0),
                  ("messages completed after one heartbeat", done, f"== {args.messages}", done == args.messages),
                  ("drain time (s)", drained, f"<= {TARGET_SECONDS:g}", drained <= TARGET_SECONDS),
                  ("agent's peak calls in flight", stats["peak"], f"<= {args.capacity}",
                   stats["peak"] <= args.capacity)]
        return ap.print_checks(checks)
    finally:
        procs.finish(keep=args.keep)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000, help="messages queued before the heartbeat")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds the agent takes per message")
    parser.add_argument("--capacity", type=int, default=4, help="the workspace's max_concurrent_tasks")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the drain")
    ap.box_options(parser)
    # role arguments
    parser.add_argument("--role", choices=["direct"])
    parser.add_argument("--url")
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    if args.role == "direct":
        role_direct(args)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
