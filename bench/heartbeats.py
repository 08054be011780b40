#!/usr/bin/env python3
"""Heartbeat benchmark: can one molecule-box serve 10,000 remote agents beating every 30 s?

What one run measures, and why:

1. **Ceiling.** A bare hypercorn-on-trio server (a separate process) with a raw ASGI app that reads the
   body and returns a constant ``{"status":"ok"}``, driven by ``wrk`` with the same heartbeat-sized POST
   and bearer header. This is what the stack itself can do on this machine today; absolute figures
   drift with the machine's load, so the heartbeat rate is also given as a ratio to it
   (``bench/README.md``, "What this stack reaches"). Ceiling runs are interleaved with the box's runs.
2. **Workspaces.** The box (``python -m molecule_box run``, fresh data dir) gets N external workspaces
   through ``POST /workspaces``; each agent then registers (``remote://no-inbound``) so it is ``online``
   and has a heartbeat deadline armed, as a real agent would. Both rates are reported.
3. **Ingest rate.** ``wrk -t1 -c32`` from its own process posts ``/registry/heartbeat`` with each
   workspace's own token, rotating through all N; req/s, p50, p99, non-200 count, ratio to the ceiling.
4. **Latency at the target rate.** 10,000 agents at one beat per 30 s is 334 req/s. A paced open-loop
   driver (this file's ``_drive`` mode, its own process, raw HTTP/1.1 on trio sockets) sends exactly that
   rate across the workspaces for 30 s (one full beat cycle); latency is counted from each request's
   *scheduled* time, so a stalled box cannot hide behind a slowed-down client (no coordinated omission).
   A shorter window can miss the box's periodic pauses (a full garbage collection every few seconds).
5. **Memory.** VmRSS / VmHWM of the box process from ``/proc``: idle with all N restored, and the peak
   during load (sampled every 0.2 s through the whole run).
6. **Restore.** SIGTERM, then start again on the same data dir: time from exec until ``/health`` answers,
   the box's own ``restored N workspace actors in X s`` log line and ``molecule_box_restore_seconds``.
7. **Offline detection.** Restart with ``REMOTE_LIVENESS_STALE_AFTER=2``: every workspace is overdue and
   goes offline at once (the catch-up figure); then each gets exactly one heartbeat (paced driver) and
   falls silent. How late each is marked offline after its deadline comes from the box's histogram
   ``molecule_box_offline_detection_lateness_seconds`` (delta over this phase) and, independently,
   from the admin SSE stream ``/events/stream`` (box timestamps and client receipt times), plus one
   ``GET /workspaces`` one second after the last deadline that must show every workspace offline.
8. A summary table: every figure, its target, PASS/FAIL.

Run: ``python3 bench/heartbeats.py`` (10,000 workspaces, ~4 min) or
``python3 bench/heartbeats.py --workspaces 1000 --quick`` (smoke run, ~1 min).
Only 127.0.0.1 is contacted; every subprocess is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import a2a_proxy as ap

HOST = "127.0.0.1"
HEARTBEAT_PATH = "/registry/heartbeat"
TARGET_RATE = 334.0  # 10,000 workspaces, one beat per 30 s
TARGET_P99_MS = 20.0  # issue #16 (it was 50 before)
TARGET_INGEST_RATIO = 0.85  # issue #16: heartbeat ingest over the ceiling
TARGET_RSS_MB = 400.0
TARGET_RESTORE_S = 5.0
TARGET_LATENESS_S = 1.0
TARGET_KB_PER_WORKSPACE = 20.0
TARGET_RESTORE_MS_PER_WORKSPACE = 0.1
TARGET_RESTORE_50K_S = 10.0
TARGET_INGEST_DRIFT = 0.10
OFFLINE_STALE_AFTER = 2.0

WRK_LUA = r"""
-- POST /registry/heartbeat, rotating through "workspace_id token" lines of a file (args: file, offset).
local ids, toks, n, i = {}, {}, 0, 0
non200, last_bad = 0, 0
local threads = {}

function setup(thread) table.insert(threads, thread) end

function init(args)
  for line in io.lines(args[1]) do
    local id, tok = line:match("^(%S+)%s+(%S+)$")
    if id then n = n + 1; ids[n] = id; toks[n] = tok end
  end
  i = tonumber(args[2] or "0") % n
end

function request()
  i = i % n + 1
  local body = '{"workspace_id": "' .. ids[i] .. '", "active_tasks": 0, "uptime_seconds": 1, "error_rate": 0}'
  return wrk.format("POST", "/registry/heartbeat",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. toks[i]}, body)
end

function response(status, headers, body)
  if status ~= 200 then non200 = non200 + 1; last_bad = status end
end

function done(summary, latency, requests)
  local bad, last = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non200")
    if t:get("last_bad") ~= 0 then last = t:get("last_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "non200": %d, ' ..
    '"last_bad_status": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max, bad, last,
    e.connect, e.read, e.write, e.timeout))
end
"""


# --------------------------------------------------------------------------------------------------
# processes, ports, memory
# --------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout:g}s")


class Processes:
    """Every subprocess this bench starts; ``close()`` stops those still running (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], *, env: dict[str, str] | None = None, log: Path | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        finally:
            if log is not None:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> float:
        """SIGTERM and wait (bounded); SIGKILL if it does not exit. Returns the seconds it took."""
        began = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ! pid {proc.pid} ignored SIGTERM for {timeout:g}s: killing it", flush=True)
                proc.kill()
                proc.wait(10)
        return time.monotonic() - began

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    self.stop(proc, timeout=10.0)
                except (OSError, subprocess.SubprocessError) as exc:  # keep stopping the others
                    print(f"  ! could not stop pid {proc.pid}: {exc}", file=sys.stderr)


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (10^6 bytes, as the target is stated), from /proc/<pid>/status."""
    values = {"VmRSS": 0.0, "VmHWM": 0.0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in values:
                values[key] = int(line.split()[1]) * 1024 / 1e6  # the kernel's "kB" are KiB
    return values["VmRSS"], values["VmHWM"]


class MemorySampler(threading.Thread):
    """Samples the box's VmRSS every 0.2 s; keeps the maximum per phase label."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pid: int | None = None
        self.phase = "start"
        self.peak: dict[str, float] = {}
        self.hwm = 0.0
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.2):
            pid = self.pid
            if pid is None:
                continue
            try:
                rss, hwm = memory_mb(pid)
            except (OSError, ValueError):
                continue
            self.peak[self.phase] = max(self.peak.get(self.phase, 0.0), rss)
            self.hwm = max(self.hwm, hwm)

    def stop(self) -> None:
        self._stop.set()


