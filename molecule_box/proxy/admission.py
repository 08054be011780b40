"""Admission control for the proxy: how many calls are being *worked on* at once.

Why: the box is one trio loop. With N proxied calls runnable at once, every
other task (a heartbeat, an API request, an actor) waits for N steps of proxy
work at each of its own awaits; a heartbeat makes about ten of them (server,
actor, group commit, reply), so under a saturating A2A load it waited as
long as a proxied call did (measured: p50 35 ms, p99 66 ms with 32 callers;
p50 7.5 ms with at most 4 calls worked on at once, and more proxy throughput,
not less: fewer runnable tasks means less scheduling work per request).

Only the CPU phases count: from the read request (caller auth, hierarchy,
normalisation) until its bytes are sent to the agent, and from the agent's
response head until a reply of up to 64 KiB is handed to our client. The slot
is left before every wait in between (a commit of a queued call, a DNS
lookup, a new connection, the agent's answer, a stream's next event), so
2,000 calls to a slow agent are all in flight together, and a slow client
holds none either (its request body is read before admission, a big reply is
written outside the slot). Waiters are served in FIFO order (trio's
Semaphore), so no call starves. One wait stays inside a slot on purpose: a
token's very first use commits that it was used before the call goes on (it
ends the register bootstrap), once per token. Admitting only the first phase was measured
not to help: relaying and logging the reply is half of a call's work.
"""

from __future__ import annotations

import trio


class Admission:
    """One call's hold on the proxy's work slots: ``await enter()`` / ``leave()``, any number of times.

    ``leave()`` is idempotent, so it can be the connection pool's "request sent" callback, called again on
    a retried send, and called once more in a ``finally``."""

    __slots__ = ("_held", "_slots")

    def __init__(self, slots: trio.Semaphore) -> None:
        self._slots = slots
        self._held = False

    async def enter(self) -> None:
        """Take a slot; a free one without a scheduling round (trio's ``acquire`` always yields first).

        A free slot means nobody waits for one (a release hands its slot straight to the first waiter), so
        taking it at once keeps the FIFO order. Under load a call enters two or three times; each yield is a
        trip through trio's run queue behind every other runnable task."""
        if not self._held:
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                await self._slots.acquire()
            self._held = True

    def leave(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()
