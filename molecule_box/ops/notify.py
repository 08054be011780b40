"""systemd's notify protocol (sd_notify(3)), spoken natively over one trio datagram socket.

Why not a library: the protocol is newline-separated ``KEY=VALUE`` lines sent
as one datagram to ``$NOTIFY_SOCKET`` (``@`` prefix: abstract namespace); the
Python packages for it are stale, need C headers, or block. Sending through
``trio.socket`` never blocks the loop, and pinging the watchdog *from the
loop* is the point: a wedged loop stops the pings, systemd kills the box with
SIGABRT and ``Restart=on-failure`` brings it back.

Errors are logged and otherwise ignored, as the man page advises: a box must
not fail because its supervisor stopped listening.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ..box import Box

log = logging.getLogger(__name__)

#: How often ``STATUS=`` is refreshed with the workspace counts.
STATUS_INTERVAL = 15.0
#: Longest one notification may wait for room in the manager's socket buffer.
SEND_TIMEOUT = 1.0


class Notifier:
    """A channel to the service manager; every method is a no-op when ``NOTIFY_SOCKET`` is unset."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address or None
        #: Seconds between ``WATCHDOG=1`` pings (half the timeout, per sd_watchdog_enabled(3)); None: no watchdog.
        self.watchdog_interval = watchdog_usec / 2_000_000 if watchdog_usec else None
        self._sock: trio.socket.SocketType | None = None
        self._warned = False
        self._stopping_sent = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (the watchdog is ours only if the
        pid matches)."""
        environ = os.environ if environ is None else environ
        usec: int | None = None
        raw_usec, raw_pid = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
        if raw_usec.isdigit() and int(raw_usec) > 0:
            mine = str(os.getpid() if pid is None else pid)
            usec = int(raw_usec) if raw_pid in ("", mine) else None
        return cls(environ.get("NOTIFY_SOCKET"), watchdog_usec=usec)

    async def send(self, *fields: str) -> None:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram."""
        if self.address is None:
            return
        if self._sock is None:
            self._sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            # A manager that stops reading must not stall the caller (the stop path sends STOPPING=1 first).
            with trio.move_on_after(SEND_TIMEOUT) as scope:
                await self._sock.sendto("\n".join(fields).encode(), self.address)
            if scope.cancelled_caught:
                raise TimeoutError(f"not sent within {SEND_TIMEOUT:g}s")
        except OSError as exc:
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "systemd notify socket %r: %s", self.address.replace("\0", "@"), exc)

    async def stopping(self, status: str) -> None:
        """``STOPPING=1`` once, however many paths report the shutdown."""
        if not self._stopping_sent:
            self._stopping_sent = True
            await self.send("STOPPING=1", f"STATUS={status}")

    async def watchdog(self) -> None:
        """Ping ``WATCHDOG=1`` every half timeout until cancelled; returns at once without a watchdog."""
        if self.watchdog_interval is None or self.address is None:
            return
        while True:
            await self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)

    async def report_status(self, box: Box) -> None:
        """Keep ``STATUS=`` current with the workspace counts; send ``STOPPING=1`` when shutdown starts."""
        while not box.shutdown_requested.is_set():
            with trio.move_on_after(STATUS_INTERVAL):
                await box.shutdown_requested.wait()
            if not box.shutdown_requested.is_set():
                await self.send(f"STATUS={status_line(box)}")
        await self.stopping(stopping_line(box))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def status_line(box: Box) -> str:
    """One line for ``systemctl status``: where the box serves and how many workspaces are in each state."""
    counts = box.status_counts()
    states = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "none"
    return f"serving on {', '.join(box.urls)}; workspaces: {states}"


def stopping_line(box: Box) -> str:
    return f"stopping: finishing in-flight requests (up to {box.settings.shutdown_grace_seconds:g}s)"
