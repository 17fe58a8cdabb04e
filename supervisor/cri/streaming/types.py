"""What the streaming server asks of the runtime: the requests behind its URLs, and the sessions
(a process's stdio) and connections (a pod's port) it streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

STDOUT, STDERR = 1, 2


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False


@dataclass(frozen=True)
class PortForwardRequest:
    pod_id: str
    ports: tuple[int, ...] = ()


class ProcessSession(Protocol):
    """A process's stdio while a client streams it."""

    # At the client's end of input: True ends the session (an attach detaches), False closes the
    # process's stdin and streams on until it exits.
    stdin_eof_ends: bool

    def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(STDOUT or STDERR, data) until the process exits (or the session ends)."""
        ...

    async def write(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def resize(self, width: int, height: int) -> None: ...

    async def exit_code(self) -> int | None:
        """After output() ended: the exit code; None when the process still runs (a detach)."""
        ...

    async def close(self) -> None:
        """The client is gone: end what the session started (an exec's process is killed)."""
        ...


class Backend(Protocol):
    async def exec(self, request: ExecRequest) -> ProcessSession: ...

    async def attach(self, request: AttachRequest) -> ProcessSession: ...

    async def dial(self, pod_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...
