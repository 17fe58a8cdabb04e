"""Sockets, shutdown, dead peers and peer credentials of the ttrpc server and client."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Iterator

import pytest
import uvloop
from google.protobuf import empty_pb2

from dockyard_api.containerd.runtime.v2.task import shim_pb2
from dockyard_common import errors
from dockyard_common.ttrpc import ConnectionClosed, RequestContext, TTRPCClient, TTRPCServer, parse_address, wire
from tests.unit.ttrpc_fixtures import SERVICE, TASK, ScriptedTask, fake_server, response_frame, short_tmpdir
from tests.waiting import wait_until_async

NOBODY = 65534


@pytest.fixture
def sock_dir() -> Iterator[str]:
    with short_tmpdir() as d:
        yield d


async def state(client: TTRPCClient, id: str, **kw: object) -> shim_pb2.StateResponse:
    return await client.call(SERVICE, "State", shim_pb2.StateRequest(id=id), shim_pb2.StateResponse, **kw)  # type: ignore[arg-type]


async def start(path: str, task: ScriptedTask | None = None, **kw: bool) -> TTRPCServer:
    srv = TTRPCServer(**kw)
    srv.register(TASK, task or ScriptedTask())
    await srv.listen(path)
    return srv


# --- the listening socket ---------------------------------------------------------------


async def test_socket_is_0600_and_removed_on_shutdown(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "shim.sock")
    srv = await start(path)
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert srv.paths == [path]
    assert os.listdir(sock_dir) == ["shim.sock"]  # no temporary name left behind
    await srv.shutdown()
    assert not os.path.exists(path)
    with pytest.raises(errors.FailedPrecondition, match="server closed"):
        await srv.listen(path)


async def test_listen_refuses_bad_paths_and_live_sockets(sock_dir: str) -> None:
    with pytest.raises(errors.InvalidArgument, match="absolute"):
        await TTRPCServer().listen("relative.sock")
    with pytest.raises(errors.NotFound, match="directory"):
        await TTRPCServer().listen(os.path.join(sock_dir, "nodir", "s.sock"))
    with pytest.raises(errors.InvalidArgument, match="longer"):
        await TTRPCServer().listen(os.path.join(sock_dir, "x" * 120))
    plain = os.path.join(sock_dir, "plain")
    with open(plain, "w"):
        pass
    with pytest.raises(errors.AlreadyExists):
        await TTRPCServer().listen(plain)
    path = os.path.join(sock_dir, "live.sock")
    srv = await start(path)
    try:
        with pytest.raises(errors.AlreadyExists, match=r"live\.sock"):
            await TTRPCServer().listen(path)
    finally:
        await srv.close()


async def test_stale_socket_is_replaced(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "stale.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(path)  # bound, never listening: what a crashed server leaves
    dead.close()
    srv = await start(path)
    try:
        async with await TTRPCClient.connect(path) as c:
            assert (await state(c, "echo:ok")).id == "ok"
    finally:
        await srv.close()


async def test_serve_inherited_listener(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "inherited.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen()
    srv = TTRPCServer()
    srv.register(TASK, ScriptedTask())
    await srv.serve_fd(lsock.detach())  # the server owns the fd now, as a shim owns its fd 3
    try:
        async with await TTRPCClient.connect(f"unix://{path}") as c:
            assert (await state(c, "echo:fd")).id == "fd"
    finally:
        await srv.shutdown()
    assert os.path.exists(path)  # not ours to remove: whoever bound it cleans it up
    os.unlink(path)


async def test_serve_fd_refuses_a_non_listener() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with pytest.raises(errors.InvalidArgument, match="not listening"):
            await TTRPCServer().serve_fd(sock.fileno())
        os.fstat(sock.fileno())  # still open: a refusal leaves the caller's fd alone
    finally:
        sock.close()
    r, w = os.pipe()
    try:
        with pytest.raises(errors.InvalidArgument):
            await TTRPCServer().serve_fd(r)
    finally:
        os.close(r)
        os.close(w)


# --- shutdown ---------------------------------------------------------------------------


async def test_graceful_shutdown_finishes_in_flight_calls(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "shim.sock")
    task = ScriptedTask()
    srv = await start(path, task)
    busy = await TTRPCClient.connect(path)
    idle = await TTRPCClient.connect(path)
    try:
        assert (await state(idle, "echo:1")).id == "1"
        call = asyncio.ensure_future(state(busy, "block"))
        await asyncio.wait_for(task.started.wait(), 5)
        stopping = asyncio.ensure_future(srv.shutdown())
        await asyncio.wait_for(idle.wait_closed(), 5)  # idle connections go at once
        assert not os.path.exists(path)
        with pytest.raises(errors.Unavailable):
            await TTRPCClient.connect(path)
        await asyncio.sleep(0.1)  # a window: the blocked call holds the shutdown, and its connection
        assert not call.done() and not stopping.done() and not busy.closed
        task.release.set()
        assert (await asyncio.wait_for(call, 5)).id == "block"  # its response was still sent
        await asyncio.wait_for(stopping, 5)
        await asyncio.wait_for(busy.wait_closed(), 5)
        assert task.cancelled == 0
    finally:
        await busy.close()
        await idle.close()
        await srv.close()


async def test_shutdown_grace_expires_and_cancels(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "shim.sock")
    task = ScriptedTask()
    srv = await start(path, task)
    async with await TTRPCClient.connect(path) as c:
        call = asyncio.ensure_future(state(c, "block"))
        await asyncio.wait_for(task.started.wait(), 5)
        await asyncio.wait_for(srv.shutdown(grace=0.1), 5)
        with pytest.raises(ConnectionClosed):
            await call
        assert task.cancelled == 1
        await srv.wait_closed()


async def test_shutdown_requested_by_an_rpc(sock_dir: str) -> None:
    """The shim's Shutdown RPC: answer first, then stop (awaiting shutdown inside would deadlock)."""
    path = os.path.join(sock_dir, "shim.sock")
    srv = TTRPCServer()
    stops: list[asyncio.Task[None]] = []

    class Task(ScriptedTask):
        async def Shutdown(self, req: shim_pb2.ShutdownRequest, ctx: RequestContext) -> empty_pb2.Empty:
            stops.append(asyncio.create_task(srv.shutdown()))
            return empty_pb2.Empty()

    srv.register(TASK, Task())
    await srv.listen(path)
    async with await TTRPCClient.connect(path) as c:
        await c.call(SERVICE, "Shutdown", shim_pb2.ShutdownRequest(id="x"), empty_pb2.Empty)
        await asyncio.wait_for(srv.wait_closed(), 5)
        await asyncio.wait_for(c.wait_closed(), 5)
    await stops[0]


