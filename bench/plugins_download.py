#!/usr/bin/env python3
"""Plugin download benchmark: 50 agents downloading a 20 MB plugin at once while heartbeats run.

    python bench/plugins_download.py                        # 50 downloads of a 20 MB plugin, 10 s of baseline
    python bench/plugins_download.py --downloads 10 --mb 5

What it starts (under one temp dir, all stopped in ``finally``, all on 127.0.0.1): the box (``python -m
molecule_box run``, fresh data dir, a registry holding one plugin of ``--mb`` MB of random bytes, so gzip cannot
shrink it), the paced heartbeat driver of ``a2a_proxy.py`` (50/s over four workspaces, latency from each beat's
scheduled time) and a downloader (a role of this file: ``--downloads`` concurrent GETs of
``/workspaces/:id/plugins/big/download`` with the workspace's own token, each body read whole and checked
against the size the box announced). Phases:

  1. baseline: heartbeats alone;
  2. downloads: the same heartbeats while every download runs, twice: the first round ("packing") packs the
     plugin (one packing shared by the concurrent downloads), the second ("packed") is served from the packed
     copy. The heartbeat p99 checked is the worse of the two.

The ceiling, measured in the same run on the same files: packing the plugin once with the box's own packer
in this process (MB/s). Reported: download throughput (MB/s of bodies delivered, and as a ratio to the
ceiling), the box's peak RSS above its idle RSS (VmRSS sampled every 50 ms), heartbeat p50/p99 of both phases.
Targets: peak RSS at most 100 MB above idle, heartbeat p99 with downloads at most 50 ms, every download 200.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import a2a_proxy as ap

TARGET_RSS_MB = 100.0
TARGET_P99_MS = 50.0


def role_downloads(args: argparse.Namespace) -> None:
    """--n concurrent downloads; prints one JSON line: statuses, bytes, seconds."""
    import httpx
    import trio

    outcome: dict[str, Any] = {"ok": 0, "failed": [], "bytes": 0}

    async def one(client: httpx.AsyncClient) -> None:
        async with client.stream("GET", f"/workspaces/{args.wid}/plugins/big/download",
                                 headers={"Authorization": f"Bearer {args.token}"}) as response:
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
            if response.status_code == 200 and size == int(response.headers["content-length"]):
                outcome["ok"] += 1
                outcome["bytes"] += size
            else:
                outcome["failed"].append(response.status_code)

    async def main() -> None:
        limits = httpx.Limits(max_connections=args.n, max_keepalive_connections=args.n)
        async with httpx.AsyncClient(base_url=args.url, timeout=120, limits=limits) as client:
            start = time.monotonic()
            async with trio.open_nursery() as nursery:
                for _ in range(args.n):
                    nursery.start_soon(one, client)
            outcome["seconds"] = time.monotonic() - start
        print(json.dumps(outcome), flush=True)

    trio.run(main)


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


class RSSSampler:
    """The box's VmRSS every 50 ms in a thread, for the duration of the ``with`` block."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, vm_rss_mb(self.pid))

    def __enter__(self) -> RSSSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_registry(root: Path, mb: int) -> Path:
    plugin = root / "registry" / "big"
    (plugin / "data").mkdir(parents=True)
    (plugin / "plugin.yaml").write_text('name: big\nversion: "1.0.0"\n')
    for i in range(mb):
        (plugin / "data" / f"blob-{i:03}.bin").write_bytes(os.urandom(1024 * 1024))
    return root / "registry"


def ceiling_mb_s(registry: Path) -> float:
    """Packing the plugin once with the box's packer, in this process: what one core of gzip reaches."""
    from molecule_box.agent_plugins import tree

    scanned = tree.scan(registry / "big", tree.Limits(1 << 40, 1 << 20))
    start = time.monotonic()
    tree.pack(scanned, io.BytesIO())
    return scanned.size / (1024 * 1024) / (time.monotonic() - start)


