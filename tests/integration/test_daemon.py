"""dockyardd as a process: flags, config, the root lock, signals, the socket, logs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2

from dockyard_api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from supervisor.diskreserve import DEFAULT_SIZE, RESERVE_NAME, free_bytes
from tests.daemon import REPO, DaemonProcess, start_daemon, subscribed


def run_dockyardd(*args: str, timeout: float = 20, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env})


def test_second_daemon_on_same_root_refuses(daemon: DaemonProcess, tmp_path: Path) -> None:
    other_sock = tmp_path / "other.sock"
    res = run_dockyardd("--root", str(daemon.root), "--state", str(tmp_path / "s"),
                        "--address", str(other_sock))
    assert res.returncode == 1
    assert f"already using root {daemon.root}" in res.stderr
    assert f"pid {daemon.proc.pid}" in res.stderr
    assert not other_sock.exists()
    assert daemon.proc.poll() is None  # the first one is untouched


def test_second_daemon_on_same_socket_refuses(daemon: DaemonProcess, tmp_path: Path) -> None:
    res = run_dockyardd("--root", str(tmp_path / "r"), "--state", str(tmp_path / "s"),
                        "--address", daemon.address)
    assert res.returncode == 1
    assert "in use by another server" in res.stderr
    assert os.path.exists(daemon.address)


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("root = [unclosed\n")
    res = run_dockyardd("--config", str(cfg))
    assert res.returncode == 2 and "not valid TOML" in res.stderr and "Traceback" not in res.stderr
    cfg.write_text('[grpc]\nadress = "/x"\n')
    res = run_dockyardd("--config", str(cfg))
    assert res.returncode == 2 and "unknown setting 'grpc.adress'" in res.stderr
    cfg.write_text('[log]\nlevel = "loud"\n')
    res = run_dockyardd("--config", str(cfg))
    assert res.returncode == 2 and "log level must be one of" in res.stderr
    cfg.write_text('[grpc]\nserver = "netty"\n')
    res = run_dockyardd("--config", str(cfg), DOCKYARD_GRPC_SERVER="")  # the variable would override the file
    assert res.returncode == 2 and "grpc.server must be one of dockyard, grpcio" in res.stderr
    res = run_dockyardd("--default-network", "no such/net")
    assert res.returncode == 2 and "network.default must be a network name or none" in res.stderr
    res = run_dockyardd("--config", str(tmp_path / "missing.toml"))
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_config_file_sets_address_and_log_format() -> None:
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    cfg = base / "config.toml"
    cfg.write_text(f'[grpc]\naddress = "{base}/x.sock"\n[log]\nformat = "json"\n')
    d = start_daemon(base=base, extra=["--config", str(cfg)], wait=False)
    try:
        deadline = time.monotonic() + 20
        while "serving on" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (base / "x.sock").exists(), d.log()
        lines = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
        assert any("serving on" in e["msg"] for e in lines)
    finally:
        assert d.stop() == 0
        assert not (base / "x.sock").exists()
        shutil.rmtree(base)


def test_stale_socket_is_replaced() -> None:
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    (base / "state").mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(base / "state" / "dockyard.sock"))
    stale.close()  # the file stays, nobody listens
    d = start_daemon(base=base)
    try:
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0
        shutil.rmtree(base)


async def test_missing_namespace_header_is_failed_precondition(daemon: DaemonProcess) -> None:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        stub = events_pb2_grpc.EventsStub(ch)
        req = events_pb2.PublishRequest(topic="/x/y", event=any_pb2.Any(type_url="t", value=b""))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Publish(req)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "namespace is required" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Publish(req, metadata=[("containerd-namespace", "bad name!")])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_sigterm_finishes_streams_and_removes_socket(daemon: DaemonProcess) -> None:
    async with grpc.aio.insecure_channel(f"unix:{daemon.address}") as ch:
        stream = await subscribed(ch)
        daemon.proc.send_signal(signal.SIGTERM)
        received = [e async for e in stream]  # ends cleanly, no error raised
        assert received == []
        assert await stream.code() == grpc.StatusCode.OK
    assert daemon.proc.wait(20) == 0
    assert not os.path.exists(daemon.address)
    assert "stopped" in daemon.log()


async def test_sigint_also_stops_gracefully(daemon: DaemonProcess) -> None:
    assert daemon.stop(signal.SIGINT) == 0
    assert not os.path.exists(daemon.address)


def test_start_says_when_ksmd_is_off(daemon: DaemonProcess) -> None:
    """Shims share memory through KSM only where the host runs ksmd: an off ksmd is worth a line."""
    from tests import ksm

    off = ksm.available() and ksm.read("run") == 0
    assert ("ksmd is off" in daemon.log()) == off


@pytest.mark.root
def test_a_refused_second_daemon_leaves_the_full_disk_reserve_alone(tmp_path: Path) -> None:
    """On a nearly full root a starting daemon releases the disk reserve to make room; one that
    the root lock refuses must not release the live daemon's (its deletions would then fail)."""
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    (base / "root").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(base / "root")], check=True)
    d = None
    try:
        d = start_daemon(base=base)
        reserve = d.root / RESERVE_NAME
        before = reserve.stat()
        with open(d.root / "filler", "wb") as f:  # leave less than a reserve's worth free
            f.write(b"\0" * max(0, free_bytes(d.root) - (DEFAULT_SIZE // 2)))
        res = run_dockyardd("--root", str(d.root), "--state", str(tmp_path / "s"),
                            "--address", str(tmp_path / "other.sock"))
        assert res.returncode == 1 and "already using root" in res.stderr, res.stderr
        after = reserve.stat()
        assert (after.st_ino, after.st_blocks) == (before.st_ino, before.st_blocks)
    finally:
        code = d.stop() if d is not None else 0
        subprocess.run(["umount", str(base / "root")], check=False)
        shutil.rmtree(base, ignore_errors=True)
    assert code == 0


def test_a_daemon_that_cannot_start_leaves_no_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/daemon.start_daemon: the error carries the daemon's words; its private dir goes."""
    made: list[str] = []
    real = tempfile.mkdtemp

    def recording(*args: Any, **kwargs: Any) -> str:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recording)
    with pytest.raises(RuntimeError, match="exited with") as err:
        start_daemon(extra=["--config", "/nonexistent/dockyard-test.toml"])
    assert "dockyard-test.toml" in str(err.value)
    assert len(made) == 1 and not os.path.exists(made[0])
