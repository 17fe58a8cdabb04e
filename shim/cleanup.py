"""The `delete` action: clean up after a shim that is gone, from the bundle's files alone.

Runs in a fresh process with cwd = the bundle, while the serving shim is dead (habit 9: cleanup
works without the other process). It kills what is left of the container — the recorded init by
PID (checked against its start time, so a reused PID is left alone) and every process in the
recorded cgroup — removes the cgroup, unmounts the rootfs if something is mounted there, and
removes the shim's socket. The answer is a `containerd.task.v2.DeleteResponse`: the durable exit
record when the init's exit was collected; otherwise 137 (128+SIGKILL) if it had to kill the
init, 255 (nobody knows) if there was nothing left to kill.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import time
from dataclasses import dataclass

from shim import state

log = logging.getLogger("dockyard.shim.delete")

KILL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Outcome:
    pid: int
    exit_status: int
    exited_at: int  # ns since the epoch


def _wait_gone(pid: int, start: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = state.process_start_time(pid)
        if now is None or (start and now != start):
            return True
        time.sleep(0.01)
    return False


def _kill_init(bundle: str) -> bool:
    """SIGKILL the recorded init if that very process still runs; True if it did."""
    pid = state.init_alive(bundle)
    if not pid:
        return False
    _, start = state.load_init(bundle)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_gone(pid, start, KILL_TIMEOUT):
        log.warning("init %d still there %.0fs after SIGKILL", pid, KILL_TIMEOUT)
    return True


def _remove_cgroup(bundle: str) -> bool:
    """Kill every process of the recorded cgroup and remove it; True if anything was killed."""
    path = state.read_file(bundle, state.CGROUP)
    if not path:
        return False
    from dockyard_common.errors import DockyardError, NotFound
    from shim.cgroups import new_manager

    mgr = new_manager()
    try:
        mgr.load(path)
    except NotFound:
        return False
    killed = bool(mgr.pids())
    try:
        mgr.delete(force=True)
    except DockyardError as exc:
        log.warning("cgroup %s: %s", path, exc)
    return killed


def _unmount_rootfs(bundle: str) -> None:
    rootfs = os.path.join(bundle, "rootfs")
    if not os.path.ismount(rootfs):
        return
    from dockyard_common import linux

    with contextlib.suppress(OSError):
        linux.umount2(rootfs, linux.MNT_DETACH)


def _remove_socket(bundle: str) -> None:
    address = state.read_file(bundle, state.ADDRESS)
    path = address.removeprefix("unix://")
    if not path.startswith("/"):
        return
    with contextlib.suppress(OSError):
        if stat.S_ISSOCK(os.lstat(path).st_mode) and not _listening(path):
            os.unlink(path)


def _listening(path: str) -> bool:
    """Whether a server still accepts on the socket (then it is not ours to remove)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def cleanup(bundle: str) -> Outcome:
    killed = _kill_init(bundle)
    killed = _remove_cgroup(bundle) or killed
    _unmount_rootfs(bundle)
    _remove_socket(bundle)
    record = state.load_exit(bundle)
    if record is not None:
        return Outcome(record.pid, record.status, record.exited_at)
    pid, _ = state.load_init(bundle)
    return Outcome(pid, 128 + signal.SIGKILL if killed else 255, time.time_ns())


def delete_response(bundle: str) -> bytes:
    """Clean up and return the serialized DeleteResponse the `delete` action prints."""
    outcome = cleanup(bundle)
    from google.protobuf import timestamp_pb2

    from dockyard_api.containerd.runtime.v2.task import shim_pb2

    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(outcome.exited_at)
    resp = shim_pb2.DeleteResponse(pid=outcome.pid, exit_status=outcome.exit_status, exited_at=ts)
    return resp.SerializeToString()
