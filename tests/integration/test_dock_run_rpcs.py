"""`dock run`'s calls on the way to Tasks/Create, against a real daemon: the rootfs mounts come
from Snapshots/Prepare (no Containers/Get or Snapshots/Mounts afterwards), the namespace's
default snapshotter is asked for alongside the image, and an unknown image still fails in its
own words with nothing left behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from dock.client import Client
from dock.network import network_options
from dock.oci import SpecOptions
from dock.runner import RunRequest, run
from dockyard_common.errors import NotFound
from tests.daemon import DaemonProcess, remove_base, start_daemon
from tests.images import busybox_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

IMAGE = "docker.io/library/busybox:latest"


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    d = start_daemon()
    try:
        archive = d.base / "busybox.tar"
        archive.write_bytes(busybox_oci_archive(IMAGE))
        res = subprocess.run([sys.executable, "-m", "dock.cli", "--address", d.address, "images", "import",
                              "--unpack", "--quiet", str(archive)], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        yield d
    finally:
        remove_base(d)


def _request(image: str, cid: str) -> RunRequest:
    net = network_options(["none"])
    return RunRequest(image, cid, SpecOptions(args=["echo", "hi"], net=net.spec_net), rm=True, network=net)


async def _run_recording(d: DaemonProcess, req: RunRequest, out_fd: int) -> tuple[int, list[str]]:
    """Run `req`; the methods it called, in order."""
    calls: list[str] = []
    async with Client(d.address) as client:
        call = client.call

        async def recording(method: Callable[..., Awaitable[Any]], request: Any, lease: str = "") -> Any:
            calls.append(method._method.decode().rsplit(".", 1)[-1])  # type: ignore[attr-defined]
            return await call(method, request, lease)

        client.call = recording  # type: ignore[method-assign]
        code = await run(client, req, out_fd=out_fd, err_fd=out_fd)
        left = await client.containers.list()
    assert left == [], "--rm left the container behind"
    return code, calls


def test_run_hands_tasks_create_the_prepared_mounts(daemon: DaemonProcess) -> None:
    with tempfile.TemporaryFile() as out:
        code, calls = asyncio.run(_run_recording(daemon, _request("busybox", "rpcs-1"), out.fileno()))
        out.seek(0)
        assert out.read() == b"hi\n"
    assert code == 0
    before = calls[:calls.index("Tasks/Create")]
    assert "Snapshots/Prepare" in before and "Containers/Create" in before
    assert "Containers/Get" not in before and "Snapshots/Mounts" not in before, before
    assert "Namespaces/Get" in before  # the default snapshotter, still asked for


def test_unknown_image_fails_first_and_leaves_nothing(daemon: DaemonProcess) -> None:
    with tempfile.TemporaryFile() as out, pytest.raises(NotFound, match="nosuchimage"):
        asyncio.run(_run_recording(daemon, _request("nosuchimage", "rpcs-2"), out.fileno()))

    async def state() -> tuple[list[Any], list[Any]]:
        async with Client(daemon.address) as client:
            return await client.containers.list(), await client.leases.list()

    containers, leases = asyncio.run(state())
    assert containers == [] and leases == []
