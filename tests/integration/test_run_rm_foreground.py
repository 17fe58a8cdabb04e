"""A plain foreground `dock run --rm` (FIFOs, no -d/-i/-t) is removed by the daemon (issue 15), as
Docker's: the client's exit status and output stay exact, and a client killed by SIGKILL leaves
no container behind once its task ends.

The status comes from the task's /tasks/exit event, subscribed to before the task exists (the
daemon sends the stream's headers once the subscription is in place), so a container that exits
at once, removed by the daemon straight away, cannot lose it: such runs are repeated.

A real daemon (`--default-network none`), our shim, busybox. Every wait is on a state the daemon
reports, with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import any_pb2

from dockyard_api.containerd.events import container_pb2
from dockyard_api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from dockyard_common.errors import InvalidArgument
from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, uid
from tests.daemon import REPO, DaemonProcess
from tests.dockcli import DockCLI
from tests.integration.conftest import emptied
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

QUICK_RUNS = 20


@pytest.fixture
def d(busybox_daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    yield busybox_daemon
    emptied(busybox_daemon)


@pytest.fixture
def tmp() -> Iterator[Path]:
    """dock's TMPDIR (its FIFO dirs), so a test sees what a run leaves there."""
    with tempfile.TemporaryDirectory(prefix="dy-rmfg-") as path:
        yield Path(path)


def containers(d: DaemonProcess) -> list[str]:
    return ctr(d, "containers", "ls", "-q").stdout.split()


def volumes(d: DaemonProcess) -> list[str]:
    return DockCLI(d.address).ok("volume", "ls", "-q").split()


def task_status(d: DaemonProcess, cid: str) -> str:
    for row in ctr(d, "tasks", "ls").stdout.splitlines()[1:]:
        fields = row.split()
        if fields[0] == cid:
            return fields[2]
    return ""


def removed_by_daemon(d: DaemonProcess, cid: str) -> bool:
    return f"container default/{cid} exited and was removed (--rm)" in d.log()[d.log_start:]


def test_status_and_output_are_kept_when_the_daemon_removes_at_once(d: DaemonProcess, tmp: Path) -> None:
    """Containers that exit at once: the daemon's removal races the client; the status and the
    output still come out whole, every time, and the container is gone when dock returns."""
    cli = DockCLI(d.address, tmp)
    for n in range(QUICK_RUNS):
        cid = uid(f"rmfg{n}")
        res = cli.dock("run", "--rm", "--net", "none", "-v", "/scratch", "--name", cid, IMAGE,
                       "sh", "-c", f"echo out; echo err >&2; exit {7 + n % 3}")
        assert (res.returncode, res.stdout, res.stderr) == (7 + n % 3, "out\n", "err\n"), n
        assert cid not in containers(d), f"{cid} still there when dock returned"
        assert removed_by_daemon(d, cid), f"{cid} was not removed by the daemon"
    assert not volumes(d)  # the anonymous volumes went with their containers
    assert not os.listdir(tmp)  # every run's FIFO dir removed


def test_all_output_is_copied_before_dock_returns(d: DaemonProcess, tmp: Path) -> None:
    """Much output then an exit: every line reaches dock's stdout, though the daemon deletes the
    task (and the shim closes the FIFOs) as soon as it exits."""
    cid = uid("rmfg-big")
    res = DockCLI(d.address, tmp).dock("run", "--rm", "--net", "none", "--name", cid, IMAGE,
                                       "sh", "-c", "seq 1 50000; exit 3")
    assert res.returncode == 3, res.stderr
    assert res.stdout.splitlines() == [str(i) for i in range(1, 50001)]
    assert cid not in containers(d) and removed_by_daemon(d, cid)


def test_a_killed_client_leaves_the_container_to_the_daemon(d: DaemonProcess, tmp: Path) -> None:
    """`kill -9` of the foreground dock: the container runs on; when its task ends (killed here)
    the daemon removes it, its snapshot and its anonymous volume."""
    cid = uid("rmfg-kill")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address, "TMPDIR": str(tmp)}
    client = subprocess.Popen([sys.executable, "-m", "dock.cli", "run", "--rm", "--net", "none", "-v", "/scratch",
                               "--name", cid, IMAGE, "sh", "-c", "echo ready; exec sleep 100000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO)
    try:
        assert client.stdout is not None
        assert client.stdout.readline() == b"ready\n"  # the task runs, its output reached the client
        client.send_signal(signal.SIGKILL)
        assert client.wait(timeout=30) == -signal.SIGKILL
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        for stream in (client.stdout, client.stderr):
            if stream is not None:
                stream.close()
    assert cid in containers(d) and task_status(d, cid) == "RUNNING"
    [volume] = volumes(d)

    async def kill_task() -> None:  # through the SDK, as any client would
        async with d.client() as c:
            await c.tasks.kill(cid, signal.SIGKILL)

    asyncio.run(kill_task())
    # The record goes first, the daemon's log line of the removal last (after the volumes).
    wait_until(lambda: removed_by_daemon(d, cid), timeout=30, what=f"{cid} removed by the daemon")
    assert cid not in containers(d)
    assert cid not in ctr(d, "snapshots", "ls").stdout
    assert volume not in volumes(d)


def test_a_subscription_entered_sees_what_is_published_next(d: DaemonProcess) -> None:
    """`events.subscribed` returns once the daemon has the subscription in place: an event
    published right after it (another call, which the daemon may serve first) is seen."""
    async def go() -> None:
        async with d.client() as c:
            stub = events_pb2_grpc.EventsStub(c.channel)
            for n in range(QUICK_RUNS):
                topic = f"/dock-test/ready{n}"
                payload = any_pb2.Any(type_url="containerd.events.ContainerDelete",
                                      value=container_pb2.ContainerDelete(id=f"c{n}").SerializeToString())
                async with c.events.subscribed(f'topic=="{topic}"') as stream:
                    await stub.Publish(events_pb2.PublishRequest(topic=topic, event=payload), metadata=c.metadata())
                    env = await asyncio.wait_for(anext(stream), 30)
                    assert (env.topic, env.event) == (topic, {"id": f"c{n}"})
            with pytest.raises(InvalidArgument, match="parse error"):  # refused at once, in words
                async with c.events.subscribed('topic=="/x" ,y'):
                    pass

    asyncio.run(asyncio.wait_for(go(), 120))  # a daemon that sent no early headers: a failure, not a hang
