"""The shim's command line, socket path, durable state files and process state machine (no root)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from dockyard_common.errors import FailedPrecondition, NotFound
from dockyard_common.shimlaunch import FALLBACK_DIR, socket_path
from dockyard_common.types import Status
from shim import state
from shim.__main__ import UsageError, main, parse_args
from shim.process import ExecProcess
from shim.reaper import exit_code
from shim.stdio import StdioPaths

REPO = Path(__file__).resolve().parents[2]


def test_flags_as_containerd_passes_them() -> None:
    opts = parse_args(["-namespace", "ns1", "-address", "/run/d.sock", "-publish-binary", "/bin/dy", "-id", "web",
                       "-debug", "start"])
    assert (opts.namespace, opts.address, opts.publish_binary, opts.id, opts.debug, opts.action) == (
        "ns1", "/run/d.sock", "/bin/dy", "web", True, "start")
    # Go's flag syntax: = values, two dashes, bool values; parsing stops at the action.
    opts = parse_args(["--namespace=x", "-id=y", "-debug=false", "-bundle", "/b", "delete", "-id", "ignored"])
    assert (opts.namespace, opts.id, opts.debug, opts.bundle, opts.action) == ("x", "y", False, "/b", "delete")
    assert parse_args(["-namespace", "x"]).action == "serve"


@pytest.mark.parametrize("argv, message", [
    (["-nope", "start"], "flag provided but not defined: -nope"),
    (["-namespace"], "flag needs an argument: -namespace"),
    (["-debug=maybe"], "invalid boolean value"),
])
def test_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def test_main_refuses_bad_use(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-id", "x", "start"]) == 2
    assert "shim namespace cannot be empty" in capsys.readouterr().err
    assert main(["-namespace", "n", "-id", "x", "explode"]) == 2
    assert "unknown action 'explode'" in capsys.readouterr().err
    assert main(["-namespace", "n", "delete"]) == 2
    assert "-id is required" in capsys.readouterr().err
    assert main(["-v"]) == 0
    assert "dockyard-shim" in capsys.readouterr().out


def test_socket_path_falls_back_when_too_long(tmp_path: Path) -> None:
    assert socket_path(str(tmp_path)) == str(tmp_path / "shim.sock")
    deep = str(tmp_path / ("d" * 100))
    path = socket_path(deep)
    assert path.startswith(FALLBACK_DIR + "/") and path.endswith(".sock") and len(path) <= 107
    assert socket_path(deep) == path  # stable: `delete` finds it again
    assert socket_path(deep + "x") != path


def test_state_files_round_trip(tmp_path: Path) -> None:
    b = str(tmp_path)
    assert state.load_exit(b) is None and state.load_init(b) == (0, 0) and state.init_alive(b) == 0
    state.save_exit(b, state.ExitRecord(42, 137, 1_700_000_000_123_456_789))
    assert state.load_exit(b) == state.ExitRecord(42, 137, 1_700_000_000_123_456_789)
    assert not [p for p in os.listdir(b) if p.startswith(".")]  # no staging file left
    (tmp_path / state.EXIT).write_text("{broken")
    assert state.load_exit(b) is None
    # A live process is recognised by PID and start time; a recycled PID is not.
    state.save_init(b, os.getpid())
    assert state.init_alive(b) == os.getpid()
    (tmp_path / state.INIT_START).write_text("1")
    assert state.init_alive(b) == 0


def test_zombies_count_as_gone() -> None:
    proc = subprocess.Popen(["true"])
    while True:  # wait without reaping
        stat = Path(f"/proc/{proc.pid}/stat").read_bytes()
        if stat.rsplit(b")", 1)[1].split()[0] == b"Z":
            break
    assert state.process_start_time(proc.pid) is None
    proc.wait()


def test_exit_codes_follow_containerd() -> None:
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert exit_code(os.waitpid(pid, 0)[1]) == 3
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    assert exit_code(os.waitpid(pid, 0)[1]) == 137


async def test_exec_process_states() -> None:
    p = ExecProcess("e1", StdioPaths(), b"{}")
    assert p.status == Status.CREATED
    with pytest.raises(FailedPrecondition, match="process not created"):
        p.kill(signal.SIGTERM)
    p.set_running(os.getpid())
    with pytest.raises(FailedPrecondition, match="cannot start a running process"):
        p.set_running(1)
    with pytest.raises(FailedPrecondition, match="cannot delete a running process"):
        p.check_delete()
    assert p.status_in(Status.PAUSED) == Status.PAUSED
    waiter = asyncio.ensure_future(p.wait())
    assert p.set_exited(5) and not p.set_exited(9)  # recorded once
    assert (p.status, p.exit_status) == (Status.STOPPED, 5)
    await asyncio.sleep(0)
    assert not waiter.done()  # only a reported exit releases Wait
    p.mark_reported()
    await asyncio.wait_for(waiter, 1)
    await asyncio.wait_for(p.wait(), 1)  # and later Waits return at once
    with pytest.raises(NotFound, match="process already finished"):
        p.kill(signal.SIGTERM)
    p.check_delete()
    assert p.status_in(Status.PAUSED) == Status.STOPPED


def test_delete_action_without_anything_to_clean(tmp_path: Path) -> None:
    """`delete` in a bundle whose container never ran: nothing to kill, status 255."""
    from dockyard_api.containerd.runtime.v2.task import shim_pb2

    res = subprocess.run([sys.executable, "-m", "shim", "-namespace", "n", "-id", "x", "delete"], cwd=tmp_path,
                         capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, res.stderr
    resp = shim_pb2.DeleteResponse.FromString(res.stdout)
    assert (resp.pid, resp.exit_status) == (0, 255) and resp.exited_at.seconds > 0


def _fake_zygote(path: Path) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(str(path))
    srv.listen(1)
    return srv


def test_zygote_request_falls_back_only_when_nothing_was_handed_over(tmp_path: Path) -> None:
    from dockyard_common import shimlaunch

    launch: Any = {"namespace": "n", "id": "x", "bundle": str(tmp_path), "socket": "", "events": "", "debug": False}
    r, w = os.pipe()
    try:
        assert shimlaunch.request_shim(launch, r, str(tmp_path / "none.sock")) == 0  # no zygote at all
        srv = _fake_zygote(tmp_path / "z.sock")
        with srv:
            # Accepted but never greeted (a zygote on its way out): fall back, nothing was sent.
            pending = threading.Thread(target=lambda: srv.accept()[0].close())
            pending.start()
            assert shimlaunch.request_shim(launch, r, str(tmp_path / "z.sock")) == 0
            pending.join()

            def greet_then_vanish() -> None:
                conn, _ = srv.accept()
                conn.send(shimlaunch.HELLO)
                socket.recv_fds(conn, 65536, 1)
                conn.close()

            vanish = threading.Thread(target=greet_then_vanish)
            vanish.start()
            with pytest.raises(shimlaunch.NoAnswer):
                shimlaunch.request_shim(launch, r, str(tmp_path / "z.sock"))
            vanish.join()
    finally:
        os.close(r)
        os.close(w)


async def test_a_foreground_serve_keeps_to_its_socket_in_a_grouped_bundle(tmp_path: Path) -> None:
    """`serve -socket S` in a bundle whose spec names a group (a pod) serves on S, for that bundle
    alone: it neither goes looking for the group's socket nor removes it at the end."""
    import json

    from google.protobuf import empty_pb2

    from dockyard_api.containerd.runtime.v2.task import shim_pb2
    from dockyard_common.ttrpc import TTRPCClient
    from tests.waiting import wait_until_async

    root = Path(os.path.realpath(tmp_path)) / "rt"
    bundle = root / "k8s.io" / "c1"
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps({"annotations": {"io.kubernetes.cri.sandbox-id": "pod"}}))
    sock = tmp_path / "s.sock"
    proc = subprocess.Popen([sys.executable, "-m", "shim", "-namespace", "k8s.io", "-id", "c1", "-socket",
                             str(sock), "serve"], cwd=bundle, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stderr=subprocess.PIPE)
    try:
        await wait_until_async(sock.exists, what="the shim's socket")  # live once it has its name
        async with await TTRPCClient.connect(f"unix://{sock}", timeout=5) as c:
            await c.call("containerd.task.v2.Task", "Shutdown", shim_pb2.ShutdownRequest(id="c1"),
                         empty_pb2.Empty, timeout=5, metadata={"containerd-namespace-ttrpc": "k8s.io"})
        assert await asyncio.to_thread(proc.wait, 10) == 0, proc.stderr.read() if proc.stderr else ""
        assert not sock.exists()  # the socket it served on went with it
        assert not (root / ".dockyard-shim").exists()  # and no group's socket was made
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
