"""Talking to one shim: containerd's runtime v2 contract, from the daemon's side.

`start` runs `<binary> -namespace NS -address SOCK -publish-binary BIN -id ID start` in the
bundle, with TTRPC_ADDRESS naming our events endpoint and the runtime options on stdin; the
binary prints the ttrpc address of the shim it left running. `delete` runs the same binary
with `delete` when the shim is gone, to clean up and learn the exit status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf import empty_pb2
from google.protobuf.message import Message

from dockyard_api.containerd.runtime.v2.task import shim_pb2
from shim.ttrpc import ConnectionClosed, TTRPCClient
from supervisor.errors import Internal, Unavailable
from supervisor.runtime.bundle import Bundle

log = logging.getLogger("dockyard.runtime")
TASK_SERVICE = "containerd.task.v2.Task"
NAMESPACE_KEY = "containerd-namespace-ttrpc"
START_TIMEOUT = 30.0
M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class ShimBinary:
    """How to run a shim: the command (a path, or our own `python -m shim`) and where we listen."""

    command: tuple[str, ...]
    daemon_address: str  # the gRPC socket, passed as -address
    ttrpc_address: str  # our events endpoint, passed as TTRPC_ADDRESS
    publish_binary: str
    foreign: bool = False  # not Dockyard's own shim: it takes the spec exactly as written

    def args(self, bundle: Bundle, action: str, debug: bool = False) -> list[str]:
        return [*self.command, "-namespace", bundle.namespace, "-address", self.daemon_address,
                "-publish-binary", self.publish_binary, "-id", bundle.id, *(["-debug"] if debug else []),
                action]

    async def _run(self, bundle: Bundle, action: str, stdin: bytes) -> bytes:
        # subprocess in a worker thread, not the event loop's spawner: CPython's fork path
        # closes every inherited fd (close_fds), so no descriptor of the daemon's (gRPC's
        # wakeup pipes, sockets) can leak into a shim that outlives it.
        args = self.args(bundle, action)
        env = {**os.environ, "TTRPC_ADDRESS": self.ttrpc_address}
        try:
            res = await asyncio.to_thread(subprocess.run, args, cwd=bundle.path, input=stdin, capture_output=True,
                                          env=env, timeout=START_TIMEOUT, close_fds=True, check=False)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"shim {action} for {bundle.id} did not finish in {START_TIMEOUT:.0f}s") from None
        except OSError as exc:
            raise Internal(f"shim {action} for {bundle.id}: cannot run {args[0]}: {exc.strerror}") from None
        if res.returncode != 0:
            detail = (res.stderr or res.stdout).decode(errors="replace").strip()
            raise Internal(f"shim {action} for {bundle.id} failed (exit {res.returncode}): {detail}")
        return res.stdout

    async def start(self, bundle: Bundle, options: bytes) -> str:
        """Launch the shim; returns the ttrpc address it serves on.

        Dockyard's own shim has a fast path: when its zygote is warm, the daemon hands it the
        listening socket directly instead of running `python -m shim start` (which costs an
        interpreter start, ~100 ms); the command runs when there is no zygote yet."""
        if self.command[-2:] == ("-m", "shim"):  # Dockyard's own shim, run by this interpreter
            address = await asyncio.to_thread(_start_via_zygote, bundle, self.ttrpc_address)
            if address:
                return address
        return (await self._run(bundle, "start", options)).decode().strip()

    async def delete(self, bundle: Bundle) -> shim_pb2.DeleteResponse:
        """Clean up after a shim that is gone; the response carries the exit status it knew."""
        return shim_pb2.DeleteResponse.FromString(await self._run(bundle, "delete", b""))


def _start_via_zygote(bundle: Bundle, events: str) -> str | None:
    from shim.__main__ import launch_for, start_shim
    from shim.zygote import NoAnswer

    try:
        return start_shim(launch_for(bundle.namespace, bundle.id, str(bundle.path), events), fork=False)
    except NoAnswer as exc:
        raise Unavailable(f"shim start for {bundle.id}: {exc}") from None


class ShimClient:
    """The Task API of one connected shim."""

    def __init__(self, conn: TTRPCClient, bundle: Bundle) -> None:
        self.conn = conn
        self.bundle = bundle

    @classmethod
    async def connect(cls, address: str, bundle: Bundle, on_close: Callable[[], object],
                      timeout: float = 5.0) -> ShimClient:
        conn = await TTRPCClient.connect(address, timeout=timeout, on_close=on_close)
        return cls(conn, bundle)

    async def call(self, method: str, request: Message, response: type[M], timeout: float | None = None) -> M:
        return await self.conn.call(TASK_SERVICE, method, request, response, timeout=timeout,
                                    metadata={NAMESPACE_KEY: self.bundle.namespace})

    async def shutdown(self) -> None:
        """Ask the shim to exit; it may drop the connection before answering, which is fine."""
        with contextlib.suppress(ConnectionClosed, Unavailable):
            await self.call("Shutdown", shim_pb2.ShutdownRequest(id=self.bundle.id), empty_pb2.Empty, timeout=10)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.conn.wait_closed(), 10)
        await self.conn.close()
