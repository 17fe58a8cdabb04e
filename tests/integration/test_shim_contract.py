"""The runtime v2 shim contract, as a conformance suite: our shim and containerd's, same assertions.

Each test drives a shim exactly as dockyardd does (supervisor.runtime: `create_bundle`, then
`ShimBinary.start` in the bundle, then `ShimClient` over ttrpc with the namespace metadata), and
stands in for the daemon's events endpoint with a TTRPCServer of its own. It runs once against
`python -m shim` and once against Debian's /usr/bin/containerd-shim-runc-v2, the reference.

Cleanup is checked, not hoped for: after each test no shim or container process is alive
(by PID), nothing is mounted under the test's dir, and the container's cgroup is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import empty_pb2

from dockyard_api.containerd.cgroups.stats.v1 import metrics_pb2 as v1metrics
from dockyard_api.containerd.events import task_pb2 as ev
from dockyard_api.containerd.runtime.v2.runc.options import oci_pb2
from dockyard_api.containerd.runtime.v2.task import shim_pb2 as pb
from dockyard_api.containerd.services.ttrpc.events.v1 import events_pb2
from dockyard_api.containerd.types import mount_pb2
from dockyard_api.containerd.types.task import task_pb2
from dockyard_common import errors
from dockyard_common.ttrpc import RequestContext, TTRPCServer
from dockyard_common.ttrpc.errors import ConnectionClosed
from shim.init import default_spec
from supervisor.runtime.bundle import Bundle, create_bundle
from supervisor.runtime.shim import ShimBinary, ShimClient
from tests import ksm
from tests.daemon import stopping_new_zygotes
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until_async

GO_SHIM = "/usr/bin/containerd-shim-runc-v2"
OURS = (sys.executable, "-m", "shim")
REPO = Path(__file__).resolve().parents[2]
# Unique per run: the cgroups (/<ns>/<id>) and runc's state (/run/containerd/runc/<ns>) are the
# host's, and another run of these tests may be using "c1" at the same time.
NS = f"shimtest-{secrets.token_hex(3)}"
RUNC_STATE = Path("/run/containerd/runc") / NS
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROCESS_TYPE = "types.containerd.io/opencontainers/runtime-spec/1/Process"

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="shims need root")]

RUNTIMES = [
    pytest.param(OURS, id="dockyard"),
    pytest.param((GO_SHIM,), id="runc-v2",
                 marks=pytest.mark.skipif(not os.path.exists(GO_SHIM), reason="containerd-shim-runc-v2 missing")),
]


# ----- the daemon's side, for the test --------------------------------------------------------------


class EventSink:
    """containerd.services.events.ttrpc.v1.Events: what the shim forwards, in arrival order."""

    def __init__(self) -> None:
        self.envelopes: list[events_pb2.Envelope] = []
        self.changed = asyncio.Event()

    async def Forward(self, request: events_pb2.ForwardRequest, ctx: RequestContext) -> empty_pb2.Empty:
        self.envelopes.append(request.envelope)
        self.changed.set()
        return empty_pb2.Empty()

    def topics(self, cid: str | None = None) -> list[str]:
        return [e.topic for e in self.envelopes if cid is None or self.decode(e).container_id == cid]

    @staticmethod
    def decode(env: events_pb2.Envelope) -> Any:
        name = env.event.type_url.rsplit(".", 1)[-1]
        return getattr(ev, name).FromString(env.event.value)

    async def wait_for(self, topic: str, cid: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            for env in self.envelopes:
                msg = self.decode(env)
                if env.topic == topic and msg.container_id == cid:
                    return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {topic} for {cid}; got {self.topics()}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)


@dataclass
class Task:
    """One container in a shim, with the client side of its stdio FIFOs."""

    id: str
    bundle: Bundle
    stdout: Path
    stderr: Path
    stdin: Path
    out_fd: int = -1
    err_fd: int = -1
    in_fd: int = -1
    pid: int = 0


@dataclass
class Harness:
    command: tuple[str, ...]
    base: Path
    rootfs: Path
    sink: EventSink
    binary: ShimBinary
    tasks: list[Task] = field(default_factory=list)
    clients: list[ShimClient] = field(default_factory=list)
    shim_pids: set[int] = field(default_factory=set)
    container_pids: set[int] = field(default_factory=set)
    log_fds: list[int] = field(default_factory=list)

    @property
    def ours(self) -> bool:
        return self.command == OURS

    def spec(self, args: list[str], *, terminal: bool = False, cid: str = "c1") -> dict[str, Any]:
        spec = default_spec()
        spec["process"]["args"] = args
        spec["process"]["terminal"] = terminal
        spec["linux"]["cgroupsPath"] = f"/{NS}/{cid}"
        return spec

    def cgroup_dirs(self, cid: str) -> list[Path]:
        """Where the container's memory cgroup lives for this shim (ours nests under dockyard/)."""
        rel = f"dockyard/{NS}/{cid}" if self.ours else f"{NS}/{cid}"
        return [CGROUP_ROOT / c / rel for c in ("memory", "pids", "freezer")]

    async def start_shim(self, cid: str, spec: dict[str, Any], state: str = "state") -> tuple[ShimClient, Task]:
        bundle = create_bundle(self.base / state, NS, cid, json.dumps(spec).encode())
        # As the daemon: read the shim's log FIFO (containerd's Go shim blocks without a reader).
        self.log_fds.append(os.open(bundle.log_fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
        fifos = self.base / "fifo" / cid
        fifos.mkdir(parents=True)
        task = Task(cid, bundle, fifos / "stdout", fifos / "stderr", fifos / "stdin")
        for p in (task.stdout, task.stderr, task.stdin):
            os.mkfifo(p, 0o600)
        task.out_fd = os.open(task.stdout, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        task.err_fd = os.open(task.stderr, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self.tasks.append(task)
        address = await self.binary.start(bundle, b"")
        client = await ShimClient.connect(address, bundle, lambda: None)
        self.clients.append(client)
        conn = await client.call("Connect", pb.ConnectRequest(id=cid), pb.ConnectResponse)
        self.shim_pids.add(conn.shim_pid)
        return client, task

    async def create(self, cid: str, args: list[str], *, terminal: bool = False, stdin: bool = False,
                     start: bool = True, annotations: dict[str, str] | None = None) -> tuple[ShimClient, Task]:
        spec = self.spec(args, terminal=terminal, cid=cid)
        if annotations:
            spec["annotations"] = annotations
        client, task = await self.start_shim(cid, spec)
        rootfs = mount_pb2.Mount(type="bind", source=str(self.rootfs), options=["rbind", "rw"])
        req = pb.CreateTaskRequest(id=cid, bundle=str(task.bundle.path), rootfs=[rootfs], terminal=terminal,
                                   stdout=str(task.stdout), stderr="" if terminal else str(task.stderr),
                                   stdin=str(task.stdin) if stdin else "")
        resp = await client.call("Create", req, pb.CreateTaskResponse, timeout=30)
        task.pid = resp.pid
        self.container_pids.add(resp.pid)
        if stdin:  # once the shim reads the FIFO (containerd's may open it after Create answers), as ctr's
            task.in_fd = await wait_until_async(lambda: open_writer(task.stdin), what="the shim to read stdin")
        if start:
            started = await client.call("Start", pb.StartRequest(id=cid), pb.StartResponse)
            assert started.pid == resp.pid
        return client, task

    async def cleanup(self) -> None:
        for client, task in zip(self.clients, self.tasks, strict=False):
            with contextlib.suppress(errors.DockyardError):
                await client.call("Kill", pb.KillRequest(id=task.id, signal=signal.SIGKILL, all=True),
                                  empty_pb2.Empty, timeout=5)
            with contextlib.suppress(errors.DockyardError):
                await client.call("Wait", pb.WaitRequest(id=task.id), pb.WaitResponse, timeout=5)
            with contextlib.suppress(errors.DockyardError):
                await client.call("Delete", pb.DeleteRequest(id=task.id), pb.DeleteResponse, timeout=10)
            await client.shutdown()
        for pid in self.shim_pids:
            if not await wait_gone(pid, 5):
                os.kill(pid, signal.SIGKILL)
        for task in self.tasks:
            if task.bundle.path.exists():
                with contextlib.suppress(errors.DockyardError):
                    await self.binary.delete(task.bundle)
        for fd in [*self.log_fds, *(f for t in self.tasks for f in (t.out_fd, t.err_fd, t.in_fd))]:
            with contextlib.suppress(OSError):
                os.close(fd)


def open_writer(fifo: Path) -> int | None:
    """The FIFO opened for writing without blocking; None while it has no reader yet (ENXIO)."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        return None


async def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(0.02)
    return not alive(pid)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return False
    return data[data.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def comm(pid: int) -> str:
    """The process' command name ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


async def read_until(fd: int, want: bytes, timeout: float = 10) -> bytes:
    """Read a FIFO (non-blocking) until `want` has arrived."""
    buf = b""
    deadline = time.monotonic() + timeout
    while want not in buf and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            chunk = b""
        buf += chunk
        if not chunk:
            await asyncio.sleep(0.02)
    return buf


@pytest.fixture(scope="module")
def busybox() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="shimbb-"))
    try:
        yield make_busybox_rootfs(d / "rootfs", all_applets=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(params=RUNTIMES)
async def shim(request: pytest.FixtureRequest, busybox: Path) -> AsyncIterator[Harness]:
    command: tuple[str, ...] = request.param
    base = Path(tempfile.mkdtemp(prefix="shimct-"))
    sink = EventSink()
    server = TTRPCServer()
    server.register(events_pb2.DESCRIPTOR.services_by_name["Events"], sink)
    await server.listen(base / "ttrpc.sock")
    os.environ.setdefault("PYTHONPATH", str(REPO))
    binary = ShimBinary(command, str(base / "dockyard.sock"), str(base / "ttrpc.sock"), "/bin/true")
    h = Harness(command, base, busybox, sink, binary)
    try:
        yield h
    finally:
        try:
            await h.cleanup()
            await server.close()
            for pid in h.shim_pids | h.container_pids:
                assert not alive(pid), f"process {pid} outlived the test"
            assert mounts_under(base) == []
            for task in h.tasks:
                for d in h.cgroup_dirs(task.id):
                    assert not d.exists(), f"cgroup {d} left behind"
        finally:
            for m in reversed(mounts_under(base)):
                subprocess.run(["umount", "-l", m], check=False)
            remove_namespace_cgroups()
            shutil.rmtree(base, ignore_errors=True)


def remove_namespace_cgroups() -> None:
    """The namespace level both shims leave (as containerd does), empty once its tasks are gone."""
    for d in [*CGROUP_ROOT.glob(f"*/dockyard/{NS}"), *CGROUP_ROOT.glob(f"*/{NS}")]:
        with contextlib.suppress(OSError):
            d.rmdir()


@pytest.fixture(scope="module", autouse=True)
def stop_our_zygotes() -> Iterator[None]:
    with stopping_new_zygotes():
        yield


@pytest.fixture(scope="module", autouse=True)
def remove_runc_state() -> Iterator[None]:
    """The Go shim's runc keeps a directory per namespace, empty once its containers are gone."""
    yield
    with contextlib.suppress(OSError):
        RUNC_STATE.rmdir()


# ----- the contract -----------------------------------------------------------------------------


async def test_run_captures_output_and_exit_code(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    waited = await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=20)
    assert waited.exit_status == 3 and waited.exited_at.seconds > 0
    assert await read_until(task.out_fd, b"hello\n") == b"hello\n"
    assert await read_until(task.err_fd, b"oops\n") == b"oops\n"
    state = await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert (state.id, state.pid, state.status, state.exit_status) == ("c1", task.pid, task_pb2.STOPPED, 3)
    assert state.bundle == str(task.bundle.path) and state.stdout == str(task.stdout)
    # Wait for a process that already exited answers at once, with the same status.
    again = await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=2)
    assert again == waited
    deleted = await client.call("Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
    assert (deleted.pid, deleted.exit_status) == (task.pid, 3)
    assert deleted.exited_at == waited.exited_at
    await shim.sink.wait_for("/tasks/delete", "c1")
    assert shim.sink.topics("c1") == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    envs = [e for e in shim.sink.envelopes if e.topic.startswith("/tasks/")]
    assert all(e.namespace == NS and e.timestamp.seconds > 0 for e in envs)
    assert [e.event.type_url for e in envs] == ["containerd.events.TaskCreate", "containerd.events.TaskStart",
                                               "containerd.events.TaskExit", "containerd.events.TaskDelete"]
    create, start, exit_, delete = (EventSink.decode(e) for e in envs)
    assert create.pid == start.pid == exit_.pid == delete.pid == task.pid
    assert create.bundle == str(task.bundle.path) and create.io.stdout == str(task.stdout)
    assert (exit_.id, exit_.exit_status, delete.exit_status) == ("c1", 3, 3)
    # Gone after Delete: the task is unknown again.
    with pytest.raises(errors.NotFound):
        await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)


async def test_unknown_ids_are_not_found(shim: Harness) -> None:
    client, _ = await shim.create("c1", ["sleep", "300"])
    with pytest.raises(errors.NotFound):
        await client.call("State", pb.StateRequest(id="nope"), pb.StateResponse)
    with pytest.raises(errors.NotFound):
        await client.call("State", pb.StateRequest(id="c1", exec_id="nope"), pb.StateResponse)
    with pytest.raises(errors.NotFound):
        await client.call("Kill", pb.KillRequest(id="nope", signal=9), empty_pb2.Empty)
    # A running init cannot be deleted (ctr asks for STOPPED first).
    with pytest.raises(errors.DockyardError):
        await client.call("Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
    state = await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert state.status == task_pb2.RUNNING


async def test_wait_before_start_and_kill(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sleep", "300"], start=False)
    state = await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert (state.status, state.pid) == (task_pb2.CREATED, task.pid)
    # Wait may come before Start (ctr issues it concurrently).
    waiter = asyncio.ensure_future(client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=30))
    await asyncio.sleep(0)  # the waiter's turn: its request is written before Start's
    await client.call("Start", pb.StartRequest(id="c1"), pb.StartResponse)
    state = await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert state.status == task_pb2.RUNNING
    await asyncio.sleep(0.2)  # a window in which Wait must not answer: the process runs on
    assert not waiter.done()
    await client.call("Kill", pb.KillRequest(id="c1", signal=signal.SIGKILL), empty_pb2.Empty)
    assert (await waiter).exit_status == 137
    exit_ = await shim.sink.wait_for("/tasks/exit", "c1")
    assert exit_.exit_status == 137 and exit_.pid == task.pid
    with pytest.raises(errors.NotFound):  # "process already finished"
        await client.call("Kill", pb.KillRequest(id="c1", signal=signal.SIGTERM), empty_pb2.Empty)
    deleted = await client.call("Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
    assert deleted.exit_status == 137


async def test_delete_a_created_task(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sleep", "300"], start=False)
    deleted = await client.call("Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse, timeout=10)
    assert deleted.pid == task.pid
    assert await wait_gone(task.pid, 5)


async def test_exec(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sleep", "300"])
    out, err = task.stdout.parent / "exec-out", task.stdout.parent / "exec-err"
    os.mkfifo(out, 0o600)
    os.mkfifo(err, 0o600)
    out_fd = os.open(out, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    err_fd = os.open(err, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        process = default_spec()["process"] | {"args": ["sh", "-c", "echo hi from $0; exit 5"], "terminal": False}
        spec = pb.ExecProcessRequest(id="c1", exec_id="e1", stdout=str(out), stderr=str(err))
        spec.spec.type_url = PROCESS_TYPE
        spec.spec.value = json.dumps(process).encode()
        await client.call("Exec", spec, empty_pb2.Empty)
        with pytest.raises(errors.AlreadyExists):
            await client.call("Exec", spec, empty_pb2.Empty)
        state = await client.call("State", pb.StateRequest(id="c1", exec_id="e1"), pb.StateResponse)
        assert (state.id, state.status) == ("e1", task_pb2.CREATED)
        started = await client.call("Start", pb.StartRequest(id="c1", exec_id="e1"), pb.StartResponse)
        assert started.pid > 0 and started.pid != task.pid
        shim.container_pids.add(started.pid)
        waited = await client.call("Wait", pb.WaitRequest(id="c1", exec_id="e1"), pb.WaitResponse, timeout=20)
        assert waited.exit_status == 5
        assert await read_until(out_fd, b"hi from sh\n") == b"hi from sh\n"
        state = await client.call("State", pb.StateRequest(id="c1", exec_id="e1"), pb.StateResponse)
        assert (state.id, state.pid, state.status, state.exit_status) == ("e1", started.pid, task_pb2.STOPPED, 5)
        deleted = await client.call("Delete", pb.DeleteRequest(id="c1", exec_id="e1"), pb.DeleteResponse)
        assert (deleted.pid, deleted.exit_status) == (started.pid, 5)
        with pytest.raises(errors.NotFound):
            await client.call("State", pb.StateRequest(id="c1", exec_id="e1"), pb.StateResponse)
        # The container itself is untouched.
        state = await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
        assert state.status == task_pb2.RUNNING
        await shim.sink.wait_for("/tasks/exit", "c1")
        topics = shim.sink.topics("c1")
        assert topics[:5] == ["/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started",
                              "/tasks/exit"]
        exit_ = await shim.sink.wait_for("/tasks/exit", "c1")
        assert (exit_.id, exit_.pid, exit_.exit_status) == ("e1", started.pid, 5)
    finally:
        os.close(out_fd)
        os.close(err_fd)


async def test_pids_pause_resume_stats(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sleep", "300"])
    # containerd's shim answers Start once runc init is told to exec, not once it has (a pause
    # would freeze it halfway, its Go threads counted): the counts below are of the exec'd sleep.
    await wait_until_async(lambda: comm(task.pid) == "sleep", what="the container's init to exec sleep")
    pids = await client.call("Pids", pb.PidsRequest(id="c1"), pb.PidsResponse)
    assert [p.pid for p in pids.processes] == [task.pid]
    assert not pids.processes[0].HasField("info")
    await client.call("Pause", pb.PauseRequest(id="c1"), empty_pb2.Empty)
    state = await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert state.status == task_pb2.PAUSED
    await client.call("Resume", pb.ResumeRequest(id="c1"), empty_pb2.Empty)
    state = await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert state.status == task_pb2.RUNNING
    await shim.sink.wait_for("/tasks/resumed", "c1")
    assert shim.sink.topics("c1")[2:] == ["/tasks/paused", "/tasks/resumed"]
    stats = await client.call("Stats", pb.StatsRequest(id="c1"), pb.StatsResponse)
    assert stats.stats.type_url == "io.containerd.cgroups.v1.Metrics"
    metrics = v1metrics.Metrics.FromString(stats.stats.value)
    assert metrics.pids.current == 1 and metrics.memory.usage.usage > 0
    assert metrics.cpu.usage.total > 0


async def test_pids_marks_exec_processes(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sleep", "300"])
    req = pb.ExecProcessRequest(id="c1", exec_id="sleeper")
    req.spec.type_url = PROCESS_TYPE
    req.spec.value = json.dumps(default_spec()["process"] | {"args": ["sleep", "300"], "terminal": False}).encode()
    await client.call("Exec", req, empty_pb2.Empty)
    started = await client.call("Start", pb.StartRequest(id="c1", exec_id="sleeper"), pb.StartResponse)
    shim.container_pids.add(started.pid)
    pids = await client.call("Pids", pb.PidsRequest(id="c1"), pb.PidsResponse)
    infos = {p.pid: p for p in pids.processes}
    assert set(infos) == {task.pid, started.pid}
    info = infos[started.pid].info
    assert info.type_url == "containerd.runc.v1.ProcessDetails"
    assert oci_pb2.ProcessDetails.FromString(info.value).exec_id == "sleeper"
    await client.call("Kill", pb.KillRequest(id="c1", exec_id="sleeper", signal=9), empty_pb2.Empty)
    waited = await client.call("Wait", pb.WaitRequest(id="c1", exec_id="sleeper"), pb.WaitResponse, timeout=10)
    assert waited.exit_status == 137


async def test_stdin_and_close_io(shim: Harness) -> None:
    client, task = await shim.create("c1", ["cat"], stdin=True)
    os.write(task.in_fd, b"data over stdin\n")
    assert await read_until(task.out_fd, b"data over stdin\n") == b"data over stdin\n"
    os.write(task.in_fd, b"last words\n")
    # As ctr at its stdin's EOF: close the FIFO's writer, then CloseIO.
    os.close(task.in_fd)
    task.in_fd = -1
    await client.call("CloseIO", pb.CloseIORequest(id="c1", stdin=True), empty_pb2.Empty)
    waited = await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=20)
    assert waited.exit_status == 0
    assert await read_until(task.out_fd, b"last words\n") == b"last words\n"


async def test_terminal_and_resize(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sh", "-c", "sleep 0.5; stty size; tty"], terminal=True, start=False)
    await client.call("ResizePty", pb.ResizePtyRequest(id="c1", width=100, height=30), empty_pb2.Empty)
    await client.call("Start", pb.StartRequest(id="c1"), pb.StartResponse)
    waited = await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=20)
    assert waited.exit_status == 0
    out = await read_until(task.out_fd, b"/dev/pts/")
    assert b"30 100\r\n" in out and b"/dev/pts/" in out
    # After the exit, as containerd: a resize is not an error.
    await client.call("ResizePty", pb.ResizePtyRequest(id="c1", width=0, height=0), empty_pb2.Empty)


async def test_delete_action_after_the_shim_was_killed(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sleep", "300"])
    conn = await client.call("Connect", pb.ConnectRequest(id="c1"), pb.ConnectResponse)
    assert conn.task_pid == task.pid
    os.kill(conn.shim_pid, signal.SIGKILL)
    await client.conn.wait_closed()
    assert await wait_gone(conn.shim_pid, 5)
    assert alive(task.pid)  # the container outlives its shim
    resp = await shim.binary.delete(task.bundle)
    assert (resp.pid, resp.exit_status) == (task.pid, 137)
    assert resp.exited_at.seconds > 0
    assert await wait_gone(task.pid, 5)
    assert mounts_under(task.bundle.path) == []


async def test_delete_action_reports_a_collected_exit(shim: Harness) -> None:
    if not shim.ours:
        pytest.skip("containerd's shim always answers 137 here; ours keeps the exit durably")
    client, task = await shim.create("c1", ["sh", "-c", "exit 7"])
    await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=20)
    conn = await client.call("Connect", pb.ConnectRequest(id="c1"), pb.ConnectResponse)
    os.kill(conn.shim_pid, signal.SIGKILL)
    await client.conn.wait_closed()
    resp = await shim.binary.delete(task.bundle)
    assert (resp.pid, resp.exit_status) == (task.pid, 7)


async def test_shutdown(shim: Harness) -> None:
    client, task = await shim.create("c1", ["sh", "-c", "exit 0"])
    conn = await client.call("Connect", pb.ConnectRequest(id="c1"), pb.ConnectResponse)
    await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=20)
    # A shim still holding a task ignores Shutdown: it answers the next call, and stays.
    await client.call("Shutdown", pb.ShutdownRequest(id="c1"), empty_pb2.Empty)
    state = await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
    assert state.status == task_pb2.STOPPED
    await asyncio.sleep(0.3)  # a window in which it must not exit (no event says "still here")
    assert alive(conn.shim_pid) and not client.conn.closed
    await client.call("Delete", pb.DeleteRequest(id="c1"), pb.DeleteResponse)
    await client.shutdown()
    assert await wait_gone(conn.shim_pid, 5)
    address = task.bundle.read("address").removeprefix("unix://")
    assert not os.path.exists(address)


async def test_a_group_of_containers_shares_one_shim(shim: Harness) -> None:
    """Containers whose specs name one group (a pod's sandbox id) are served by one shim, which
    a Shutdown leaves running while any of them is left: containerd's runc shim and ours alike."""
    group = {"io.kubernetes.cri.sandbox-id": "pod1"}
    sandbox, _ = await shim.create("pod1", ["sleep", "60"], annotations=group)
    member, m = await shim.create("c2", ["sh", "-c", "exit 4"], annotations=group)
    alone, _ = await shim.create("c3", ["sleep", "60"])
    assert len(shim.shim_pids) == 2
    assert sandbox.address == member.address != alone.address
    assert m.bundle.read("address") == member.address
    waited = await member.call("Wait", pb.WaitRequest(id="c2"), pb.WaitResponse, timeout=10)
    assert waited.exit_status == 4
    await member.call("Delete", pb.DeleteRequest(id="c2"), pb.DeleteResponse, timeout=10)
    await member.call("Shutdown", pb.ShutdownRequest(id="c2"), empty_pb2.Empty, timeout=5)
    state = await sandbox.call("State", pb.StateRequest(id="pod1"), pb.StateResponse, timeout=5)
    assert state.status == task_pb2.Status.RUNNING
    assert all(alive(pid) for pid in shim.shim_pids)


async def test_create_failure_leaves_nothing(shim: Harness) -> None:
    client, task = await shim.start_shim("c1", shim.spec(["/no/such/binary"]))
    rootfs = mount_pb2.Mount(type="bind", source=str(shim.rootfs), options=["rbind", "rw"])
    with pytest.raises(errors.DockyardError):
        await client.call("Create", pb.CreateTaskRequest(id="c1", bundle=str(task.bundle.path), rootfs=[rootfs],
                                                         stdout=str(task.stdout)), pb.CreateTaskResponse,
                          timeout=30)
    with pytest.raises(errors.NotFound):
        await client.call("State", pb.StateRequest(id="c1"), pb.StateResponse)
    for d in shim.cgroup_dirs("c1"):
        assert not d.exists()
    assert mounts_under(task.bundle.path) == []


async def test_container_signal_dispositions_are_default(shim: Harness) -> None:
    # Python ignores SIGPIPE and SIGXFSZ; shim.init resets them before the exec.
    client, task = await shim.create("c1", ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"])
    await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=20)
    out = await read_until(task.out_fd, b"SigIgn")
    assert b"SigIgn:\t0000000000000000" in out and b"SigBlk:\t0000000000000000" in out, out


# ----- our shim only: how it is built -------------------------------------------------------------------


def ours_only(shim: Harness) -> None:
    if not shim.ours:
        pytest.skip("about Dockyard's shim only")


def parent_comm(pid: int) -> str:
    ppid = int(Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    return Path(f"/proc/{ppid}/comm").read_text().strip()


async def test_serving_shim_runs_no_threads_and_no_grpc(shim: Harness) -> None:
    ours_only(shim)
    client, _ = await shim.create("c1", ["sleep", "300"])
    conn = await client.call("Connect", pb.ConnectRequest(id="c1"), pb.ConnectResponse)
    assert os.listdir(f"/proc/{conn.shim_pid}/task") == [str(conn.shim_pid)]
    maps = Path(f"/proc/{conn.shim_pid}/maps").read_text()
    assert "grpc" not in maps
    # The shim speaks no TLS: OpenSSL is mapped only when inherited from the zygote (uvloop imports
    # `ssl`), and then none of its pages are the shim's own.
    assert openssl_private_dirty_kib(conn.shim_pid) == 0
    if parent_comm(conn.shim_pid) != "dockyard-zygote":
        assert "libssl" not in maps  # asyncio is kept from loading it


def openssl_private_dirty_kib(pid: int) -> int:
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=1)[0]
        if not head.endswith(":"):  # a mapping's first line: "start-end perms offset dev inode path"
            inside = "libssl" in line or "libcrypto" in line or "_ssl." in line
        elif inside and head == "Private_Dirty:":
            total += int(line.split()[1])
    return total


def test_shim_modules_import_no_grpc_and_start_no_threads() -> None:
    code = (
        "import sys, threading\n"
        "import shim.__main__, shim.zygote, shim.cleanup\n"
        "shim.zygote._preload()\n"
        "assert shim.zygote.rehearsed\n"
        "bad = sorted(m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', '_grpc', 'grpc_')))\n"
        "assert not bad, bad\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


async def test_shims_fork_from_the_zygote(shim: Harness) -> None:
    ours_only(shim)
    _, task1 = await shim.create("c1", ["sleep", "300"])
    await wait_for_zygote(task1)
    client2, task2 = await shim.create("c2", ["sh", "-c", "echo from c2"])
    conn = await client2.call("Connect", pb.ConnectRequest(id="c2"), pb.ConnectResponse)
    assert parent_comm(conn.shim_pid) == "dockyard-zygote"
    assert Path(f"/proc/{conn.shim_pid}/comm").read_text().strip() == "dockyard-shim"
    assert await read_until(task2.out_fd, b"from c2\n") == b"from c2\n"


async def wait_for_zygote(task: Task) -> None:
    """Until the zygote of the task's runtime dir (<state>/tasks) listens."""
    from dockyard_common.shimlaunch import launch_for, zygote_socket_path

    path = zygote_socket_path(launch_for(NS, task.id, str(task.bundle.path), ""))
    assert path is not None and path.startswith(f"{task.bundle.path.parent.parent}/.dockyard-shim/")
    deadline = time.monotonic() + 20
    while not os.path.exists(path) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def test_ksm_merges_the_pages_shims_copied(shim: Harness) -> None:
    """Shims forked from the zygote offer its memory to KSM (see shim.zygote.offer_to_ksm): with
    ksmd running, the pages they copied only to write reference counts are merged again."""
    ours_only(shim)
    if not ksm.available():
        pytest.skip("this kernel has no KSM")
    _, warm = await shim.create("warm", ["true"])
    await wait_for_zygote(warm)
    shims = []
    for i in range(3):
        client, task = await shim.create(f"k{i}", ["sleep", "300"])
        conn = await client.call("Connect", pb.ConnectRequest(id=f"k{i}"), pb.ConnectResponse)
        assert parent_comm(conn.shim_pid) == "dockyard-zygote"
        assert ksm.smaps_kib(conn.shim_pid, "Size", "mg") > 4096  # inherited from the zygote
        assert ksm.smaps_kib(task.pid, "Size", "mg") == 0  # and gone at the container's exec
        shims.append(conn.shim_pid)
    before = sum(ksm.smaps_kib(p, "Private_Dirty") for p in shims)
    after = before
    with ksm.running(pages_to_scan=20000, sleep_ms=5):
        # A page merges once ksmd has seen it unchanged on two scans; on a loaded host the shims'
        # own start-up may still be touching pages during the first ones: wait, scan by scan.
        for _ in range(8):
            await asyncio.to_thread(ksm.settle, 1, 120)
            after = sum(ksm.smaps_kib(p, "Private_Dirty") for p in shims)
            if after < before * 0.6:
                break
    print(f"\n[ksm] private dirty of 3 shims: {before} KiB before, {after} KiB merged")
    assert after < before * 0.6


async def test_without_the_zygote(shim: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    ours_only(shim)
    monkeypatch.setenv("DOCKYARD_SHIM_ZYGOTE", "0")
    client, task = await shim.create("c1", ["sh", "-c", "echo forked by start; exit 2"])
    conn = await client.call("Connect", pb.ConnectRequest(id="c1"), pb.ConnectResponse)
    assert parent_comm(conn.shim_pid) != "dockyard-zygote"
    waited = await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=20)
    assert waited.exit_status == 2
    assert await read_until(task.out_fd, b"start\n") == b"forked by start\n"


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise AssertionError("no Pss line")


async def test_footprint(shim: Harness) -> None:
    """Start time and PSS of N live shims, each running a container: printed, loosely bounded.

    Run with -s to see the numbers; the bench compares them with containerd's shim.
    """
    n = 4
    _, warm = await shim.create("warm", ["true"])  # a first start may launch the zygote: not what is measured
    if shim.ours:
        await wait_for_zygote(warm)
    starts, creates, pids = [], [], []
    for i in range(n):
        cid = f"f{i}"
        t0 = time.monotonic()
        client, task = await shim.start_shim(cid, shim.spec(["sleep", "300"], cid=cid))
        t1 = time.monotonic()
        rootfs = mount_pb2.Mount(type="bind", source=str(shim.rootfs), options=["rbind", "rw"])
        resp = await client.call("Create", pb.CreateTaskRequest(id=cid, bundle=str(task.bundle.path),
                                                                rootfs=[rootfs]), pb.CreateTaskResponse)
        shim.container_pids.add(resp.pid)
        await client.call("Start", pb.StartRequest(id=cid), pb.StartResponse)
        creates.append(time.monotonic() - t1)
        starts.append(t1 - t0)
        await client.call("Stats", pb.StatsRequest(id=cid), pb.StatsResponse)
        pids.append((await client.call("Connect", pb.ConnectRequest(id=cid), pb.ConnectResponse)).shim_pid)
    for i in range(n):  # what a shim does after Start (forward its events) is done: measure it idle
        await shim.sink.wait_for("/tasks/start", f"f{i}")
    pss = sorted(pss_kib(p) for p in pids)
    name = "dockyard" if shim.ours else "runc-v2"
    print(f"\n[footprint {name}] start (binary start + connect) median {sorted(starts)[n // 2] * 1000:.0f} ms, "
          f"create+start median {sorted(creates)[n // 2] * 1000:.0f} ms, PSS with {n} live shims "
          f"median {pss[n // 2]} KiB (min {pss[0]}, max {pss[-1]})")
    if shim.ours:
        assert pss[n // 2] < 16 * 1024
        assert sorted(starts)[n // 2] < 3.0


async def test_oom_is_reported(shim: Harness) -> None:
    # The workload fills its limit only once Start has returned: containerd's shim watches for
    # OOM from its Start on (ours from Create), and a v1 cgroup's eventfd reports no earlier OOM.
    gate = shim.rootfs / f"oom-gate-{secrets.token_hex(4)}"  # the rootfs is bound read-write
    spec = shim.spec(["sh", "-c", f"until [ -e /{gate.name} ]; do sleep 0.01; done; "
                      "dd if=/dev/zero of=/dev/null bs=64M count=1"])
    spec["linux"]["resources"]["memory"] = {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}
    client, task = await shim.start_shim("c1", spec)
    rootfs = mount_pb2.Mount(type="bind", source=str(shim.rootfs), options=["rbind", "rw"])
    resp = await client.call("Create", pb.CreateTaskRequest(id="c1", bundle=str(task.bundle.path), rootfs=[rootfs],
                                                            stdout=str(task.stdout), stderr=str(task.stderr)),
                             pb.CreateTaskResponse, timeout=30)
    shim.container_pids.add(resp.pid)
    await client.call("Start", pb.StartRequest(id="c1"), pb.StartResponse)
    gate.touch()
    try:
        waited = await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=20)
    finally:
        gate.unlink()
    assert waited.exit_status == 137
    await shim.sink.wait_for("/tasks/oom", "c1")


async def test_update_resources(shim: Harness) -> None:
    client, _ = await shim.create("c1", ["sleep", "300"])
    req = pb.UpdateTaskRequest(id="c1")
    req.resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
    req.resources.value = json.dumps({"pids": {"limit": 42}}).encode()
    await client.call("Update", req, empty_pb2.Empty)
    pids_dir = next(d for d in shim.cgroup_dirs("c1") if d.parts[4] == "pids")
    assert (pids_dir / "pids.max").read_text().strip() == "42"


async def test_execs_die_with_the_init(shim: Harness) -> None:
    client, _ = await shim.create("c1", ["sleep", "300"])
    req = pb.ExecProcessRequest(id="c1", exec_id="e1")
    req.spec.type_url = PROCESS_TYPE
    req.spec.value = json.dumps(default_spec()["process"] | {"args": ["sleep", "300"], "terminal": False}).encode()
    await client.call("Exec", req, empty_pb2.Empty)
    started = await client.call("Start", pb.StartRequest(id="c1", exec_id="e1"), pb.StartResponse)
    shim.container_pids.add(started.pid)
    await client.call("Kill", pb.KillRequest(id="c1", signal=signal.SIGKILL), empty_pb2.Empty)
    waited = await client.call("Wait", pb.WaitRequest(id="c1", exec_id="e1"), pb.WaitResponse, timeout=10)
    assert waited.exit_status == 137  # the PID namespace went down with its init
    assert (await client.call("Wait", pb.WaitRequest(id="c1"), pb.WaitResponse, timeout=10)).exit_status == 137
    await wait_until_async(lambda: shim.sink.topics("c1").count("/tasks/exit") >= 2, timeout=10, what="both exits")
    exits = [EventSink.decode(e).id for e in shim.sink.envelopes if e.topic == "/tasks/exit"]
    assert sorted(exits) == ["c1", "e1"]
    if shim.ours:
        assert exits == ["e1", "c1"]  # an init's exit is reported after its execs'


async def test_long_bundle_paths_get_a_short_socket(shim: Harness) -> None:
    deep = "d" * 90  # <base>/<deep>/tasks/<ns>/<id>/shim.sock is past the 107 bytes of sun_path
    client, task = await shim.start_shim("c1", shim.spec(["true"]), state=deep)
    address = task.bundle.read("address")
    path = address.removeprefix("unix://")
    assert len(path) <= 107 and os.path.exists(path)
    if shim.ours:
        assert path.startswith("/run/dockyard-shim/")
    # containerd's shim may close the connection before it answers a Shutdown (the daemon's
    # client allows for it too)
    with contextlib.suppress(ConnectionClosed):
        await client.call("Shutdown", pb.ShutdownRequest(id="c1"), empty_pb2.Empty)
    await client.conn.wait_closed()
