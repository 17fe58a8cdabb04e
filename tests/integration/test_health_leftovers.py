"""A health probe a daemon killed mid-probe leaves in its shim (supervisor/runtime/health.py): the
next daemon kills and deletes it before it resumes the container's watch. A real dockyardd, our
shim, a busybox container on `--net none`; every wait is on a state, with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_api.containerd.runtime.v2.runc.options import oci_pb2
from dockyard_api.containerd.services.tasks.v1 import tasks_pb2
from dockyard_common.errors import NotFound
from supervisor.runtime.health import EXEC_PREFIX
from tests.compat.runtimes import IMAGE, busybox_daemon
from tests.daemon import DaemonProcess, alive, start_daemon
from tests.dockcli import DockCLI
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

# The first probe marks that it ran and hangs in a child of its shell; the later ones pass.
CHECK = "if [ -f /tmp/probed ]; then exit 0; fi; touch /tmp/probed; sleep 1000; true"


@pytest.fixture
def d() -> Iterator[DaemonProcess]:
    with busybox_daemon() as daemon:
        yield daemon


def processes(d: DaemonProcess, cid: str) -> dict[int, str]:
    """pid -> exec id ("" for the init and other processes) of the task's processes: Tasks/ListPids,
    which asks the shim."""
    async def ask() -> dict[int, str]:
        async with d.client() as client:
            resp = await client.call(client.tasks.stub.ListPids, tasks_pb2.ListPidsRequest(container_id=cid))
        return {p.pid: oci_pb2.ProcessDetails.FromString(p.info.value).exec_id if p.HasField("info") else ""
                for p in resp.processes}
    return asyncio.run(ask())


def exec_gone(d: DaemonProcess, cid: str, exec_id: str) -> bool:
    async def ask() -> bool:
        async with d.client() as client:
            try:
                await client.tasks.get(cid, exec_id)
            except NotFound:
                return True
            return False
    return asyncio.run(ask())


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_probe_left_by_a_killed_daemon_is_killed_and_deleted_at_start(d: DaemonProcess) -> None:
    cli = DockCLI(d.address)
    cid = f"left-{secrets.token_hex(4)}"
    cli.ok("run", "-d", "--net", "none", "--name", cid, "--health-cmd", CHECK, "--health-interval", "300ms",
           "--health-timeout", "10m", IMAGE, "sh", "-c", "exec sleep 600")
    # the first probe hangs: its shell (the exec) and the shell's `sleep 1000`
    found: dict[int, str] = {}

    def hanging() -> bool:
        found.clear()
        found.update(processes(d, cid))
        return any(e.startswith(EXEC_PREFIX) for e in found.values()) and \
            any(cmdline(pid) == b"sleep\x001000\x00" for pid in found)

    wait_until(hanging, timeout=30, what="the probe to hang")
    [exec_id] = [e for e in found.values() if e]
    probe_pids = {pid for pid in found if found[pid] == exec_id or cmdline(pid) == b"sleep\x001000\x00"}
    assert len(probe_pids) == 2, found
    assert list((d.state / "health").iterdir()) == [d.state / "health" / f"default@{cid}@{exec_id}"]

    d.stop(signal.SIGKILL)  # mid-probe: its exec stays in the shim, running
    assert all(alive(pid) for pid in probe_pids)
    again = start_daemon(base=d.base, extra=["--config", str(d.base / "config.toml")])
    d.proc, d.log_start = again.proc, again.log_start

    wait_until(lambda: exec_gone(d, cid, exec_id), timeout=30, what="the leftover exec to be deleted")
    wait_until(lambda: not any(alive(pid) for pid in probe_pids), timeout=10, what="the probe's processes to go")
    assert exec_id not in processes(d, cid).values()
    assert f"probe {exec_id} left by a previous daemon removed" in d.log()[d.log_start:]
    # the watch resumed: the next probe passes, and only the init stays in the task
    wait_until(lambda: (cli.json("inspect", cid)[0]["state"].get("Health") or {}).get("Status") == "healthy",
               timeout=30, what="the container to be healthy")
    wait_until(lambda: len(processes(d, cid)) == 1, timeout=10, what="no process but the init")
    assert "Traceback" not in d.log()