# --------------------------------------------------------------------------------------------------
# the box
# --------------------------------------------------------------------------------------------------


@dataclass
class BoxProcess:
    proc: subprocess.Popen[bytes]
    port: int
    admin_token: str
    log: Path
    log_offset: int
    started: float  # time.monotonic() just before exec

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, *, admin: bool = False, timeout: float = 30.0) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.admin_token}"} if admin else {}
        req = urllib.request.Request(self.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> dict[str, Any]:
        status, body = self.get("/health", timeout=10)
        if status != 200:
            raise RuntimeError(f"/health answered {status}")
        return json.loads(body)  # type: ignore[no-any-return]

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return body.decode()

    def wait_healthy(self, timeout: float) -> float:
        """Poll ``/health`` every 20 ms; seconds from exec to the first 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the box exited with {self.proc.returncode}; see {self.log}")
            try:
                status, _ = self.get("/health", timeout=2)
                if status == 200:
                    return time.monotonic() - self.started
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"/health did not answer within {timeout:g}s; see {self.log}")

    def log_messages(self) -> Iterator[str]:
        """``msg`` of every JSON log line this incarnation wrote."""
        with open(self.log, "rb") as f:
            f.seek(self.log_offset)
            for raw in f:
                try:
                    yield str(json.loads(raw)["msg"])
                except (ValueError, KeyError, TypeError):
                    continue


def box_env(box_src: Path | None) -> dict[str, str]:
    """The environment the box (and the bulk seeding) runs in: ``--box-src`` first on PYTHONPATH."""
    env = dict(os.environ)
    if box_src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(box_src.resolve()), env.get("PYTHONPATH")]))
    return env


def start_box(procs: Processes, data: Path, port: int, admin_token: str, stale_after: float,
              box_src: Path | None = None) -> BoxProcess:
    env = box_env(box_src)
    for key in list(env):
        if key.startswith("MOLECULE_BOX_") or key in ("JOURNAL_STREAM", "NOTIFY_SOCKET"):
            del env[key]
    env.update(PORT=str(port), BIND_ADDR=HOST, MOLECULE_BOX_DATA=str(data), ADMIN_TOKEN=admin_token,
               REMOTE_LIVENESS_STALE_AFTER=f"{stale_after:g}", MOLECULE_BOX_LOG_LEVEL="info")
    log = data.parent / "box.log"
    offset = log.stat().st_size if log.exists() else 0
    started = time.monotonic()
    proc = procs.start([sys.executable, "-m", "molecule_box", "run"], env=env, log=log, cwd=data.parent)
    return BoxProcess(proc, port, admin_token, log, offset, started)


def metric_value(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def histogram(text: str, name: str) -> tuple[dict[float, float], float, float]:
    """(cumulative count per upper bound, sum, count) of a Prometheus histogram without labels."""
    buckets: dict[float, float] = {}
    for le, value in re.findall(rf'^{re.escape(name)}_bucket{{le="([^"]+)"}} (\S+)$', text, re.MULTILINE):
        buckets[math.inf if le == "+Inf" else float(le)] = float(value)
    return buckets, metric_value(text, f"{name}_sum") or 0.0, metric_value(text, f"{name}_count") or 0.0


def sqlite_figures(before: str, after: str) -> str:
    """What the box's SQLite COMMITs and checkpoints took between two /metrics texts: count, mean, how many
    over 20 and 50 ms (a heartbeat waits for its commit, so their tail is the heartbeats' tail)."""
    parts = []
    for what in ("commit", "checkpoint"):
        name = f"molecule_box_sqlite_{what}_seconds"
        b0, s0, c0 = histogram(before, name)
        b1, s1, c1 = histogram(after, name)
        n = c1 - c0
        over = {le: (c1 - b1.get(le, 0.0)) - (c0 - b0.get(le, 0.0)) for le in (0.025, 0.05, 0.1) if le in b1}
        mean = (s1 - s0) / n * 1000 if n else math.nan
        parts.append(f"{what}s {n:.0f}, mean {mean:.1f} ms, over 25/50/100 ms: "
                     + "/".join(f"{v:.0f}" for v in over.values()))
    return "; ".join(parts)


@contextlib.contextmanager
def profiled(b: Bench, label: str, seconds: float) -> Iterator[None]:
    """``--profile DIR``: py-spy (GIL holder only: CPU, not waits) of the box for ``seconds`` while the block runs."""
    if b.args.profile is None or b.box is None:
        yield
        return
    b.args.profile.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([ap.py_spy(), "record", "--gil", "--nonblocking", "--threads", "-r", "100", "-p",
                             str(b.box.pid), "-d", str(math.ceil(seconds)), "--format", "raw", "-o",
                             str(b.args.profile / f"{label}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------------------
# load generators: wrk (throughput) and the paced driver (latency at a fixed rate)
# --------------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non200: int
    last_bad_status: int
    socket_errors: int
    #: CPU the server process spent per request (user + system, all threads), when its pid was given.
    cpu_us: float = math.nan

    def line(self) -> str:
        bad = f", non-200 {self.non200} (last {self.last_bad_status})" if self.non200 else ""
        err = f", socket errors {self.socket_errors}" if self.socket_errors else ""
        cpu = f"  CPU {self.cpu_us:4.0f} us/req" if not math.isnan(self.cpu_us) else ""
        return (f"{self.rps:7.0f} req/s  p50 {self.p50_ms:5.1f} ms  p99 {self.p99_ms:6.1f} ms{cpu}  "
                f"({self.requests} requests{bad}{err})")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far: a figure a busy machine disturbs less
    than req/s (other work on the cores slows the server down, but adds little to its own CPU per request)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(url: str, script: Path, pairs: Path, offset: int, seconds: float, connections: int = 32,
            pid: int | None = None) -> WrkResult:
    cpu0 = cpu_seconds(pid) if pid is not None else math.nan
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script), url,
            "--", str(pairs), str(offset)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    match = re.search(r"^BENCH (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    r = json.loads(match.group(1))
    cpu = cpu_seconds(pid) - cpu0 if pid is not None else math.nan
    return WrkResult(
        rps=r["requests"] / (r["duration_us"] / 1e6), p50_ms=r["p50_us"] / 1000, p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000, requests=r["requests"], non200=r["non200"], last_bad_status=r["last_bad_status"],
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
        cpu_us=cpu / r["requests"] * 1e6 if r["requests"] else math.nan,
    )


class RawHTTP:
    """One keep-alive HTTP/1.1 connection on a trio stream; enough for small content-length replies."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stream: trio.SocketStream | None = None
        self.buf = b""

    async def request(self, data: bytes) -> int:
        if self.stream is None:
            self.stream = await trio.open_tcp_stream(HOST, self.port)
            self.buf = b""
        try:
            await self.stream.send_all(data)
            while (end := self.buf.find(b"\r\n\r\n")) < 0:
                await self._fill()
            head, self.buf = self.buf[:end], self.buf[end + 4:]
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
                elif name == b"transfer-encoding":
                    raise RuntimeError("chunked replies are not supported by this client")
            while len(self.buf) < length:
                await self._fill()
            self.buf = self.buf[length:]
            if close:
                await self.aclose()
            return status
        except BaseException:
            await self.aclose()
            raise

    async def _fill(self) -> None:
        assert self.stream is not None
        chunk = await self.stream.receive_some(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    async def aclose(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            with trio.CancelScope(shield=True):
                await stream.aclose()


def heartbeat_request(port: int, wid: str, token: str) -> bytes:
    body = json.dumps({"workspace_id": wid, "active_tasks": 0, "uptime_seconds": 1, "error_rate": 0}).encode()
    return (f"POST {HEARTBEAT_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return math.nan
    rank = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[rank]


async def drive(port: int, pairs: list[tuple[str, str]], rate: float, count: int, offset: int,
                connections: int) -> dict[str, Any]:
    """Open-loop: request k is due at t0 + k/rate (workspace (offset+k) mod N); ``connections`` workers.

    Latency is taken from the due time (what an agent would see) and from the actual send.
    """
    n = len(pairs)
    payloads = [heartbeat_request(port, wid, tok) for wid, tok in pairs]
    due_lat: list[float] = []
    send_lat: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    next_k = 0
    t0 = trio.current_time() + 0.2
    last_done = 0.0

    async def worker() -> None:
        nonlocal next_k, last_done
        conn = RawHTTP(port)
        try:
            while next_k < count:
                k = next_k
                next_k += 1
                due = t0 + k / rate
                await trio.sleep_until(due)
                sent = trio.current_time()
                status = -1
                with trio.move_on_after(10):
                    try:
                        status = await conn.request(payloads[(offset + k) % n])
                    except (OSError, ConnectionError, trio.BrokenResourceError, ValueError, IndexError) as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        status = -2
                done = trio.current_time()
                if status == -1:
                    errors.append("timeout after 10 s")
                    await conn.aclose()
                statuses[status] = statuses.get(status, 0) + 1
                due_lat.append((done - due) * 1000)
                send_lat.append((done - sent) * 1000)
                last_done = time.time()
        finally:
            await conn.aclose()

    with trio.fail_after(count / rate + 60):
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker)
    elapsed = trio.current_time() - t0
    due_lat.sort()
    send_lat.sort()
    return {
        "requests": count, "seconds": elapsed, "rate": count / elapsed if elapsed > 0 else 0.0,
        "statuses": {str(k): v for k, v in sorted(statuses.items())}, "errors": errors[:5],
        "non200": sum(v for k, v in statuses.items() if k != 200), "last_done": last_done,
        "p50_ms": percentile(due_lat, 50), "p90_ms": percentile(due_lat, 90), "p99_ms": percentile(due_lat, 99),
        "max_ms": due_lat[-1] if due_lat else math.nan,
        "send_p50_ms": percentile(send_lat, 50), "send_p99_ms": percentile(send_lat, 99),
    }


def read_pairs(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        wid, _, tok = line.partition(" ")
        if wid and tok:
            out.append((wid, tok))
    return out


def run_driver(port: int, pairs: Path, rate: float, count: int, offset: int = 0,
               connections: int = 32) -> dict[str, Any]:
    """Run the paced driver in its own process and return its JSON summary."""
    argv = [sys.executable, str(Path(__file__).resolve()), "_drive", "--port", str(port), "--pairs", str(pairs),
            "--rate", f"{rate:g}", "--count", str(count), "--offset", str(offset), "--connections", str(connections)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=count / rate + 120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"driver failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------
# the ceiling server
# --------------------------------------------------------------------------------------------------


async def constant_app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """Raw ASGI: read the request body, answer 200 ``{"status":"ok"}`` (what the box answers a heartbeat)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more = message.get("more_body", False)
    body = b'{"status":"ok"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def serve_ceiling(port: int) -> None:
    """hypercorn on trio with the box's own server settings (no access log, no server header, keep-alive 75 s)."""
    import hypercorn.config
    import hypercorn.trio

    config = hypercorn.config.Config()
    config.bind = [f"{HOST}:{port}"]
    config.accesslog = None
    config.include_server_header = False
    config.keep_alive_timeout = 75
    config.backlog = 1024
    trio.run(hypercorn.trio.serve, constant_app, config)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# phases
# --------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    work: Path
    procs: Processes
    sampler: MemorySampler
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    lua: Path = field(init=False)
    pairs_file: Path = field(init=False)
    data: Path = field(init=False)
    box: BoxProcess | None = None
    port: int = 0
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lua = self.work / "heartbeat.lua"
        self.lua.write_text(WRK_LUA)
        self.pairs_file = self.work / "pairs.txt"
        self.data = self.work / "data"
        self.port = free_port()

    def start_box(self, stale_after: float) -> BoxProcess:
        self.box = start_box(self.procs, self.data, self.port, self.admin_token, stale_after, self.args.box_src)
        self.sampler.pid = self.box.pid
        return self.box

    def stop_box(self) -> float:
        assert self.box is not None
        self.sampler.pid = None
        return self.procs.stop(self.box.proc)


def phase_ceiling(b: Bench) -> str:
    """Start the bare server and measure it once; more runs are interleaved with the box's in phase 3."""
    print("\n[1] ceiling: bare hypercorn + trio, raw ASGI constant, wrk -t1 -c32", flush=True)
    port = free_port()
    ceiling = b.procs.start([sys.executable, str(Path(__file__).resolve()), "_ceiling", "--port", str(port)],
                            log=b.work / "ceiling.log")
    b.results["ceiling_pid"] = ceiling.pid
    wait_port(port, 30)
    url = f"http://{HOST}:{port}"
    synthetic = b.work / "synthetic-pairs.txt"  # same shape as the real ones; the constant app checks nothing
    synthetic.write_text("".join(f"{uuid.uuid4()} {secrets.token_urlsafe(32)}\n" for _ in range(1000)))
    run_wrk(url, b.lua, synthetic, 0, 1)  # warm-up
    first = run_wrk(url, b.lua, synthetic, 0, b.args.ceiling_seconds, pid=ceiling.pid)
    print(f"    ceiling          {first.line()}", flush=True)
    b.results["ceiling_runs"] = [first]
    b.results["ceiling_pairs"] = synthetic
    return url


async def _create_all(box: BoxProcess, n: int, concurrency: int) -> list[tuple[str, str]]:
    import httpx

    pairs: list[tuple[str, str] | None] = [None] * n
    failures: list[str] = []
    next_i = 0
    headers = {"Authorization": f"Bearer {box.admin_token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < n and len(failures) < 10:
            i = next_i
            next_i += 1
            r = await client.post("/workspaces", json={"name": f"bench-{i:05d}", "external": True}, headers=headers)
            if r.status_code != 201:
                failures.append(f"{r.status_code} {r.text[:200]}")
                continue
            body = r.json()
            pairs[i] = (body["id"], body["connection"]["auth_token"])

    async with httpx.AsyncClient(base_url=box.url, limits=limits, timeout=60) as client:
        with trio.fail_after(max(120.0, n / 10)):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker, client)
    if failures:
        raise RuntimeError(f"workspace creation failed: {failures[:3]}")
    return [p for p in pairs if p is not None]


async def _register_all(box: BoxProcess, pairs: list[tuple[str, str]], concurrency: int) -> None:
    import httpx

    failures: list[str] = []
    next_i = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_i
        while next_i < len(pairs) and len(failures) < 10:
            wid, tok = pairs[next_i]
            next_i += 1
            r = await client.post("/registry/register", headers={"Authorization": f"Bearer {tok}"},
                                  json={"id": wid, "url": "remote://no-inbound", "agent_card": {"name": "bench"}})
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=box.url, limits=limits, timeout=60) as client:
        with trio.fail_after(max(120.0, len(pairs) / 10)):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker, client)
    if failures:
        raise RuntimeError(f"register failed: {failures[:3]}")


def phase_create(b: Bench) -> None:
    n = b.args.workspaces
    print(f"\n[2] box: {n} external workspaces via POST /workspaces, then one register each", flush=True)
    b.sampler.phase = "create"
    box = b.start_box(stale_after=3600)
    box.wait_healthy(60)
    began = time.monotonic()
    pairs = trio.run(_create_all, box, n, b.args.concurrency)
    created = time.monotonic() - began
    b.pairs_file.write_text("".join(f"{wid} {tok}\n" for wid, tok in pairs))
    began = time.monotonic()
    trio.run(_register_all, box, pairs, b.args.concurrency)
    registered = time.monotonic() - began
    counts = box.health()["workspaces"]
    b.results.update(create_rate=n / created, register_rate=n / registered, pairs=pairs)
    print(f"    created {n} in {created:.1f} s ({n / created:.0f}/s); registered in {registered:.1f} s "
          f"({n / registered:.0f}/s); status counts {counts}", flush=True)
    if counts.get("online") != n:
        raise RuntimeError(f"expected {n} online workspaces, /health says {counts}")
    b.sampler.phase = "idle"
    time.sleep(1.0)
    rss, hwm = memory_mb(box.pid)
    b.results.update(rss_idle=rss, hwm_after_create=hwm)
    print(f"    box RSS with {n} workspaces, idle: {rss:.0f} MB (VmHWM so far {hwm:.0f} MB)", flush=True)


def phase_ingest(b: Bench, ceiling_url: str) -> None:
    assert b.box is not None
    n = b.args.workspaces
    print(f"\n[3] heartbeat ingest: wrk -t1 -c32 rotating over all {n} workspaces "
          f"({b.args.rounds} rounds, interleaved with the ceiling)", flush=True)
    b.sampler.phase = "ingest"
    run_wrk(b.box.url, b.lua, b.pairs_file, n // 2, 2)  # warm-up (page cache, first touches)
    runs: list[WrkResult] = []
    offset = 0
    if b.args.profile is not None:  # a round of its own: py-spy pauses the box, so no measured round is profiled
        with profiled(b, "ingest", b.args.box_seconds):
            run_wrk(b.box.url, b.lua, b.pairs_file, n // 3, b.args.box_seconds)
    for r in range(b.args.rounds):
        res = run_wrk(b.box.url, b.lua, b.pairs_file, offset, b.args.box_seconds, pid=b.box.pid)
        offset = (offset + res.requests) % n
        runs.append(res)
        rss, _ = memory_mb(b.box.pid)
        print(f"    box    round {r + 1}  {res.line()}  RSS {rss:.0f} MB", flush=True)
        ceil = run_wrk(ceiling_url, b.lua, b.results["ceiling_pairs"], 0, b.args.ceiling_seconds,
                       pid=b.results["ceiling_pid"])
        b.results["ceiling_runs"].append(ceil)
        print(f"    ceiling round {r + 1}  {ceil.line()}", flush=True)
    covered = min(n, sum(r.requests for r in runs))
    b.results.update(ingest_runs=runs, ingest_covered=covered)
    print(f"    {covered} of {n} workspaces got at least one heartbeat", flush=True)


def phase_paced(b: Bench) -> None:
    assert b.box is not None
    rate, seconds = TARGET_RATE, b.args.paced_seconds
    count = int(rate * seconds)
    print(f"\n[4] latency at {rate:g} req/s for {seconds:g} s ({count} heartbeats, paced driver, 32 connections)",
          flush=True)
    b.sampler.phase = "paced"
    metrics0 = b.box.metrics()
    res = run_driver(b.port, b.pairs_file, rate, count, offset=len(b.results["pairs"]) // 3)
    sqlite = sqlite_figures(metrics0, b.box.metrics())
    b.results["paced"] = res
    print(f"    achieved {res['rate']:.1f} req/s; from due time p50 {res['p50_ms']:.1f} ms  "
          f"p90 {res['p90_ms']:.1f} ms  p99 {res['p99_ms']:.1f} ms  max {res['max_ms']:.1f} ms; "
          f"from send p50 {res['send_p50_ms']:.1f} ms  p99 {res['send_p99_ms']:.1f} ms; statuses {res['statuses']}",
          flush=True)
    print(f"    SQLite meanwhile: {sqlite}", flush=True)
    if res["errors"]:
        print(f"    errors: {res['errors']}", flush=True)
    rss, hwm = memory_mb(b.box.pid)
    print(f"    box RSS now {rss:.0f} MB, VmHWM {hwm:.0f} MB", flush=True)
    b.results.update(rss_after_load=rss, hwm_box1=hwm)


def phase_restore(b: Bench) -> None:
    assert b.box is not None
    n = b.args.workspaces
    print(f"\n[5/6] restore: SIGTERM, then start again on the same data dir ({n} workspaces)", flush=True)
    stopped = b.stop_box()
    print(f"    box stopped in {stopped:.2f} s (exit {b.box.proc.returncode})", flush=True)
    b.sampler.phase = "restore"
    box = b.start_box(stale_after=3600)
    to_health = box.wait_healthy(120)
    logged = None
    for msg in box.log_messages():
        match = re.match(r"restored (\d+) workspace actors in ([\d.]+)s", msg)
        if match:
            logged = (int(match.group(1)), float(match.group(2)))
    metrics = box.metrics()
    restore_metric = metric_value(metrics, "molecule_box_restore_seconds")
    counts = box.health()["workspaces"]
    time.sleep(1.0)
    rss, hwm = memory_mb(box.pid)
    b.results.update(restore_health=to_health, restore_logged=logged, restore_metric=restore_metric,
                     rss_restored=rss, hwm_restored=hwm, shutdown_seconds=stopped)
    print(f"    /health answered {to_health:.2f} s after exec; log: restored {logged[0] if logged else '?'} actors in "
          f"{logged[1] if logged else float('nan'):.3f} s; molecule_box_restore_seconds {restore_metric}; "
          f"counts {counts}", flush=True)
    print(f"    box RSS after restore {rss:.0f} MB (VmHWM {hwm:.0f} MB)", flush=True)


async def _watch_offline(box: BoxProcess, n: int, online_ts: dict[str, float], offline: dict[str, tuple[float, float]],
                         ready: trio.Event, done: trio.Event) -> None:
    """Read ``/events/stream``: box timestamp of each WORKSPACE_ONLINE, box timestamp and receipt of each OFFLINE."""
    import httpx

    headers = {"Authorization": f"Bearer {box.admin_token}"}
    async with httpx.AsyncClient(base_url=box.url, timeout=httpx.Timeout(10, read=60)) as client, \
            client.stream("GET", "/events/stream", headers=headers) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"/events/stream answered {resp.status_code}")
        async for line in resp.aiter_lines():
            ready.set()
            if not line.startswith("data: ") or ("WORKSPACE_ONLINE" not in line and "WORKSPACE_OFFLINE" not in line):
                continue
            received = time.time()
            frame = json.loads(line[6:])
            ts = datetime.fromisoformat(frame["timestamp"]).timestamp()
            if frame["event"] == "WORKSPACE_ONLINE":
                online_ts[frame["workspace_id"]] = ts
            elif frame["workspace_id"] in online_ts:
                offline[frame["workspace_id"]] = (ts, received)
                if len(offline) >= n:
                    done.set()
                    return


def _worst_bucket(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    """(smallest upper bound holding every new observation, count of new observations) from two scrapes."""
    total = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    for le in sorted(after):
        if after[le] - before.get(le, 0.0) >= total:
            return le, total
    return math.inf, total


def phase_offline(b: Bench) -> None:
    n = b.args.workspaces
    stale = OFFLINE_STALE_AFTER
    print(f"\n[7] offline detection: restart with REMOTE_LIVENESS_STALE_AFTER={stale:g}", flush=True)
    b.stop_box()
    b.sampler.phase = "offline"
    box = b.start_box(stale_after=stale)
    box.wait_healthy(120)
    catch_up_deadline = time.monotonic() + 300
    while time.monotonic() < catch_up_deadline:
        counts = box.health()["workspaces"]
        if counts.get("offline", 0) >= n:
            break
        time.sleep(0.05)
    catch_up = time.monotonic() - box.started
    print(f"    all {n} overdue workspaces offline {catch_up:.2f} s after exec (counts {counts})", flush=True)
    b.results["catch_up"] = catch_up if counts.get("offline", 0) >= n else math.inf

    name = "molecule_box_offline_detection_lateness_seconds"
    before, sum0, count0 = histogram(box.metrics(), name)
    dropped0 = metric_value(box.metrics(), "molecule_box_events_dropped") or 0.0
    rate = b.args.offline_rate
    print(f"    one heartbeat each at {rate:g}/s ({n / rate:.1f} s), then silence; watching /events/stream", flush=True)
    online_ts: dict[str, float] = {}
    offline: dict[str, tuple[float, float]] = {}
    drive_result: dict[str, Any] = {}
    listed: dict[str, int] = {}

    async def run() -> None:
        ready, done = trio.Event(), trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_offline, box, n, online_ts, offline, ready, done)
            with trio.fail_after(10):
                await ready.wait()
            drive_result.update(await trio.to_thread.run_sync(run_driver, b.port, b.pairs_file, rate, n))
            # The last workspace's deadline is its heartbeat + stale; one second later every one must be offline.
            check_at = drive_result["last_done"] + stale + TARGET_LATENESS_S
            await trio.sleep(max(0.0, check_at - time.time()))
            status, body = await trio.to_thread.run_sync(lambda: box.get("/workspaces", admin=True, timeout=60))
            for ws in json.loads(body) if status == 200 else []:
                listed[ws["status"]] = listed.get(ws["status"], 0) + 1
            with trio.move_on_after(5):  # stragglers still in flight on the stream
                await done.wait()
            nursery.cancel_scope.cancel()

    trio.run(run)
    after, sum1, count1 = histogram(box.metrics(), name)
    dropped = (metric_value(box.metrics(), "molecule_box_events_dropped") or 0.0) - dropped0
    worst_le, observed = _worst_bucket(before, after)
    mean = (sum1 - sum0) / (count1 - count0) if count1 > count0 else math.nan
    box_late = sorted(off[0] - (online_ts[w] + stale) for w, off in offline.items())
    seen_late = sorted(off[1] - (online_ts[w] + stale) for w, off in offline.items())
    b.results.update(
        offline_drive=drive_result, offline_hist_worst=worst_le, offline_hist_count=observed, offline_hist_mean=mean,
        offline_box_max=box_late[-1] if box_late else math.nan,
        offline_seen_max=seen_late[-1] if seen_late else math.nan,
        offline_seen_p99=percentile(seen_late, 99), offline_events=len(offline), offline_listed=listed,
        offline_dropped=dropped,
    )
    print(f"    driver: {drive_result['rate']:.0f}/s achieved, statuses {drive_result['statuses']}, "
          f"p99 {drive_result['p99_ms']:.1f} ms", flush=True)
    print(f"    histogram delta: {observed:.0f} observations, mean {mean * 1000:.1f} ms, all <= {worst_le:g} s",
          flush=True)
    print(f"    SSE: {len(offline)}/{n} offline events; "
          f"lateness by box timestamp max {b.results['offline_box_max'] * 1000:.0f} ms; "
          f"as seen by the client p50 {percentile(seen_late, 50) * 1000:.0f} ms  p99 "
          f"{b.results['offline_seen_p99'] * 1000:.0f} ms  max {b.results['offline_seen_max'] * 1000:.0f} ms; "
          f"events dropped {dropped:.0f}", flush=True)
    print(f"    GET /workspaces {TARGET_LATENESS_S:g} s after the last deadline: {listed}", flush=True)


# --------------------------------------------------------------------------------------------------
# bulk seeding and the scale table (--scale)
# --------------------------------------------------------------------------------------------------


async def _seed(data: Path, n: int) -> str:
    """Bench only: N external workspaces whose agents registered (``remote://no-inbound``), written to a fresh
    data dir through the box's own store functions, the way ``POST /workspaces`` and the agent's register
    commit them (the same transitions, rows, token digests and persisted events), without HTTP: creating
    50,000 through the API takes minutes. Runs with the box's source (``--box-src``) so its schema is the box's."""
    from molecule_box.actors import transitions as t
    from molecule_box.bus import EventBus
    from molecule_box.models import Workspace, WorkspaceStatus
    from molecule_box.security import tokens as tk
    from molecule_box.store import Store
    from molecule_box.store import events as event_rows
    from molecule_box.store import tokens as token_rows
    from molecule_box.store import workspaces as workspace_rows

    store = Store(data / "molecule-box.db")
    lines: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        for start in range(0, n, 1000):
            ops: list[Callable[[Any], Any]] = []
            for i in range(start, min(n, start + 1000)):
                now = time.time()
                wid = str(uuid.uuid4())
                created = t.created(Workspace(id=wid, name=f"bench-{i:05d}", status=WorkspaceStatus.PROVISIONING,
                                              runtime="external", backend="external", created_at=now,
                                              updated_at=now, status_changed_at=now), lifecycle=False)
                token = tk.mint()
                registered = t.register(created.workspace, "remote://no-inbound", {"name": "bench"}, now)
                ops.append(workspace_rows.insert(registered.workspace))
                ops.append(token_rows.insert(wid, token.digest, token.prefix))
                ops.extend(event_rows.insert(EventBus.make(kind, wid, payload))
                           for kind, payload in (*created.events, *registered.events))
                lines.append(f"{wid} {token.plaintext}\n")
            await store.write(lambda db, ops=ops: [op(db) for op in ops], bulk=True)
        nursery.cancel_scope.cancel()
    store.close()
    return "".join(lines)  # the "id token" pairs file


def seed_bulk(b: Bench) -> None:
    n = b.args.workspaces
    print(f"\n[2] box: {n} registered external workspaces seeded straight into the store (bulk, bench only)",
          flush=True)
    b.data.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "_seed", "--data", str(b.data), "--n", str(n),
                    "--pairs", str(b.pairs_file)], env=box_env(b.args.box_src), cwd=b.work, check=True,
                   timeout=max(300.0, n / 50))
    print(f"    seeded in {time.monotonic() - began:.1f} s", flush=True)
    b.sampler.phase = "create"
    box = b.start_box(stale_after=3600)
    box.wait_healthy(120)
    counts = box.health()["workspaces"]
    if counts.get("online") != n:
        raise RuntimeError(f"expected {n} online workspaces, /health says {counts}")
    b.results["pairs"] = read_pairs(b.pairs_file)
    b.sampler.phase = "idle"
    time.sleep(1.0)
    rss, hwm = memory_mb(box.pid)
    b.results.update(rss_idle=rss, hwm_after_create=hwm)
    print(f"    box RSS with {n} workspaces, idle: {rss:.0f} MB", flush=True)


def run_scales(args: argparse.Namespace, work: Path, procs: Processes, sampler: MemorySampler) -> bool:
    """The cost table: the same phases (ingest, RSS, restore, offline detection) at each size, one ceiling."""
    first = Bench(argparse.Namespace(**{**vars(args), "workspaces": args.scale[0]}), work, procs, sampler)
    ceiling_url = phase_ceiling(first)
    rows: list[dict[str, float]] = []
    for n in args.scale:
        sub = work / f"n{n}"
        sub.mkdir()
        b = Bench(argparse.Namespace(**{**vars(args), "workspaces": n}), sub, procs, sampler)
        b.results["ceiling_runs"] = []
        b.results["ceiling_pairs"] = first.results["ceiling_pairs"]
        b.results["ceiling_pid"] = first.results["ceiling_pid"]
        sampler.peak.clear()
        seed_bulk(b)
        phase_ingest(b, ceiling_url)
        phase_restore(b)
        phase_offline(b)
        b.stop_box()
        r = b.results
        rows.append({
            "n": n, "ingest": statistics.median(x.rps for x in r["ingest_runs"]),
            "cpu": statistics.median(x.cpu_us for x in r["ingest_runs"]),
            "ceiling": statistics.median(x.rps for x in r["ceiling_runs"]),
            "rss": r["rss_restored"], "restore": r["restore_logged"][1] if r["restore_logged"] else math.nan,
            "health": r["restore_health"], "late": max(r["offline_hist_worst"], r["offline_seen_max"]),
            "late_mean": r["offline_hist_mean"],
        })
    base = rows[0]
    print("\n" + "=" * 100)
    print(f"COST AS THE WORK GROWS  ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end)")
    print("=" * 100)
    print(f"{'workspaces':>10} {'ingest/s':>9} {'ceiling/s':>10} {'ratio':>6} {'vs first':>9} {'CPU us':>7} "
          f"{'RSS MB':>7} {'KB/ws over first':>17} {'restore s':>10} {'ms/ws over first':>17} "
          f"{'exec->/health s':>16} "
          f"{'late worst ms':>14} {'late mean ms':>13}")
    ok = True
    for row in rows:
        ratio = row["ingest"] / row["ceiling"]
        vs_first = ratio / (base["ingest"] / base["ceiling"])
        extra = row["n"] - base["n"]
        kb_per = (row["rss"] - base["rss"]) * 1024 / extra if extra else math.nan
        ms_per = (row["restore"] - base["restore"]) * 1000 / extra if extra else math.nan
        print(f"{row['n']:>10} {row['ingest']:>9.0f} {row['ceiling']:>10.0f} {ratio:>6.2f} {vs_first:>9.2f} "
              f"{row['cpu']:>7.0f} {row['rss']:>7.0f} {kb_per:>17.1f} {row['restore']:>10.3f} "
              f"{ms_per:>17.3f} "
              f"{row['health']:>16.2f} {row['late'] * 1000:>14.0f} {row['late_mean'] * 1000:>13.1f}")
        ok &= math.isnan(kb_per) or kb_per <= TARGET_KB_PER_WORKSPACE
        ok &= math.isnan(ms_per) or ms_per <= TARGET_RESTORE_MS_PER_WORKSPACE
        ok &= row["late"] <= TARGET_LATENESS_S
    last = rows[-1]
    ok &= last["n"] < 50_000 or last["restore"] <= TARGET_RESTORE_50K_S
    ingest_ok = (last["ingest"] / last["ceiling"]) / (base["ingest"] / base["ceiling"]) >= 1 - TARGET_INGEST_DRIFT
    ok &= ingest_ok
    print(f"targets: RSS <= {TARGET_KB_PER_WORKSPACE:g} KB and restore <= {TARGET_RESTORE_MS_PER_WORKSPACE:g} ms "
          f"more per workspace than at the smallest size, 50,000 restored in <= {TARGET_RESTORE_50K_S:g} s, "
          f"ingest ratio at the largest within {TARGET_INGEST_DRIFT:.0%} of the smallest, "
          f"offline lateness <= {TARGET_LATENESS_S:g} s: "
          f"{'ALL MET' if ok else 'MISSED'}", flush=True)
    return ok


# --------------------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------------------


def summary(b: Bench) -> bool:
    r = b.results
    n = b.args.workspaces
    ceilings: list[WrkResult] = r["ceiling_runs"]
    ingest: list[WrkResult] = r["ingest_runs"]
    ceil_rps = statistics.median(c.rps for c in ceilings)
    box_rps = statistics.median(c.rps for c in ingest)
    box_mid = sorted(ingest, key=lambda x: x.rps)[len(ingest) // 2]
    ceil_mid = sorted(ceilings, key=lambda x: x.rps)[len(ceilings) // 2]
    non200 = sum(x.non200 + x.socket_errors for x in ingest)
    box_cpu = statistics.median(x.cpu_us for x in ingest)
    ceil_cpu = statistics.median(c.cpu_us for c in ceilings)
    paced = r["paced"]
    peak_rss = max(b.sampler.peak.values(), default=0.0)
    logged = r["restore_logged"]
    listed = r["offline_listed"]
    all_offline = listed.get("offline", 0) == n and len(listed) == 1
    worst_late = max(r["offline_hist_worst"], r["offline_seen_max"])
    rows: list[tuple[str, str, str, bool | None]] = [
        ("ceiling (bare hypercorn+trio), median",
         f"{ceil_rps:.0f} req/s  p50 {ceil_mid.p50_ms:.1f}  p99 {ceil_mid.p99_ms:.1f} ms", "-", None),
        (f"heartbeat ingest, {n} ws, median",
         f"{box_rps:.0f} req/s  p50 {box_mid.p50_ms:.1f}  p99 {box_mid.p99_ms:.1f} ms",
         f">= {TARGET_RATE:g} req/s", box_rps >= TARGET_RATE),
        ("ingest / ceiling", f"{box_rps / ceil_rps:.2f}", f">= {TARGET_INGEST_RATIO:g} (prototype 0.92)",
         box_rps / ceil_rps >= TARGET_INGEST_RATIO),
        ("server CPU per heartbeat: box / ceiling, median",
         f"{box_cpu:.0f} / {ceil_cpu:.0f} us  (ceiling / box {ceil_cpu / box_cpu:.2f})", "info", None),
        ("non-200 + socket errors under ingest", f"{non200}", "0", non200 == 0),
        ("workspace creation (POST /workspaces)", f"{r['create_rate']:.0f} /s", "-", None),
        ("agent register (POST /registry/register)", f"{r['register_rate']:.0f} /s", "-", None),
        (f"latency at {TARGET_RATE:g}/s: p50 / p99 (from due)",
         f"{paced['p50_ms']:.1f} / {paced['p99_ms']:.1f} ms  ({paced['rate']:.0f}/s)", f"p99 <= {TARGET_P99_MS:g} ms",
         paced["p99_ms"] <= TARGET_P99_MS),
        (f"non-200 at {TARGET_RATE:g}/s", f"{paced['non200']}", "0", paced["non200"] == 0),
        (f"box RSS idle, {n} ws", f"{r['rss_idle']:.0f} MB", f"<= {TARGET_RSS_MB:g} MB",
         r["rss_idle"] <= TARGET_RSS_MB),
        ("box RSS peak, sampled every 0.2 s, all phases", f"{peak_rss:.0f} MB", f"<= {TARGET_RSS_MB:g} MB",
         peak_rss <= TARGET_RSS_MB),
        ("box VmHWM (first box / restored box)", f"{r['hwm_box1']:.0f} / {r['hwm_restored']:.0f} MB",
         f"<= {TARGET_RSS_MB:g} MB", max(r["hwm_box1"], r["hwm_restored"]) <= TARGET_RSS_MB),
        ("restore: exec -> /health 200", f"{r['restore_health']:.2f} s", f"<= {TARGET_RESTORE_S:g} s",
         r["restore_health"] <= TARGET_RESTORE_S),
        ("restore: log 'restored N actors in X s'",
         f"{logged[0]} in {logged[1]:.3f} s (metric {r['restore_metric']:.3f})" if logged else "line not found",
         f"<= {TARGET_RESTORE_S:g} s", bool(logged) and logged[1] <= TARGET_RESTORE_S and logged[0] == n),
        (f"catch-up: {n} overdue -> offline after exec", f"{r['catch_up']:.2f} s", "info", None),
        ("offline lateness, box histogram (worst bucket)",
         (f"<= {r['offline_hist_worst']:g} s "
          f"(mean {r['offline_hist_mean'] * 1000:.0f} ms, {r['offline_hist_count']:.0f} obs)"),
         f"<= {TARGET_LATENESS_S:g} s", r["offline_hist_worst"] <= TARGET_LATENESS_S and r["offline_hist_count"] >= n),
        ("offline lateness, SSE (box ts / seen by client)",
         (f"max {r['offline_box_max'] * 1000:.0f} / {r['offline_seen_max'] * 1000:.0f} ms "
          f"({r['offline_events']}/{n} seen, {r['offline_dropped']:.0f} ev dropped)"),
         f"<= {TARGET_LATENESS_S * 1000:g} ms", r["offline_seen_max"] <= TARGET_LATENESS_S and r["offline_events"] > 0),
        ("all offline 1 s after last deadline (GET /workspaces)", f"{listed}", f"offline = {n}", all_offline),
    ]
    width = max(len(row[0]) for row in rows)
    vwidth = max(len(row[1]) for row in rows)
    twidth = max(len(row[2]) for row in rows)
    print("\n" + "=" * (width + vwidth + twidth + 14))
    print(f"SUMMARY  ({n} workspaces, {os.cpu_count()} cores, python {sys.version.split()[0]}, worst lateness "
          f"{worst_late * 1000:.0f} ms)")
    print("=" * (width + vwidth + twidth + 14))
    print(f"{'figure':<{width}}  {'value':<{vwidth}}  {'target':<{twidth}}  verdict")
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{name:<{width}}  {value:<{vwidth}}  {target:<{twidth}}  {verdict}")
    failed = [row[0] for row in rows if row[3] is False]
    print(f"\n{'ALL TARGETS MET' if not failed else 'MISSED: ' + '; '.join(failed)}", flush=True)
    return not failed


# --------------------------------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", type=int, default=10_000, help="workspaces to create (default 10000)")
    parser.add_argument("--quick", action="store_true", help="one short round of each phase (smoke run)")
    parser.add_argument("--rounds", type=int, help="box/ceiling wrk rounds (default 3, quick 1)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent requests while creating")
    parser.add_argument("--offline-rate", type=float, default=2 * TARGET_RATE,
                        help="heartbeats/s of the single round before silence in phase 7 (default 668: "
                             "deadlines twice as dense as 10,000 agents beating every 30 s)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data, logs) for inspection")
    parser.add_argument("--box-src", type=Path, help="run the box from this source tree (first on PYTHONPATH)")
    parser.add_argument("--seed", action="store_true", help="seed the workspaces in bulk straight into the store "
                        "(as --scale does) instead of creating and registering them through the API")
    parser.add_argument("--profile", type=Path, help="py-spy the box (GIL holder, raw stacks into this dir) "
                        "during an extra ingest round before the measured ones (needs py-spy on PATH)")
    parser.add_argument("--scale", type=lambda v: [int(x) for x in v.split(",")],
                        help="the cost table instead: e.g. 1000,10000,50000 workspaces, each seeded in bulk "
                             "straight into the store; ingest, RSS, restore and offline detection at each")
    args = parser.parse_args(argv)
    if args.workspaces < 10:
        parser.error("--workspaces must be at least 10")
    if args.profile is not None:
        ap.py_spy()  # missing: say so now, not after the seeding
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.ceiling_seconds = 3 if args.quick else 5
    args.box_seconds = 5 if args.quick else 10
    args.paced_seconds = 5 if args.quick else 30  # 30 s: every one of 10,000 workspaces beats once
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="molecule-box-bench-"))
    procs = Processes()
    sampler = MemorySampler()
    sampler.start()
    source = subprocess.run([sys.executable, "-c", "import molecule_box; print(molecule_box.__file__)"],
                            capture_output=True, text=True, cwd=work, timeout=60, check=False,
                            env=box_env(args.box_src)).stdout.strip()
    print(f"molecule-box heartbeat bench: {args.workspaces} workspaces, box from {source or '?'}, work dir {work}",
          flush=True)
    try:
        if args.scale:
            return 0 if run_scales(args, work, procs, sampler) else 1
        b = Bench(args, work, procs, sampler)
        ceiling_url = phase_ceiling(b)
        if args.seed:
            seed_bulk(b)
            b.results.update(create_rate=math.nan, register_rate=math.nan)
        else:
            phase_create(b)
        phase_ingest(b, ceiling_url)
        phase_paced(b)
        phase_restore(b)
        phase_offline(b)
        ok = summary(b)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        sampler.stop()
        procs.close()
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _drive_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="heartbeats.py _drive")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--connections", type=int, default=32)
    a = parser.parse_args(argv)
    result = trio.run(drive, a.port, read_pairs(a.pairs), a.rate, a.count, a.offset, a.connections)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_drive":
        sys.exit(_drive_main(sys.argv[2:]))
    if len(sys.argv) > 1 and sys.argv[1] == "_seed":
        seed_args = argparse.ArgumentParser(prog="heartbeats.py _seed")
        seed_args.add_argument("--data", type=Path, required=True)
        seed_args.add_argument("--n", type=int, required=True)
        seed_args.add_argument("--pairs", type=Path, required=True)
        a = seed_args.parse_args(sys.argv[2:])
        a.pairs.write_text(trio.run(_seed, a.data, a.n))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "_ceiling":
        serve_ceiling(int(sys.argv[sys.argv.index("--port") + 1]))
        sys.exit(0)
    sys.exit(main())
