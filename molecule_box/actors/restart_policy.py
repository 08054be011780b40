"""When a workload that died on its own is started again, and when the box gives up.

OTP's restart intensity (at most ``limit`` restarts within ``window``
seconds) with Nomad's growing delay between attempts, as plain arithmetic on
timestamps the caller passes in: no clock reads and no I/O here, so the
policy is tested with plain numbers and the actor supplies
``trio.current_time()``. Only unexpected exits count; stops the box asked
for (pause, hibernate, restart, delete) never reach this module.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

#: Longest wait between two automatic restarts, however many came before.
MAX_DELAY = 60.0
#: Lines and characters of the workload's output kept in a failure reason.
TAIL_LINES = 20
TAIL_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do about one unexpected exit."""

    #: Start the workload again (after ``delay`` seconds); False: give up and mark the workspace failed.
    restart: bool
    delay: float
    #: Exits counted in the current window, this one included.
    exits: int


class RestartPolicy:
    """Counts unexpected exits in a sliding window; one instance per workspace actor."""

    def __init__(self, limit: int, window: float, first_delay: float, max_delay: float = MAX_DELAY) -> None:
        self.limit = limit
        self.window = window
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._exits: collections.deque[float] = collections.deque()

    @classmethod
    def from_settings(cls, settings: Any) -> RestartPolicy:
        return cls(settings.restart_limit, settings.restart_window_seconds, settings.restart_backoff_seconds)

    def on_exit(self, now: float) -> Decision:
        """Record an unexpected exit at ``now`` (monotonic seconds) and decide.

        The n-th exit within the window is restarted after ``first_delay * 2**(n-1)``
        (capped at ``max_delay``); the exit that would need restart number ``limit + 1``
        gives up instead. Exits older than the window no longer count, so a workload
        that crashes once a day is restarted every time, right away.
        """
        while self._exits and self._exits[0] <= now - self.window:
            self._exits.popleft()
        self._exits.append(now)
        count = len(self._exits)
        if count > self.limit:
            return Decision(restart=False, delay=0.0, exits=count)
        delay = min(self.max_delay, self.first_delay * 2 ** (count - 1))
        return Decision(restart=True, delay=delay, exits=count)

    def reset(self) -> None:
        """Forget past exits: an operator's restart, resume or wake starts a fresh window."""
        self._exits.clear()


def tail(text: str, *, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` non-empty lines of ``text``, at most ``chars`` characters."""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    joined = "\n".join(kept)
    return joined[-chars:]


def failure_reason(*, exits: int, window: float, exit_code: int | None, oom_killed: bool, log_tail: str) -> str:
    """The ``failure_reason`` of a workspace whose workload kept dying: what, how often, and its last words."""
    how = "was killed by the kernel's OOM killer (raise its tier's memory)" if oom_killed else (
        f"exited with code {exit_code}" if exit_code is not None else "stopped")
    reason = (f"workload stopped {exits} times within {window:g}s, so it is no longer restarted: "
              f"last time it {how}")
    output = tail(log_tail)
    return f"{reason}; last output:\n{output}" if output else f"{reason}; it wrote no output"
