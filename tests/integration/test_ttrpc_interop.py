"""Our ttrpc against containerd's Go ttrpc, for real: Debian's containerd-shim-runc-v2.

The shim is started the way containerd starts it (`... -id ID start` in the bundle dir, which
prints the ttrpc address of the serving shim it spawned). Our TTRPCClient then drives the
Task API; in the full run the shim also dials our TTRPCServer as its events endpoint
(TTRPC_ADDRESS), so both directions cross the language boundary: Go server ← our client,
our server ← Go client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from google.protobuf import empty_pb2

from dockyard_api.containerd.runtime.v2.task import shim_pb2
from dockyard_api.containerd.services.ttrpc.events.v1 import events_pb2
from dockyard_api.containerd.types.task import task_pb2
from dockyard_common import errors
from dockyard_common.ttrpc import ConnectionClosed, RequestContext, TTRPCClient, TTRPCServer, parse_address

SHIM = shutil.which("containerd-shim-runc-v2")
RUNC = shutil.which("runc")
BUSYBOX = Path("/bin/busybox")
TASK = "containerd.task.v2.Task"
RUN_CONTAINERD = Path("/run/containerd")  # the Go shim's socket root (and runc root) in 1.6

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(SHIM is None, reason="containerd-shim-runc-v2 is not installed (Debian package containerd)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the runc shim needs root"),
]


@dataclass
class GoShim:
    base: Path
    namespace: str
    id: str
    bundle: Path
    address: str = ""
    log: bytearray = field(default_factory=bytearray)

    @property
    def events_socket(self) -> Path:
        return self.base / "ttrpc.sock"

    @property
    def metadata(self) -> dict[str, str]:
        return {"containerd-namespace-ttrpc": self.namespace}

    def pids(self) -> list[int]:
        """The shim processes of this test, found by their command line (not our children)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and self.namespace.encode() in argv:
                found.append(int(entry))
        return found

    async def start(self) -> str:
        proc = await asyncio.create_subprocess_exec(
            SHIM,  # type: ignore[arg-type]
            "-namespace", self.namespace,
            "-address", str(self.base / "containerd.sock"),  # nobody listens: containerd is not involved
            "-publish-binary", "/usr/bin/containerd",
            "-id", self.id,
            "start",
            cwd=self.bundle,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "TTRPC_ADDRESS": str(self.events_socket)},
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode == 0, f"shim start failed ({proc.returncode}): {err.decode()}"
        self.address = out.decode().strip()
        return self.address


