"""The serving shim: the Task service on its ttrpc socket, the reaper, the event publisher.

`run(launch, listener_fd)` is the whole life of a serving shim, in a process `start` forked
(or the zygote did): detach (own session, stdio on the bundle's `log` FIFO), become a child
subreaper, serve until Shutdown finds no container left, then deliver the events still queued,
close the server (the Shutdown answer is sent first) and remove the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable

from google.protobuf import empty_pb2

from dockyard_api.containerd.runtime.v2.task import shim_pb2
from dockyard_api.dockyard.shim.v1 import log_pb2, stats_pb2
from dockyard_common import linux
from dockyard_common.shimlaunch import Launch
from dockyard_common.ttrpc import RequestContext, TTRPCServer
from shim.logservice import LogService
from shim.publisher import Publisher
from shim.reaper import Reaper
from shim.service import TaskService
from shim.stats import StatsService

log = logging.getLogger("dockyard.shim")


def run(launch: Launch, listener_fd: int, detach: bool = True) -> int:
    if detach:
        become_daemon(launch["bundle"])
    if launch.get("group"):
        # A pod's shim outlives the bundle it was started for: keep no directory of it as cwd
        # (the group's socket dir, in the runtime state dir, lives as long as the daemon's state).
        os.chdir(os.path.dirname(launch["socket"]))
    os.environ["TTRPC_ADDRESS"] = launch["events"]
    setup_logging(launch["debug"])
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write("dockyard-shim")
    # Orphans of the container (its init is forked by an intermediate child) come to us.
    linux.set_child_subreaper(True)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(launch["namespace"], launch["bundle"], listener_fd, launch["socket"], launch["events"],
                         log_bundle=launch["bundle"] if detach else ""))
    return 0


@functools.cache  # the zygote calls it first: the class is made once, in shared memory
def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when the zygote preloaded it, else asyncio's loop (None).

    uvloop costs less per wakeup (what a hundred shims sampling stats every second pay) and its
    loop runs in C, so a forked shim touches (copies) fewer of the zygote's pages than asyncio's
    Python loop does. A shim that would import it itself (no zygote) stays on asyncio: uvloop and
    the OpenSSL it pulls in would be ~3 MiB of private memory there."""
    uvloop = sys.modules.get("uvloop")
    if uvloop is None:
        return None

    class ShimLoop(uvloop.Loop):  # type: ignore[misc, name-defined]
        """uvloop keeps SIGCHLD for the processes it spawns (the shim spawns none through it) and
        refuses a handler for it; the reaper's goes through a plain signal handler instead, which
        uvloop's wakeup fd runs promptly, and hands the work to the loop."""

        def add_signal_handler(self, sig: int, callback: Callable[..., object], *args: object) -> None:
            if sig != signal.SIGCHLD:
                return super().add_signal_handler(sig, callback, *args)  # type: ignore[no-any-return]
            signal.signal(sig, lambda *_: self.call_soon_threadsafe(callback, *args))

        def remove_signal_handler(self, sig: int) -> bool:
            if sig != signal.SIGCHLD:
                return super().remove_signal_handler(sig)  # type: ignore[no-any-return]
            return signal.signal(sig, signal.SIG_DFL) is not signal.SIG_DFL

    return ShimLoop


def become_daemon(bundle: str) -> None:
    """Own session (the daemon's signals and its exit do not reach us), stdio off the caller's
    pipes: 0 is /dev/null, 1 and 2 the bundle's `log` FIFO the daemon reads (/dev/null without)."""
    with contextlib.suppress(PermissionError):  # already a session leader (a foreground `serve`)
        os.setsid()
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    os.dup2(null, 0)
    os.close(null)
    if not log_to(bundle):
        for fd in (1, 2):
            os.dup2(0, fd)
    os.chdir(bundle)