def drive(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="plugins-bench-"))
    procs = ap.Procs(tmp)
    print(f"plugin download bench: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, temp dir {tmp}",
          flush=True)
    try:
        registry = make_registry(tmp, args.mb)
        ceiling = ceiling_mb_s(registry)
        port = ap.free_port()
        box = ap.start_box(procs, port, args.box_src, MOLECULE_BOX_PLUGINS_DIR=str(registry))
        box_url = f"http://{ap.HOST}:{port}"
        ws = ap.setup_box(box_url, {})
        (wid, token), beaters = ws["caller"], ws["beaters"]
        time.sleep(1)
        idle = vm_rss_mb(box.pid)

        baseline: dict[str, Any] = {}
        with ap.heartbeats(procs, box_url, beaters, args.hb_rate, baseline, "baseline"):
            time.sleep(args.seconds)
        rounds: list[dict[str, Any]] = []
        loaded: dict[str, Any] = {}
        with RSSSampler(box.pid) as rss:
            for label in ("packing", "packed"):
                with ap.heartbeats(procs, box_url, beaters, args.hb_rate, loaded, label):
                    proc = procs.start("downloads", [sys.executable, str(Path(__file__).resolve()), "--role",
                                                     "downloads", "--url", box_url, "--wid", wid, "--token", token,
                                                     "--n", str(args.downloads)], stdout=subprocess.PIPE)
                    rounds.append(ap.role_json(proc, 600))
        mb_total = sum(r["bytes"] for r in rounds) / (1024 * 1024)
        seconds = sum(r["seconds"] for r in rounds)
        throughput = mb_total / seconds
        print(f"\n== {args.downloads} concurrent downloads of a {args.mb} MB plugin, two rounds")
        for i, r in enumerate(rounds, 1):
            print(f"round {i}: {r['ok']} ok, failed {r['failed']}, {r['bytes'] / 2**20:.0f} MB in {r['seconds']:.2f} s "
                  f"({r['bytes'] / 2**20 / r['seconds']:.0f} MB/s)")
        print(f"ceiling: packing the plugin once in-process {ceiling:.1f} MB/s; throughput {throughput:.0f} MB/s "
              f"= {throughput / ceiling:.2f} x ceiling")
        print(f"box RSS: idle {idle:.1f} MB, peak {rss.peak:.1f} MB (+{rss.peak - idle:.1f} MB)")
        for label, h in (("baseline", baseline["baseline"]), *loaded.items()):
            print(f"heartbeats {label:<9} n {h.get('n')}  p50 {h.get('p50', math.nan):.2f} ms  "
                  f"p99 {h.get('p99', math.nan):.2f} ms  max {h.get('max', math.nan):.2f} ms  "
                  f"errors {h.get('errors') or 0}  SQLite over 50 ms {h.get('slow_sqlite')}")
        during = {"p99": max(h.get("p99", math.inf) for h in loaded.values()),
                  "errors": sum(h.get("errors") or 0 for h in loaded.values())}
        ok = sum(r["ok"] for r in rounds)
        checks = [("downloads answered 200, whole", ok, f"= {2 * args.downloads}", ok == 2 * args.downloads),
                  ("throughput / ceiling", throughput / ceiling, "report", True),
                  ("peak RSS above idle (MB)", rss.peak - idle, f"<= {TARGET_RSS_MB:g}",
                   rss.peak - idle <= TARGET_RSS_MB),
                  ("heartbeat p99 during downloads (ms)", during.get("p99", math.nan), f"<= {TARGET_P99_MS:g}",
                   during.get("p99", math.inf) <= TARGET_P99_MS and not during.get("errors"))]
        return ap.print_checks(checks)
    finally:
        procs.finish(keep=args.keep)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--downloads", type=int, default=50, help="concurrent downloads per round")
    parser.add_argument("--mb", type=int, default=20, help="size of the plugin in MB (random bytes)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of baseline heartbeats")
    parser.add_argument("--hb-rate", type=float, default=50.0, help="heartbeats per second")
    ap.box_options(parser)
    parser.add_argument("--role", choices=["downloads"])
    parser.add_argument("--url")
    parser.add_argument("--wid")
    parser.add_argument("--token")
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    if args.role == "downloads":
        role_downloads(args)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