async def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.fixture
async def go_shim(request: pytest.FixtureRequest) -> AsyncIterator[GoShim]:
    run_existed = RUN_CONTAINERD.exists()
    base = Path(tempfile.mkdtemp(prefix="dy-shim-", dir="/tmp"))
    namespace = f"dockyard-test-{secrets.token_hex(4)}"
    bundle = base / namespace / "interop"  # containerd's layout: <state>/<namespace>/<id>
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "annotations": {}}))
    # containerd makes the shim's log fifo and reads it; the serving shim opens it for writing.
    os.mkfifo(bundle / "log", 0o700)
    log_fd = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK)
    shim = GoShim(base, namespace, "interop", bundle)

    def drain() -> None:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(log_fd, 65536):
                shim.log.extend(chunk)

    loop = asyncio.get_running_loop()
    loop.add_reader(log_fd, drain)
    try:
        yield shim
    finally:
        loop.remove_reader(log_fd)
        drain()
        os.close(log_fd)
        for pid in shim.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            assert await _gone(pid, 10), f"shim {pid} survived SIGKILL"
        runc_root = RUN_CONTAINERD / "runc" / namespace
        if runc_root.exists() and RUNC:
            subprocess.run([RUNC, "--root", str(runc_root), "delete", "--force", shim.id], capture_output=True)
            shutil.rmtree(runc_root, ignore_errors=True)
        if shim.address.startswith("unix://"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(parse_address(shim.address))
        shutil.rmtree(base, ignore_errors=True)
        if not run_existed:  # the shim made /run/containerd: take back what is left empty
            for d in (RUN_CONTAINERD / "runc", RUN_CONTAINERD / "s", RUN_CONTAINERD):
                with contextlib.suppress(OSError):
                    d.rmdir()
        failed = getattr(getattr(request.node, "rep_call", None), "failed", False)
        if failed:
            print(f"\n----- shim log -----\n{shim.log.decode(errors='replace')}")


async def _stop(shim: GoShim, client: TTRPCClient) -> None:
    """Shutdown, as containerd does it: the shim may close the connection before answering."""
    with contextlib.suppress(ConnectionClosed):
        await client.call(TASK, "Shutdown", shim_pb2.ShutdownRequest(id=shim.id), empty_pb2.Empty,
                          timeout=10, metadata=shim.metadata)
    await asyncio.wait_for(client.wait_closed(), 10)
    await client.close()


async def test_connect_state_shutdown(go_shim: GoShim) -> None:
    address = await go_shim.start()
    assert address.startswith("unix://")
    [pid] = go_shim.pids()
    closed: list[bool] = []
    client = await TTRPCClient.connect(address, on_close=lambda: closed.append(True))
    try:
        md = go_shim.metadata
        conn = await client.call(TASK, "Connect", shim_pb2.ConnectRequest(id=go_shim.id),
                                 shim_pb2.ConnectResponse, timeout=10, metadata=md)
        assert conn.shim_pid == pid
        assert conn.task_pid == 0

        # Go's errdefs.ToGRPCf(ErrNotFound, "container not created") arrives as NotFound.
        with pytest.raises(errors.NotFound) as info:
            await client.call(TASK, "State", shim_pb2.StateRequest(id="no-such-task"),
                              shim_pb2.StateResponse, timeout=10, metadata=md)
        assert info.value.message == "container not created"
        assert str(info.value) == "container not created: not found"

        # ttrpc's own statuses read the same as ours.
        with pytest.raises(errors.Unimplemented, match=r"^method Bogus: not implemented$"):
            await client.call(TASK, "Bogus", shim_pb2.StateRequest(), shim_pb2.StateResponse, metadata=md)
        with pytest.raises(errors.Unimplemented, match=r"^service containerd\.task\.v2\.Nope: not implemented$"):
            await client.call("containerd.task.v2.Nope", "State", shim_pb2.StateRequest(), shim_pb2.StateResponse)

        # Concurrent calls multiplexed on the one connection to the Go server.
        results = await asyncio.gather(*(
            client.call(TASK, "Connect", shim_pb2.ConnectRequest(id=str(i)), shim_pb2.ConnectResponse, metadata=md)
            for i in range(50)
        ))
        assert {r.shim_pid for r in results} == {pid}

        await _stop(go_shim, client)
    finally:
        await client.close()
    assert closed == [True]
    assert await _gone(pid, 15), "the Go shim did not exit after Shutdown"
    assert not os.path.exists(parse_address(address))  # it removed its socket


class EventsSink:
    """containerd's events endpoint, served by our TTRPCServer for the Go shim's ttrpc client."""

    def __init__(self) -> None:
        self.envelopes: list[events_pb2.Envelope] = []
        self.deadlines: list[float | None] = []
        self.changed = asyncio.Event()

    async def Forward(self, req: events_pb2.ForwardRequest, ctx: RequestContext) -> empty_pb2.Empty:
        self.envelopes.append(req.envelope)
        self.deadlines.append(ctx.time_remaining())
        self.changed.set()
        return empty_pb2.Empty()

    async def wait_for(self, topic: str, timeout: float = 15) -> None:
        async with asyncio.timeout(timeout):
            while topic not in self.topics:
                self.changed.clear()
                await self.changed.wait()

    @property
    def topics(self) -> list[str]:
        return [e.topic for e in self.envelopes]


def _busybox_bundle(bundle: Path) -> None:
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for tool in ("sh", "sleep"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    (bundle / "config.json").unlink()
    subprocess.run([RUNC, "spec"], cwd=bundle, check=True)  # type: ignore[list-item]
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sleep", "60"]
    (bundle / "config.json").write_text(json.dumps(spec))


@pytest.mark.skipif(RUNC is None or not BUSYBOX.is_file(), reason="needs runc and busybox-static")
async def test_task_lifecycle_and_events_both_ways(go_shim: GoShim) -> None:
    _busybox_bundle(go_shim.bundle)
    sink = EventsSink()
    events = TTRPCServer(require_same_user=True)
    events.register(events_pb2.DESCRIPTOR.services_by_name["Events"], sink)
    await events.listen(go_shim.events_socket)
    try:
        address = await go_shim.start()
        client = await TTRPCClient.connect(address)
        md = go_shim.metadata
        call = client.call
        try:
            created = await call(TASK, "Create",
                                 shim_pb2.CreateTaskRequest(id=go_shim.id, bundle=str(go_shim.bundle)),
                                 shim_pb2.CreateTaskResponse, timeout=30, metadata=md)
            assert created.pid > 0
            st = await call(TASK, "State", shim_pb2.StateRequest(id=go_shim.id), shim_pb2.StateResponse,
                            timeout=10, metadata=md)
            assert (st.status, st.pid, st.bundle) == (task_pb2.CREATED, created.pid, str(go_shim.bundle))

            started = await call(TASK, "Start", shim_pb2.StartRequest(id=go_shim.id), shim_pb2.StartResponse,
                                 timeout=30, metadata=md)
            assert started.pid == created.pid
            st = await call(TASK, "State", shim_pb2.StateRequest(id=go_shim.id), shim_pb2.StateResponse,
                            timeout=10, metadata=md)
            assert st.status == task_pb2.RUNNING

            # Wait blocks until the kill lands: a long call in flight beside others.
            waiting = asyncio.ensure_future(call(TASK, "Wait", shim_pb2.WaitRequest(id=go_shim.id),
                                                 shim_pb2.WaitResponse, timeout=30, metadata=md))
            pids = await call(TASK, "Pids", shim_pb2.PidsRequest(id=go_shim.id), shim_pb2.PidsResponse,
                              timeout=10, metadata=md)
            assert created.pid in [p.pid for p in pids.processes]
            assert not waiting.done()
            await call(TASK, "Kill", shim_pb2.KillRequest(id=go_shim.id, signal=signal.SIGKILL), empty_pb2.Empty,
                       timeout=10, metadata=md)
            waited = await asyncio.wait_for(waiting, 30)
            assert waited.exit_status == 128 + signal.SIGKILL

            deleted = await call(TASK, "Delete", shim_pb2.DeleteRequest(id=go_shim.id), shim_pb2.DeleteResponse,
                                 timeout=30, metadata=md)
            assert (deleted.pid, deleted.exit_status) == (created.pid, 128 + signal.SIGKILL)
            with pytest.raises(errors.NotFound):
                await call(TASK, "State", shim_pb2.StateRequest(id=go_shim.id), shim_pb2.StateResponse,
                           timeout=10, metadata=md)

            # The Go shim's ttrpc client forwarded its events to our server.
            await sink.wait_for("/tasks/delete")
            topics = sink.topics
            for earlier, later in [("/tasks/create", "/tasks/start"), ("/tasks/start", "/tasks/exit"),
                                   ("/tasks/exit", "/tasks/delete")]:
                assert topics.index(earlier) < topics.index(later), topics
            assert {e.namespace for e in sink.envelopes} == {go_shim.namespace}
            assert sink.envelopes[0].event.type_url == "containerd.events.TaskCreate"
            # Go sent its 5 s context deadline as timeout_nano, and we saw it.
            assert all(d is not None and 0 < d <= 5 for d in sink.deadlines), sink.deadlines

            [pid] = go_shim.pids()
            await _stop(go_shim, client)
            assert await _gone(pid, 15), "the Go shim did not exit after Shutdown"
        finally:
            await client.close()
    finally:
        await events.shutdown(grace=5)
    assert not go_shim.events_socket.exists()
    assert stat.S_ISDIR(os.stat(go_shim.bundle).st_mode)
