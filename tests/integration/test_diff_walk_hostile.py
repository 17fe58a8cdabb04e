"""The daemon's differ (supervisor/archive/diff.py) against a running container that swaps a
directory for a symlink to a host directory while it is walked.

A native snapshot's view is the container's live directory, so the walk of `dock diff`,
`dock commit --no-pause` and Diff.Diff reads a tree its processes change at will. The container
here trades /x/dN (directories) and /x/sN (symlinks to a host directory holding a secret) with
renameat2 RENAME_EXCHANGE, forever (tests/integration/test_container_hostile.py's helper). A walk
by path listed the host's file (`A /x/s17/secret`) and wrote it into the layer blob, which a
client can read; other runs failed with "No such file or directory". By descriptors, no host
file ever reaches the output: each run succeeds or fails in words, and the daemon lives on.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from dock.client import Client
from dock.lookup import resolve
from dock.rootfs import container_layers
from dockyard_common.errors import DockyardError
from dockyard_common.imagespec import MEDIA_TYPE_OCI_LAYER_GZIP
from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI
from tests.integration.test_container_hostile import host_secret, swap_binary, swapping_container

__all__ = ["host_secret", "swap_binary"]  # fixtures, used by name

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

ROUNDS = 8
# What an error meant for a person never says (a Python exception leaking through).
PYTHON_WORDS = ("Traceback", "Errno", "Error:", "NoneType", "object has no attribute", "b'", "internal")


def blob_leaks(blob: bytes, token: str) -> list[str]:
    """Names in the layer `blob` (gzip or plain tar) that are the host's: `secret`, or a file
    holding `token`."""
    data = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
    leaks = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            if m.name.rstrip("/").endswith("secret"):
                leaks.append(m.name)
            elif m.isfile():
                f = tf.extractfile(m)
                if f is not None and token.encode() in f.read():
                    leaks.append(m.name)
    return leaks


def clear_failure(stderr: str) -> None:
    assert stderr.strip(), "a failure must say why"
    assert not any(w in stderr for w in PYTHON_WORDS), stderr


def still_alive(d: DaemonProcess, cli: DockCLI, cid: str) -> None:
    assert d.proc.poll() is None, f"dockyardd exited with {d.proc.returncode}"
    assert "swap" in cli.ok("top", cid)  # the race ran all along


def test_dock_diff_of_a_swapping_container_lists_no_host_file(dock_cli: DockCLI, busybox_daemon: DaemonProcess,
                                                              swap_binary: Path, host_secret: tuple[Path, str]
                                                              ) -> None:
    secret_dir, _ = host_secret
    cid = swapping_container(dock_cli, swap_binary, secret_dir, snapshotter="native")
    succeeded = 0
    for attempt in range(ROUNDS):
        res = dock_cli.dock("diff", cid, timeout=120)
        if res.returncode != 0:
            clear_failure(res.stderr)
            continue
        succeeded += 1
        lines = res.stdout.splitlines()
        assert not [line for line in lines if "secret" in line], f"attempt {attempt}: host files listed"
        assert "A /swap" in lines and "A /x" in lines, lines[:20]
    assert succeeded == ROUNDS, f"only {succeeded} of {ROUNDS} diffs of a changing tree succeeded"
    still_alive(busybox_daemon, dock_cli, cid)
    dock_cli.ok("rm", "-f", cid)


async def test_commit_no_pause_of_a_swapping_container_writes_no_host_file(
        dock_cli: DockCLI, busybox_daemon: DaemonProcess, swap_binary: Path, host_secret: tuple[Path, str]) -> None:
    secret_dir, token = host_secret
    cid = swapping_container(dock_cli, swap_binary, secret_dir, snapshotter="native")
    async with busybox_daemon.client() as client:
        for attempt in range(ROUNDS):
            name = f"docker.io/library/swapped:{attempt}"
            res = dock_cli.dock("commit", "--no-pause", cid, name, timeout=120)
            if res.returncode != 0:
                clear_failure(res.stderr)
                continue
            image = await client.transfer.inspect(name)
            blob = await client.content.read_all(image.layers[-1].descriptor.digest)
            assert blob_leaks(blob, token) == [], f"attempt {attempt}: the committed layer holds host files"
            dock_cli.ok("rmi", name)
    still_alive(busybox_daemon, dock_cli, cid)
    dock_cli.ok("rm", "-f", cid)


async def diff_blob(client: Client, cid: str) -> bytes:
    """Diff.Diff of the container's snapshot against its parent, as an SDK client asks it."""
    c = await resolve(client, cid)
    async with container_layers(client, c) as layers:
        desc = await client.diff.diff(layers.lower, layers.upper, media_type=MEDIA_TYPE_OCI_LAYER_GZIP)
        return await client.content.read_all(desc.digest)


async def test_sdk_diff_of_a_swapping_container_holds_no_host_file(
        dock_cli: DockCLI, busybox_daemon: DaemonProcess, swap_binary: Path, host_secret: tuple[Path, str]) -> None:
    secret_dir, token = host_secret
    cid = swapping_container(dock_cli, swap_binary, secret_dir, snapshotter="native")
    async with busybox_daemon.client() as client:
        for attempt in range(ROUNDS):
            try:
                blob = await diff_blob(client, cid)
            except DockyardError as e:
                clear_failure(str(e))
                continue
            assert blob_leaks(blob, token) == [], f"attempt {attempt}: the Diff.Diff blob holds host files"
    still_alive(busybox_daemon, dock_cli, cid)
    dock_cli.ok("rm", "-f", cid)
