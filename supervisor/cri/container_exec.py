"""ExecSync, and what every exec into a CRI container starts from (the streaming Exec and
Attach too, supervisor/cri/stream_backend.py): the running task and its init's process spec.

    out = await ctrs.exec_sync(cid, ["ls"], 10)  # ExecResult(stdout, stderr, exit_code)
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard_common.aio import uninterrupted
from dockyard_common.errors import (
    DeadlineExceeded,
    DockyardError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
)
from dockyard_common.jsonutil import json_value
from dockyard_common.types import AnyValue, Status
from supervisor.cri.container_records import KILL_WAIT, ContainerStore
from supervisor.cri.container_types import ContainerConfig
from supervisor.cri.inputs import no_nul
from supervisor.runtime.task import Task
from supervisor.runtime.types import ExecOptions

PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
EXEC_OUTPUT_CAP = 16 << 20  # bytes of each stream ExecSync keeps (containerd's maxExecSyncSize)


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


class ContainerExec(ContainerStore):
    async def exec_target(self, cid: str) -> tuple[str, Task, dict[str, Any]]:
        """For an exec in running container `cid`: its full id, task and init's process spec (the
        exec's starting point: user, env, cwd, capabilities). FailedPrecondition if it does not run."""
        found = await self._find(cid)
        cid = found.record.id
        try:
            task = self.d.tasks.get(self.namespace, cid)
            running = (await task.state()).status == Status.RUNNING
        except NotFound:
            running = False
        if not running:
            raise FailedPrecondition(f"container {cid} is not running")
        assert found.record.spec is not None
        spec = json_value(found.record.spec.value, f"container {cid}: its stored spec", Internal)
        return cid, task, dict(spec["process"])

    async def config_of(self, cid: str) -> tuple[str, ContainerConfig]:
        """Container `cid`'s full id and CRI config (NotFound, InvalidArgument)."""
        found = await self._find(cid)
        return found.record.id, found.config

    async def exec_sync(self, cid: str, cmd: builtins.list[str], timeout: float) -> ExecResult:
        """Run `cmd` in the running container and collect its output; DeadlineExceeded (the
        process killed) when it runs longer than `timeout` seconds (0: no limit)."""
        if not cmd:
            raise InvalidArgument("exec sync: cmd must not be empty")
        no_nul("exec sync: cmd", cmd)
        cid, task, process = await self.exec_target(cid)
        process.update(args=list(cmd), terminal=False)
        exec_id = f"exec-sync-{secrets.token_hex(6)}"
        await asyncio.to_thread(self.exec_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        fifo_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="exec-", dir=self.exec_dir))
        collector: _Collector | None = None
        try:
            collector = _Collector(fifo_dir)
            await task.exec(exec_id, ExecOptions(spec=AnyValue(PROCESS_TYPE_URL, json.dumps(process).encode()),
                                                 stdout=str(fifo_dir / "stdout"), stderr=str(fifo_dir / "stderr")))
            try:
                await task.start(exec_id)
                try:
                    exit_ = await asyncio.wait_for(task.wait(exec_id), timeout if timeout > 0 else None)
                except TimeoutError:
                    with contextlib.suppress(DockyardError):
                        await task.kill(signal.SIGKILL, exec_id=exec_id)
                    with contextlib.suppress(DockyardError, TimeoutError):
                        await asyncio.wait_for(task.wait(exec_id), KILL_WAIT)
                    raise DeadlineExceeded(f"exec sync in container {cid}: command {cmd[0]!r} timed out after "
                                           f"{timeout:g}s and was killed") from None
            finally:
                with contextlib.suppress(DockyardError):
                    await uninterrupted(task.delete(exec_id))
            stdout, stderr = collector.finish()
            return ExecResult(stdout, stderr, exit_.exit_status)
        finally:
            if collector is not None:
                collector.close()
            await asyncio.to_thread(shutil.rmtree, fifo_dir, True)


class _Collector:
    """ExecSync's output: FIFOs drained by the loop as bytes come (the process never blocks on a
    full pipe), each stream capped at EXEC_OUTPUT_CAP. Made on the loop (mkfifo and a
    non-blocking open do not wait)."""

    def __init__(self, fifo_dir: Path) -> None:
        self.loop = asyncio.get_running_loop()
        self.fds: dict[str, int] = {}
        self.data: dict[str, bytearray] = {}
        try:
            for name in ("stdout", "stderr"):
                os.mkfifo(fifo_dir / name, 0o600)
                # O_RDWR: opening never blocks, and no EOF is seen before the shim opened it.
                self.fds[name] = os.open(fifo_dir / name, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                self.data[name] = bytearray()
                self.loop.add_reader(self.fds[name], self._drain, name)
        except OSError as exc:
            self.close()
            raise Internal(f"exec sync: its output pipes: {exc.strerror or exc}") from None

    def _drain(self, name: str) -> None:
        buf = self.data[name]
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.fds[name], 65536):
                room = EXEC_OUTPUT_CAP - len(buf)
                if room > 0:
                    buf += chunk[:room]

    def finish(self) -> tuple[bytes, bytes]:
        """After the process exited (and the shim copied all of its output): what is left."""
        for name in self.fds:
            self._drain(name)
        return bytes(self.data["stdout"]), bytes(self.data["stderr"])

    def close(self) -> None:
        for fd in self.fds.values():
            with contextlib.suppress(Exception):
                self.loop.remove_reader(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
