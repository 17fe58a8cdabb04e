"""The zygote: one warm process per daemon that forks serving shims, so they share its memory.

A shim is mostly interpreter and imported modules (asyncio, protobuf, the shim's own code). Each
`start` importing them anew costs ~0.2 s and ~19 MiB of private memory per shim; forked from a
process that imported them once (and froze them out of the cyclic GC, so collections do not
dirty the shared pages), a shim's start is a fork and its PSS a few MiB (see the report in
tests/integration/test_shim_contract.py::test_footprint).

Where: one zygote per runtime state dir, never one per host. Both containerd and dockyardd lay
their bundles out as <runtime dir>/<namespace>/<id>, so the shim knows that dir from the bundle,
-namespace and -id it is given. Where exactly it listens, and the protocol (a greeting, the JSON
Launch with the shim's listening socket attached, the answer), are the shim's public launch
contract: `dockyard_common.shimlaunch`, whose client side `start` and the daemon use. A bundle
laid out otherwise gets no zygote (`start` forks).

`start` launches the zygote when there is none (fresh interpreter, `-I -S`: none of site's
imports), and meanwhile forks that one shim itself. The zygote writes `shim.pid` and `address` in
the bundle before it answers. It exits once it has had no shim and no request for IDLE_EXIT
seconds. Shims outlive it (they are reparented); it also exits when its socket is removed (the
daemon's state dir went away). Set DOCKYARD_SHIM_ZYGOTE=0 to never use one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import sys

from dockyard_common.fdwait import readable
from dockyard_common.shimlaunch import REQUEST_TIMEOUT, BadRequest, answer, receive_request
from shim import state

IDLE_EXIT = 30.0
rehearsed = False  # `_preload` served once in this process (see `_rehearse`)


def _code_root() -> str:
    """The directory holding the `shim` package (and `dockyard_common`, `dockyard_api`)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch_zygote(path: str, root: str = "") -> None:
    """Start a zygote listening at `path` for the runtime state dir `root` in the background;
    returns at once (a zygote that finds another one already serving its socket just exits)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    # A fresh interpreter without site: its .pth imports would only add private pages.
    cwd = os.getcwd()
    paths = [_code_root(), *(p for p in sys.path if p and p != cwd and os.path.isdir(p))]
    argv = [sys.executable, "-I", "-S", "-c",
            "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); import shim.zygote as z; z.main(*sys.argv[2:])",
            json.dumps(paths), path, root]
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork():  # the zygote is nobody's child to reap
                os._exit(0)
            os.chdir("/")  # long-lived: it must not pin (or pass as in) the launching shim's bundle
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.closerange(3, 65536)
            os.execv(sys.executable, argv)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


# ----- the zygote ------------------------------------------------------------------------------------


def _preload() -> None:
    import gc

    try:
        # The serving shims run on uvloop (see `serve.loop_factory`). It needs `ssl`: the
        # OpenSSL pages are the zygote's, shared, and no shim touches them.
        import uvloop  # noqa: F401
    except ImportError:
        # The shim never speaks TLS: keep asyncio from loading OpenSSL (~2.5 MiB).
        sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    import asyncio  # noqa: F401
    import encodings.ascii  # noqa: F401  (decoding cgroup files: else each shim imports it)

    import shim.cgroups.metrics
    import shim.cleanup
    import shim.container
    import shim.serve

    shim.serve.loop_factory()
    global rehearsed
    # An optimisation only: a zygote that could not rehearse still forks shims.
    with contextlib.suppress(Exception):
        _rehearse()
        rehearsed = True
    from dockyard_api.containerd.runtime.v2.runc.options import oci_pb2  # noqa: F401

    gc.collect()
    # Everything alive now is shared with every shim: never let the collector touch (and so
    # copy) those pages in the children.
    gc.freeze()
    offer_to_ksm()


def offer_to_ksm() -> None:
    """Mark the zygote's private writable memory mergeable (MADV_MERGEABLE).

    A shim cannot use an object without writing its reference count, so every page of shared
    objects it touches is copied into it, though the count is back where it was once the call
    returns: ~5 MiB per shim of pages identical to the zygote's, or to another shim's. Where the
    host runs KSM (/sys/kernel/mm/ksm/run = 1), ksmd merges those copies back into one page.
    The mark is inherited by the forked shims and gone at exec, so container processes are
    never merged. A kernel without KSM refuses every madvise: nothing is marked."""
    from dockyard_common import linux

    with open("/proc/self/maps") as maps:
        regions = [line.split() for line in maps]
    for fields in regions:
        perms = fields[1]
        if perms[1] == "w" and perms[3] == "p":
            start, end = (int(x, 16) for x in fields[0].split("-"))
            # no KSM in this kernel, or a mapping it refuses (e.g. VM_IO): the rest still count
            with contextlib.suppress(OSError):
                linux.madvise(start, end - start, linux.MADV_MERGEABLE)


def _rehearse() -> None:
    """Serve once here, as a shim would (a Connect, a Watch, Shutdown): what a first run sets up
    lazily (caches, specialised bytecode) is then done in shared pages, not in each shim's
    (-0.25 MiB of private memory per shim, measured)."""
    import asyncio
    import tempfile

    from google.protobuf import empty_pb2

    from dockyard_api.containerd.runtime.v2.task import shim_pb2
    from dockyard_api.dockyard.shim.v1 import stats_pb2
    from dockyard_common.errors import NotFound
    from dockyard_common.ttrpc import TTRPCClient
    from dockyard_common.unixsock import listen
    from shim.serve import loop_factory, serve

    async def client(path: str) -> None:
        async with await TTRPCClient.connect(f"unix://{path}") as c:
            md = {"containerd-namespace-ttrpc": "zygote"}
            with contextlib.suppress(NotFound):
                await c.call("containerd.task.v2.Task", "Connect", shim_pb2.ConnectRequest(id="x"),
                             shim_pb2.ConnectResponse, timeout=5, metadata=md)
            with contextlib.suppress(NotFound):
                await c.call("dockyard.shim.v1.Stats", "Watch", stats_pb2.WatchRequest(id="x", interval_ms=1000),
                             empty_pb2.Empty, timeout=5, metadata=md)
            await c.call("containerd.task.v2.Task", "Shutdown", shim_pb2.ShutdownRequest(id="x"), empty_pb2.Empty,
                         timeout=5, metadata=md)

    async def both(bundle: str, path: str, fd: int) -> None:
        served = asyncio.ensure_future(serve("zygote", bundle, fd, path, ""))
        await client(path)
        await served

    with tempfile.TemporaryDirectory(prefix="dockyard-zygote-") as bundle:
        path = os.path.join(bundle, "shim.sock")
        listener = listen(path)
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(asyncio.wait_for(both(bundle, path, listener.detach()), 10))
    # Planning a container is pure: plan one (the default spec, as ctr sends it) here too
    # (-0.1 MiB per shim, measured).
    from dockyard_common import linux
    from shim.init import default_spec, parse_spec
    from shim.init.plan import plan_create

    plan_create(parse_spec(default_spec()), "/", has_rootfs_mounts=True, last_cap=linux.last_cap())


def _serve_one(conn: socket.socket, listener: socket.socket, children: set[int]) -> None:
    import struct

    uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    if uid not in (0, os.geteuid()):
        return
    try:
        launch, fd = receive_request(conn)
    except BadRequest:
        return
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            conn.close()
            listener.close()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            from shim.serve import run

            code = run(launch, fd)
        finally:
            os._exit(code)
    os.close(fd)
    children.add(pid)
    try:
        # Before the answer: whoever asked may rely on them as soon as it has the PID.
        state.write_file(launch["bundle"], state.SHIM_PID, str(pid))
        state.write_file(launch["bundle"], state.ADDRESS, f"unix://{launch['socket']}")
    except OSError as exc:
        answer(conn, error=f"shim {pid} started, its bundle {launch['bundle']}: {exc.strerror or exc}")
        return
    answer(conn, pid=pid)


def _reap(children: set[int]) -> None:
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


def _still_at(path: str, inode: int) -> bool:
    """Whether our socket is still reachable at `path` (its state dir may have been removed)."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _wanted(path: str, inode: int, root: str) -> bool:
    """Whether the daemon we serve may still ask: our socket is in place, and so is its runtime
    state dir (a long state dir puts the socket in the shared fallback dir, which outlives it)."""
    return _still_at(path, inode) and (not root or os.path.isdir(root))


