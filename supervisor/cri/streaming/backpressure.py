"""Input a streaming client sends faster than its consumer takes it (a process that does not read
its stdin, a pod port that does not read) waits in the kernel's socket buffers, not in the
daemon's memory: past MAX_QUEUED bytes queued for a session, reading from the client stops
until the consumer has taken half of them (SPDY and client-go's WebSocket have no flow control of
their own; spdystream behaves alike, blocking its frame reader).

While reading is stopped the client's disconnect cannot be read either, and the exec it started
would be left running: the socket's TCP state is watched instead (a FIN or RST received moves it
out of ESTABLISHED), and a client gone counts as the session's end.

    budget = InputBudget(on_full=lambda full: ...)   # pause/resume whatever feeds the session
    budget.add(len(data)); ...; budget.take(len(data))
    if not await budget.room(transport): ...         # the client went away while it waited
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

MAX_QUEUED = 1 << 20  # bytes received and not yet taken, per session
WATCH_INTERVAL = 0.5  # seconds between looks at a paused connection's TCP state
TCP_ESTABLISHED = 1  # linux/tcp_states.h


def peer_gone(transport: asyncio.BaseTransport | None) -> bool:
    """The client closed or reset the connection (readable or not)."""
    if transport is None or transport.is_closing():
        return True
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)
    except OSError:
        return True
    return bool(state[0] != TCP_ESTABLISHED)


class InputBudget:
    def __init__(self, on_full: Callable[[bool], None] | None = None, limit: int = MAX_QUEUED) -> None:
        self.limit = limit
        self.queued = 0
        self._on_full = on_full
        self._room = asyncio.Event()
        self._room.set()

    @property
    def full(self) -> bool:
        return not self._room.is_set()

    def add(self, n: int) -> None:
        self.queued += n
        if self.queued > self.limit and not self.full:
            self._room.clear()
            if self._on_full is not None:
                self._on_full(True)

    def take(self, n: int) -> None:
        self.queued = max(0, self.queued - n)
        if self.full and self.queued <= self.limit // 2:
            self._room.set()
            if self._on_full is not None:
                self._on_full(False)

    def release(self) -> None:
        """Nothing queued any more (the session ended): whoever waits goes on."""
        self.take(self.queued)

    async def room(self, transport: asyncio.BaseTransport | None) -> bool:
        """True once there is room; False if the client went away meanwhile."""
        while self.full:
            try:
                await asyncio.wait_for(self._room.wait(), WATCH_INTERVAL)
            except TimeoutError:
                if peer_gone(transport):
                    return False
        return True


async def watch_paused(budget: InputBudget, transport: asyncio.BaseTransport, gone: Callable[[], None]) -> None:
    """While `budget` is full (the transport's reading paused), call `gone` if the client leaves."""
    if not await budget.room(transport):
        gone()