# --- the client against dead peers ------------------------------------------------------


async def test_connect_to_nothing_is_unavailable(sock_dir: str) -> None:
    with pytest.raises(errors.Unavailable, match="No such file or directory: unavailable"):
        await TTRPCClient.connect(os.path.join(sock_dir, "none.sock"))
    stale = os.path.join(sock_dir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(stale)
    try:
        with pytest.raises(errors.Unavailable, match="Connection refused"):
            await TTRPCClient.connect(f"unix://{stale}")
    finally:
        s.close()
    with pytest.raises(errors.InvalidArgument):
        await TTRPCClient.connect("unix://")


async def test_peer_death_fails_pending_calls_and_notifies(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "dying.sock")
    got_two = asyncio.Event()

    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wire.read_frame(reader)
        await wire.read_frame(reader)
        got_two.set()
        # then the "shim" dies: the connection closes with the requests unanswered

    notified: list[str] = []
    async with fake_server(path, dies):
        c = await TTRPCClient.connect(path, on_close=lambda: notified.append("closed"))
        calls = [asyncio.ensure_future(state(c, "a")), asyncio.ensure_future(state(c, "b"))]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert got_two.is_set()
        assert all(isinstance(r, ConnectionClosed) for r in results), results
        assert isinstance(results[0], errors.Unavailable)
        assert str(results[0]) == "ttrpc: closed: unavailable"
        assert c.closed
        await asyncio.wait_for(c.wait_closed(), 1)
        with pytest.raises(ConnectionClosed):
            await state(c, "later")
        await c.close()
    assert notified == ["closed"]


async def test_close_fails_pending_calls_and_runs_async_on_close(sock_dir: str) -> None:
    path = os.path.join(sock_dir, "shim.sock")
    task = ScriptedTask()
    srv = await start(path, task)
    seen = asyncio.Event()

    async def on_close() -> None:
        seen.set()

    try:
        c = await TTRPCClient.connect(path, on_close=on_close)
        call = asyncio.ensure_future(state(c, "block"))
        await asyncio.wait_for(task.started.wait(), 5)
        await c.close()
        with pytest.raises(ConnectionClosed):
            await call
        await asyncio.wait_for(seen.wait(), 5)
        await c.close()  # twice is fine
        await wait_until_async(lambda: task.cancelled == 1, 5, "the server to see the drop")
    finally:
        await srv.close()


async def test_abstract_socket_addresses(sock_dir: str) -> None:
    name = f"dockyard-ttrpc-test-{os.getpid()}"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frame = await wire.read_frame(reader)
        writer.write(response_frame(frame.stream_id, shim_pb2.StateResponse(id="abstract")))
        await reader.read()

    assert parse_address("@" + name) == "\0" + name
    assert parse_address("unix://@" + name) == "\0" + name
    assert parse_address("unix:///run/x.sock") == "/run/x.sock"
    async with fake_server("\0" + name, answer):
        for address in ("\0" + name, "@" + name):
            async with await TTRPCClient.connect(address) as c:
                assert (await state(c, "x")).id == "abstract"
                assert c.address == "@" + name


# --- peer credentials -------------------------------------------------------------------


def _connect_as(uid: int, path: str) -> socket.socket:
    """connect(2) with a different effective uid: SO_PEERCRED records the connector's euid."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    os.seteuid(uid)
    try:
        sock.connect(path)
    finally:
        os.seteuid(0)
    return sock


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
@pytest.mark.parametrize("require", [True, False])
async def test_peer_credentials_check(sock_dir: str, require: bool) -> None:
    path = os.path.join(sock_dir, "shim.sock")
    task = ScriptedTask()
    srv = await start(path, task, require_same_user=require)
    os.chmod(sock_dir, 0o711)
    os.chmod(path, 0o666)  # let the other uid reach the socket; the check is what is tested
    try:
        reader, writer = await asyncio.open_unix_connection(sock=_connect_as(NOBODY, path))
        other = TTRPCClient(reader, writer, address=path)
        try:
            if require:
                with pytest.raises(ConnectionClosed):
                    await state(other, "echo:x", timeout=5)
            else:
                assert (await state(other, "echo:x", timeout=5)).id == "x"
                peer = task.contexts[-1].peer
                assert peer is not None and peer.uid == NOBODY and peer.pid == os.getpid()
        finally:
            await other.close()
        async with await TTRPCClient.connect(path) as same:  # root is always let in
            assert (await state(same, "echo:root")).id == "root"
    finally:
        await srv.close()


# --- uvloop -----------------------------------------------------------------------------


def test_under_uvloop(sock_dir: str) -> None:
    async def main() -> None:
        path = os.path.join(sock_dir, "uv.sock")
        task = ScriptedTask()
        srv = await start(path, task, require_same_user=True)
        c = await TTRPCClient.connect(path)
        results = await asyncio.gather(*(state(c, f"echo:{i}") for i in range(100)))
        assert [r.id for r in results] == [str(i) for i in range(100)]
        md = await state(c, "md:k", metadata={"k": "v"})
        assert md.id == "v"
        assert task.contexts[-1].peer is not None and task.contexts[-1].peer.uid == os.geteuid()
        with pytest.raises(errors.NotFound):
            await state(c, "missing:x")
        with pytest.raises(errors.DeadlineExceeded):
            await state(c, "block", timeout=0.05)
        await srv.shutdown(grace=1)
        await asyncio.wait_for(c.wait_closed(), 5)
        await c.close()

    uvloop.run(main())
