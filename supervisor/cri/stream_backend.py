"""What the CRI streaming server (supervisor/cri/streaming/) streams: an exec's process through
the runtime (FIFOs to the shim, as ExecSync, but with stdin, a terminal and its size), a
container's own stdio through its shim's attach socket (supervisor/runtime/attach.py), and a
connection to a port inside a pod's network namespace.

    backend = CriStreamBackend(containers, pods)
    session = await backend.exec(ExecRequest(cid, ("sh",), tty=True, stdin=True, stdout=True))
    reader, writer = await backend.dial(pod_id, 80)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from dockyard_common.aio import uninterrupted
from dockyard_common.errors import DockyardError, FailedPrecondition, Internal, InvalidArgument, Unavailable
from dockyard_common.types import AnyValue
from supervisor.cri.containers import KILL_WAIT, PROCESS_TYPE_URL, CriContainers
from supervisor.cri.sandbox import PodSandboxes
from supervisor.cri.sandbox_types import SandboxState
from supervisor.cri.streaming.types import STDERR, STDOUT, AttachRequest, ExecRequest
from supervisor.network.netns import in_netns
from supervisor.runtime import attach
from supervisor.runtime.task import Task
from supervisor.runtime.types import ExecOptions

log = logging.getLogger("dockyard.cri.streaming")

CHUNK = 64 << 10
QUEUE_HIGH = 64  # chunks of output waiting for the client before we stop reading the FIFOs


class CriStreamBackend:
    def __init__(self, containers: CriContainers, pods: PodSandboxes) -> None:
        self.containers = containers
        self.pods = pods

    async def exec(self, request: ExecRequest) -> ExecSession:
        if not request.cmd:
            raise InvalidArgument("exec: cmd must not be empty")
        _, task, process = await self.containers.exec_target(request.container_id)
        process.update(args=list(request.cmd), terminal=request.tty)
        return await ExecSession.start(task, process, self.containers.exec_dir, request)

    async def attach(self, request: AttachRequest) -> AttachAdapter:
        cid, config = await self.containers.config_of(request.container_id)
        session = await attach.open_session(self.containers.d.tasks, self.containers.namespace, cid,
                                            stdin=request.stdin, detach_keys="")
        # containerd's rule: the end of input closes the container's stdin when it was created
        # stdin_once without a terminal; otherwise it only ends this attach.
        return AttachAdapter(session, request, ends=not (config.stdin_once and not config.tty))

    async def dial(self, pod_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to localhost:`port` in the pod's network namespace (the host's for a
        host-network pod), the socket made there by a thread that entered it."""
        pod = await self.pods.status(pod_id)
        if pod.state != SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {pod.id} is not ready")

        def make() -> socket.socket:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)

        sock = await asyncio.to_thread(in_netns, Path(pod.netns), make) if pod.netns else make()
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except OSError as exc:
            sock.close()
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise Unavailable(f"connect to port {port} in pod {pod.id}: {reason}") from None
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock, limit=CHUNK)


class AttachAdapter:
    def __init__(self, session: attach.AttachSession, request: AttachRequest, ends: bool) -> None:
        self.session = session
        self.request = request
        self.stdin_eof_ends = ends

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        async for item in self.session.output():
            if isinstance(item, attach.Exited):
                return
            fd = STDERR if item.stream == "stderr" else STDOUT
            if (self.request.stderr if fd == STDERR else self.request.stdout) or self.session.tty:
                yield fd, item.data

    async def write(self, data: bytes) -> None:
        await self.session.write(data)

    async def close_stdin(self) -> None:
        await self.session.close_stdin()

    async def resize(self, width: int, height: int) -> None:
        await self.session.resize(width, height)

    async def exit_code(self) -> int | None:
        # kubelet's attach reports Success whatever the container's exit: it is the container's
        # status (ContainerStatus), not this session's.
        return None

    async def close(self) -> None:
        await self.session.close()


