#!/usr/bin/env python3
"""Event-stream benchmark: one agent token opening thousands of ``/ws`` connections, and the heartbeats of
everyone else meanwhile (issue #10 item 7: 2,000 connections moved every heartbeat's p50 from 3 to 597 ms).

    python bench/event_streams.py                          # 2,000 connections, 10 s per phase
    python bench/event_streams.py --streams 500 --seconds 5
    python bench/event_streams.py --box-src /path/to/old/tree   # the same against another source tree

What it starts (under one temp dir, all stopped in ``finally``, all on 127.0.0.1): the box
(``python -m molecule_box run``, fresh data dir, default stream caps), and helper processes that are roles of
this file or of ``a2a_proxy.py`` (the paced heartbeat driver: 50/s over four workspaces, latency from each
beat's scheduled time). Phases:

  1. baseline: heartbeats alone;
  2. streams: one workspace's token opens ``--streams`` WebSocket connections to ``/ws`` (X-Workspace-ID, 50
     handshakes at a time) and keeps every accepted one open and read; then heartbeats as in phase 1.

Reported: accepted and refused (429) connections, the box's ``molecule_box_event_streams_refused``, and the
heartbeat p50/p99 of both phases. Targets: at most MOLECULE_BOX_STREAMS_PER_TOKEN (16) accepted, heartbeat
p50 <= 10 ms with the streams open (p99 reported).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import a2a_proxy as ap

PER_TOKEN = 16
#: The issue's figure is the p50 (3 ms before, 597 ms with 2,000 streams); p99 is reported beside it, but on a
#: shared 2-core machine single stalls (a full GC, a slow fsync: see slow_sqlite) move it in either phase.
TARGET_P50_MS = 10.0


def role_streams(args: argparse.Namespace) -> None:
    """Opens --n /ws connections as workspace --wid; prints one JSON line (accepted, refused, errors) once
    every handshake is answered, then reads the accepted ones until SIGTERM."""
    import trio
    import wsproto
    import wsproto.events as we

    ap.raise_nofile()
    host, port, _ = ap.split_url(args.url)
    headers = [(b"x-workspace-id", args.wid.encode()), (b"authorization", f"Bearer {args.token}".encode())]
    outcome = {"accepted": 0, "refused": 0, "errors": 0}
    opening = trio.Semaphore(50)
    all_answered = trio.Event()

    def answered(kind: str) -> None:
        outcome[kind] += 1
        if sum(outcome.values()) == args.n:
            all_answered.set()

    async def one() -> None:
        try:
            async with opening:
                stream = await trio.open_tcp_stream(host, port)
                ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
                await stream.send_all(ws.send(we.Request(host=host, target="/ws", extra_headers=headers)))
                answer = None
                with trio.fail_after(30):
                    while answer is None:
                        ws.receive_data(await stream.receive_some(4096))
                        answer = next((e for e in ws.events()
                                       if isinstance(e, (we.AcceptConnection, we.RejectConnection))), None)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError):
            answered("errors")
            return
        if isinstance(answer, we.RejectConnection):
            answered("refused" if answer.status_code == 429 else "errors")
            await stream.aclose()
            return
        answered("accepted")
        async with stream:
            while await stream.receive_some(65536):  # read (and drop) whatever the box sends
                pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(args.n):
                nursery.start_soon(one)
            await all_answered.wait()
            print(json.dumps(outcome), flush=True)
            await trio.sleep_forever()

    trio.run(ap.run_until_signalled, main, ap.CHILD_MAX_SECONDS)


def heartbeat_phase(procs: ap.Procs, box_url: str, beaters: list[tuple[str, str]], rate: float,
                    seconds: float, label: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with ap.heartbeats(procs, box_url, beaters, rate, results, label):
        time.sleep(seconds)
    return results[label]


def drive(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="streams-bench-"))
    procs = ap.Procs(tmp)
    print(f"event-stream bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, temp dir {tmp}",
          flush=True)
    try:
        port = ap.free_port()
        ap.start_box(procs, port, args.box_src)
        box_url = f"http://{ap.HOST}:{port}"
        ws = ap.setup_box(box_url, {})
        (greedy, greedy_token), beaters = ws["caller"], ws["beaters"]

        baseline = heartbeat_phase(procs, box_url, beaters, args.hb_rate, args.seconds, "baseline")
        streams = procs.start("streams", [sys.executable, str(Path(__file__).resolve()), "--role", "streams",
                                          "--url", box_url, "--wid", greedy, "--token", greedy_token,
                                          "--n", str(args.streams)], stdout=subprocess.PIPE)
        assert streams.stdout is not None
        opened = json.loads(streams.stdout.readline() or "{}")
        loaded = heartbeat_phase(procs, box_url, beaters, args.hb_rate, args.seconds, "streams")
        procs.stop(streams)
        refused_metric = next((float(line.split()[1]) for line in httpx.get(f"{box_url}/metrics", timeout=10)
                               .text.splitlines() if line.startswith("molecule_box_event_streams_refused ")), None)
        print(f"\n== {args.streams} /ws connections with one workspace token: {opened}"
              + (f"; box counted {refused_metric:.0f} refusals" if refused_metric is not None else ""))
        for label, h in (("baseline", baseline), ("streams", loaded)):
            print(f"heartbeats {label:<9} n {h.get('n')}  p50 {h.get('p50', math.nan):.2f} ms  "
                  f"p99 {h.get('p99', math.nan):.2f} ms  max {h.get('max', math.nan):.2f} ms  "
                  f"errors {h.get('errors') or 0}  slowest [s after start, ms] {h.get('slowest')}  "
                  f"SQLite over 50 ms {h.get('slow_sqlite')}")
        checks = [("accepted connections", opened.get("accepted", math.nan), f"<= {PER_TOKEN}",
                   opened.get("accepted", math.inf) <= PER_TOKEN),
                  ("heartbeat p50 with the streams open (ms)", loaded.get("p50", math.nan), f"<= {TARGET_P50_MS:g}",
                   loaded.get("p50", math.inf) <= TARGET_P50_MS and not loaded.get("errors"))]
        return ap.print_checks(checks)
    finally:
        procs.finish(keep=args.keep)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=2000, help="/ws connections the one token tries to open")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of heartbeats per phase")
    parser.add_argument("--hb-rate", type=float, default=50.0, help="heartbeats per second")
    ap.box_options(parser)
    # role arguments
    parser.add_argument("--role", choices=["streams"])
    parser.add_argument("--url")
    parser.add_argument("--wid")
    parser.add_argument("--token")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    if args.role == "streams":
        role_streams(args)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