def log_to(bundle: str) -> bool:
    """Point fds 1 and 2 at the bundle's `log` FIFO, which the daemon reads while the bundle's
    task lives; False (nothing changed) without one."""
    try:
        # O_RDWR: the open never waits for a reader, and a reader that goes away (a daemon
        # restart) never fails our writes. Non-blocking: a full FIFO drops log lines, never
        # stalls the shim.
        out = os.open(os.path.join(bundle, "log"), os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    return True


class _LogfmtHandler(logging.Handler):
    """logrus-style lines on fd 2, as containerd's shims write their log; dropped (never
    blocking) when nobody reads."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            line = (f'time="{stamp}.{int(record.msecs * 1000):06d}Z" level={record.levelname.lower()} '
                    f'msg="{msg}" pid={record.process}\n')
            os.write(2, line.encode(errors="replace"))
        except (OSError, ValueError):
            pass


def setup_logging(debug: bool) -> None:
    root = logging.getLogger()
    root.handlers[:] = [_LogfmtHandler()]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


class _TaskService(TaskService):
    """The Task service; an Update also has the container's stats sampler re-read the limits it
    keeps (it reads them once, not every sample). A shim serving a group logs into the FIFO of
    the bundle it was started for; when that container is deleted (its bundle goes next), the
    log moves to another container's, so the daemon still reads what a long-lived group's shim
    says."""

    stats: StatsService | None = None
    log_bundle: str = ""  # whose `log` FIFO fds 1 and 2 are ("" not ours to move: a foreground run)

    async def Delete(self, req: shim_pb2.DeleteRequest, ctx: RequestContext) -> shim_pb2.DeleteResponse:
        resp = await super().Delete(req, ctx)
        if not req.exec_id and self.log_bundle and req.id not in self.containers:
            self.log_bundle = self._move_log(self.log_bundle)
        return resp

    def _move_log(self, current: str) -> str:
        if any(c.bundle == current for c in self.containers.values()):
            return current
        for c in self.containers.values():
            if log_to(c.bundle):
                log.info("logging into %s's log from here on (%s is deleted)", c.id, os.path.basename(current))
                return c.bundle
        return current

    async def Update(self, req: shim_pb2.UpdateTaskRequest, ctx: RequestContext) -> empty_pb2.Empty:
        try:
            return await super().Update(req, ctx)
        finally:
            if self.stats is not None:
                self.stats.limits_changed(req.id)


async def serve(namespace: str, bundle: str, listener_fd: int, socket_path: str, events_address: str,
                log_bundle: str = "") -> None:
    """Serve until a Shutdown finds no container. `log_bundle`: the bundle whose `log` FIFO our
    fds 1 and 2 are (`become_daemon`), moved on as its container goes."""
    loop = asyncio.get_running_loop()
    idle = asyncio.Event()
    publisher = Publisher(events_address, namespace)
    service = _TaskService(namespace, publisher, on_idle=lambda: _go_idle(server, socket_path, inode, idle))
    service.log_bundle = log_bundle
    reaper = Reaper(service.on_exit)
    reaper.install(loop)
    server = TTRPCServer(require_same_user=True)
    server.register(shim_pb2.DESCRIPTOR.services_by_name["Task"], service)
    # Our extension: cgroup samples pushed to the daemon while it watches (see shim.stats).
    stats = service.stats = StatsService(namespace, service.containers, events_address)
    server.register(stats_pb2.DESCRIPTOR.services_by_name["Stats"], stats)
    server.register(log_pb2.DESCRIPTOR.services_by_name["Log"], LogService(service.containers))
    try:
        st = os.stat(socket_path)
        inode: tuple[int, int] | None = (st.st_dev, st.st_ino)
    except OSError:
        inode = None
    await server.serve_fd(listener_fd)
    log.info("shim serving on unix://%s for %s/%s (pid %d)", socket_path, namespace, os.path.basename(bundle),
             os.getpid())
    try:
        await idle.wait()
        log.info("shutting down: no task left")
        await service.close()
        await stats.close()
        await publisher.close()
        await server.shutdown(grace=2)
    finally:
        reaper.close()
        _unlink_own(socket_path, inode)


def _go_idle(server: TTRPCServer, socket_path: str, inode: tuple[int, int] | None, idle: asyncio.Event) -> None:
    """A Shutdown found no container: stop listening before the Shutdown is answered, so that a
    start looking for this (group's) shim afterwards finds none and makes a new one, rather
    than joining a shim on its way out."""
    server.stop_accepting()
    _unlink_own(socket_path, inode)
    idle.set()


def _unlink_own(socket_path: str, inode: tuple[int, int] | None) -> None:
    """The socket file was made by `start`, not by the server: remove it while still ours."""
    with contextlib.suppress(OSError):
        st = os.stat(socket_path)
        if inode == (st.st_dev, st.st_ino):
            os.unlink(socket_path)