def main(path: str, root: str = "") -> None:
    from dockyard_common.unixsock import AlreadyServing, listen

    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write("dockyard-zygote")  # first: `ps` (and tests) know it from the start
    stop: list[bool] = []
    # Before the preload: a stop during its rehearsal waits for it to clean up its temporary socket.
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    _preload()
    if stop:
        return
    try:
        listener = listen(path, socket.SOCK_SEQPACKET)
    except (AlreadyServing, OSError):
        return  # another zygote won the race
    inode = os.stat(path).st_ino
    children: set[int] = set()
    idle = 0.0
    try:
        while not stop:
            _reap(children)
            try:
                ready = readable(listener.fileno(), 1.0)
            except InterruptedError:
                continue
            if not ready:
                idle = idle + 1.0 if not children else 0.0
                if idle >= IDLE_EXIT or not _wanted(path, inode, root):
                    return
                continue
            idle = 0.0
            try:
                conn, _ = listener.accept()
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EINTR):
                    continue
                raise
            with conn:
                conn.settimeout(REQUEST_TIMEOUT)
                with contextlib.suppress(OSError):
                    _serve_one(conn, listener, children)
    finally:
        if _still_at(path, inode):
            with contextlib.suppress(OSError):
                os.unlink(path)
        listener.close()