class ExecSession:
    """A process exec'd into a container for a streaming client: FIFOs we read without blocking
    (O_RDWR: no EOF before the shim opens them), the process killed if the client goes first."""

    stdin_eof_ends = False

    def __init__(self, task: Task, exec_id: str, fifo_dir: Path, tty: bool) -> None:
        self.task = task
        self.exec_id = exec_id
        self.fifo_dir = fifo_dir
        self.tty = tty
        self.loop = asyncio.get_running_loop()
        self.stdin_fd: int | None = None
        self.outputs: dict[int, int] = {}  # fd → STDOUT/STDERR
        self.queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self.reading = False
        self.exited: asyncio.Task[int] | None = None
        self.deleted = False

    @classmethod
    async def start(cls, task: Task, process: dict[str, object], exec_dir: Path,
                    request: ExecRequest) -> ExecSession:
        exec_id = f"exec-{secrets.token_hex(6)}"
        await asyncio.to_thread(exec_dir.mkdir, parents=True, exist_ok=True, mode=0o700)
        fifo_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="exec-", dir=exec_dir))
        self = cls(task, exec_id, fifo_dir, request.tty)
        try:
            paths = self._open(request)
            await task.exec(exec_id, ExecOptions(spec=AnyValue(PROCESS_TYPE_URL, json.dumps(process).encode()),
                                                 terminal=request.tty, **paths))
            try:
                await task.start(exec_id)
            except BaseException:
                self.deleted = True
                with contextlib.suppress(DockyardError):
                    await uninterrupted(task.delete(exec_id))
                raise
        except BaseException:
            self.deleted = True
            await self._release()
            raise
        self.exited = asyncio.create_task(self._wait())
        self._resume()
        return self

    def _open(self, request: ExecRequest) -> dict[str, str]:
        wanted = {"stdin": request.stdin, "stdout": request.stdout, "stderr": request.stderr and not request.tty}
        paths = {}
        try:
            for name, want in wanted.items():
                if not want:
                    continue
                path = self.fifo_dir / name
                os.mkfifo(path, 0o600)
                fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
                if name == "stdin":
                    self.stdin_fd = fd
                else:
                    self.outputs[fd] = STDOUT if name == "stdout" else STDERR
                paths[name] = str(path)
        except OSError as exc:
            raise Internal(f"exec: its stdio pipes: {exc.strerror or exc}") from None
        return paths

    async def _wait(self) -> int:
        try:
            exit_ = await self.task.wait(self.exec_id)
        finally:
            # The shim copied all the output before it reported the exit: read what is left.
            self._pause()
            for fd in self.outputs:
                self._drain(fd, everything=True)
            self.queue.put_nowait(None)
        return exit_.exit_status

    def _drain(self, fd: int, everything: bool = False) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(fd, CHUNK):
                self.queue.put_nowait((self.outputs[fd], chunk))
                if not everything and self.queue.qsize() >= QUEUE_HIGH:
                    self._pause()  # the client is slow: the shim (and the process) wait for it
                    return

    def _pause(self) -> None:
        if self.reading:
            for fd in self.outputs:
                self.loop.remove_reader(fd)
            self.reading = False

    def _resume(self) -> None:
        if not self.reading and (self.exited is None or not self.exited.done()):
            for fd in self.outputs:
                self.loop.add_reader(fd, self._drain, fd)
            self.reading = True

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        while (item := await self.queue.get()) is not None:
            yield item
            if not self.reading and self.queue.qsize() < QUEUE_HIGH // 2:
                self._resume()

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.stdin_fd is not None:
            try:
                view = view[os.write(self.stdin_fd, view):]
            except BlockingIOError:
                await self._writable(self.stdin_fd)
            except OSError:
                return  # the process's input is gone: what it did not read is dropped

    async def _writable(self, fd: int) -> None:
        ready: asyncio.Future[None] = self.loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        self.loop.add_writer(fd, wake)
        try:
            await ready
        finally:
            self.loop.remove_writer(fd)

    async def close_stdin(self) -> None:
        if self.stdin_fd is not None:
            os.close(self.stdin_fd)
            self.stdin_fd = None
            with contextlib.suppress(DockyardError):
                await self.task.close_io(self.exec_id)

    async def resize(self, width: int, height: int) -> None:
        if self.tty and width > 0 and height > 0:
            await self.task.resize_pty(width, height, self.exec_id)

    async def exit_code(self) -> int | None:
        assert self.exited is not None
        return await self.exited

    async def close(self) -> None:
        assert self.exited is not None
        if not self.exited.done():
            with contextlib.suppress(DockyardError):
                await self.task.kill(signal.SIGKILL, exec_id=self.exec_id)
            with contextlib.suppress(DockyardError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), KILL_WAIT)
        if not self.exited.done():
            self.exited.cancel()
        await asyncio.gather(self.exited, return_exceptions=True)
        if not self.deleted:
            self.deleted = True
            with contextlib.suppress(DockyardError):
                await uninterrupted(self.task.delete(self.exec_id))
        await self._release()

    async def _release(self) -> None:
        self._pause()
        for fd in [*self.outputs, *([self.stdin_fd] if self.stdin_fd is not None else [])]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.outputs.clear()
        self.stdin_fd = None
        await asyncio.to_thread(shutil.rmtree, self.fifo_dir, True)
