"""Isolation through the daemon with the SDK: containers made from the busybox image by
`dock.runner` or by hand (Containers/Create + Tasks/Create, for specs `dock run` would not write),
run by our shim under a real dockyardd, checked from inside and from the host.

Covered here: own hostname, no host descriptor in the init or an exec, a pids limit that stops a
fork bomb, a memory limit whose OOM kill is published on the events stream, and bad input (a spec
that is not JSON, an unknown namespace type, a mount through a symlink escaping the rootfs, a
missing binary, a snapshot that is gone) failing with a clear error and leaving no mount, cgroup,
shim or bundle behind. (test_ctr_isolation covers the rest of the list with the real `ctr`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from dock import runner
from dock.client import Client
from dock.containers import RUNC_V2, SPEC_TYPE_URL
from dock.oci import ImageConfig, SpecOptions, build_spec
from dock.runner import RunRequest
from dockyard_common import mounts as hostmounts
from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.types import AnyValue, Container, Mount
from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE
from tests.conformance.mounts import mounts_under
from tests.ctr import exec_output
from tests.daemon import DaemonProcess, shims_in_bundles
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

CGROUPS = Path("/sys/fs/cgroup")


@pytest.fixture
async def c(d: DaemonProcess) -> AsyncIterator[Client]:
    async with d.client() as client:
        yield client


def new_id(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def cgroups_of(cid: str) -> list[Path]:
    return list(CGROUPS.glob(f"*/dockyard/default/{cid}"))


async def run_captured(c: Client, cid: str, opts: SpecOptions) -> tuple[int, str]:
    """`dock run --rm` in-process: exit code and stdout+stderr."""
    with tempfile.TemporaryFile() as out, open(os.devnull) as devnull:
        code = await runner.run(c, RunRequest("busybox", cid, opts, rm=True), in_fd=devnull.fileno(),
                                out_fd=out.fileno(), err_fd=out.fileno())
        out.seek(0)
        return code, out.read().decode()


def busybox_spec(cid: str, *args: str) -> dict[str, Any]:
    config = ImageConfig.from_json({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]})
    return build_spec("default", cid, config, SpecOptions(args=list(args)), None)


async def make_container(c: Client, cid: str, spec: dict[str, Any] | bytes) -> list[Mount]:
    """A container with the raw `spec` and a fresh snapshot of the image; its rootfs mounts."""
    image = await runner.resolve_image(c, IMAGE)
    value = spec if isinstance(spec, bytes) else json.dumps(spec).encode()
    # Under a lease, as ctr does it: until the container record holds the snapshot, a collection
    # (e.g. the daemon's start-up one) may take it.
    async with c.leased():
        mounts = await c.snapshots.using("overlayfs").prepare(cid, image.chain_id)
        await c.containers.create(Container(
            id=cid, runtime_name=RUNC_V2, spec=AnyValue(SPEC_TYPE_URL, value), snapshotter="overlayfs",
            snapshot_key=cid, image=image.name, runtime_options=AnyValue(runner.RUNC_OPTIONS_TYPE_URL, b"")))
    return mounts


async def detach(c: Client, cid: str, opts: SpecOptions) -> None:
    """`dock run -d`."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        assert await runner.run(c, RunRequest("busybox", cid, opts, detach=True), out_fd=devnull) == 0
    finally:
        os.close(devnull)


def in_cgroup_of(pid: int, cid: str) -> bool:
    """Whether `pid` still is a process of the container (a recycled pid is someone else's)."""
    try:
        return f"/dockyard/default/{cid}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


# -- inside the container -----------------------------------------------------------------------------


async def test_own_hostname_and_pid_one(c: Client) -> None:
    before = os.uname().nodename
    code, out = await run_captured(c, new_id("host"), SpecOptions(args=["sh", "-c", "hostname; echo $$"],
                                                                   hostname="box-one"))
    assert (code, out.split()) == (0, ["box-one", "1"])
    assert os.uname().nodename == before


async def test_no_host_descriptor_reaches_init_or_exec(busybox_daemon: DaemonProcess, c: Client) -> None:
    code, out = await run_captured(c, new_id("fds"), SpecOptions(args=["ls", "/proc/self/fd"]))
    assert (code, out.split()) == (0, ["0", "1", "2", "3"])  # 3: the directory ls reads
    cid = new_id("fdbg")
    await detach(c, cid, SpecOptions(args=["sleep", "300"]))
    for path, fds in (("/proc/1/fd", ["0", "1", "2"]), ("/proc/self/fd", ["0", "1", "2", "3"])):  # init, exec
        res = exec_output(partial(ctr, busybox_daemon), cid, "ls", path)
        assert (res.returncode, res.stdout.split()) == (0, fds), res.stderr


# -- cgroup limits ------------------------------------------------------------------------------------


async def test_pids_limit_stops_a_fork_bomb(c: Client) -> None:
    cid = new_id("bomb")
    # Every shell starts a sleep and forks a copy of itself, twice over: without a limit this grows
    # until the host gives out. A shell that cannot fork exits; its sleeps live on, and the init
    # (sleep, which reaps no one) keeps the exited shells as zombies: the bomb stays at the limit.
    bomb = SpecOptions(args=["sh", "-c", "(f() { sleep 600 & f & f; }; f) & exec sleep 300"], pids_limit=24)
    await detach(c, cid, bomb)
    pids = CGROUPS / "pids" / "dockyard" / "default" / cid

    def refused() -> int:
        return int((pids / "pids.events").read_text().split()[1])

    await wait_until_async(lambda: refused() > 0, what="the pids limit to refuse a fork")
    for _ in range(10):  # a window: the limit holds while the bomb keeps trying
        assert int((pids / "pids.current").read_text()) <= 24
        assert len((pids / "cgroup.procs").read_text().split()) <= 24
        await asyncio.sleep(0.1)
    members = [int(p) for p in (pids / "cgroup.procs").read_text().split()]
    await c.tasks.kill(cid, signal.SIGKILL, all=True)
    assert (await asyncio.wait_for(c.tasks.wait(cid), 20)).code == 137
    await runner.remove_container(c, cid)
    assert not cgroups_of(cid)
    assert len(members) > 1 and not [p for p in members if in_cgroup_of(p, cid)]


async def test_memory_limit_oom_kill_is_published(c: Client) -> None:
    cid = new_id("oom")
    seen: list[str] = []

    async with c.events.subscribed('topic~="/tasks/"') as events:  # live: the OOM event cannot be missed
        async def watch() -> None:
            async for env in events:
                if env.event.get("container_id") == cid:
                    seen.append(env.topic)
                    if env.topic == "/tasks/exit":
                        return

        watcher = asyncio.create_task(watch())
        # tail of /dev/zero keeps all it reads (no newline ever comes): only the OOM killer stops it.
        code, out = await run_captured(c, cid, SpecOptions(args=["sh", "-c", "tail /dev/zero; echo tail-$?"],
                                                           memory=32 << 20))
        await asyncio.wait_for(watcher, 10)
    # The shell may also say "Killed" on stderr; the two streams reach `out` in either order.
    assert code == 0 and "tail-137" in out.splitlines(), out
    assert "/tasks/oom" in seen and seen.index("/tasks/oom") < seen.index("/tasks/exit"), seen


# -- bad input ---------------------------------------------------------------------------------------


async def _escaping_symlink(c: Client, cid: str, mounts: list[Mount]) -> list[Mount]:
    """Put /escape -> ../../…/tmp into the container's snapshot (as an image layer could)."""
    def link() -> None:
        with tempfile.TemporaryDirectory(prefix="dy-iso-") as tmp, hostmounts.mounted(mounts, Path(tmp)) as root:
            (root / "escape").symlink_to("../" * 16 + "tmp")
    await asyncio.to_thread(link)
    return mounts


async def _gone_snapshot(c: Client, cid: str, mounts: list[Mount]) -> list[Mount]:
    """The mounts of a snapshot removed since: its directories no longer exist."""
    await c.snapshots.using("overlayfs").remove(cid)
    return mounts


VICTIM = f"dy-escape-{secrets.token_hex(4)}"


def _spec_with(cid: str, change: Callable[[dict[str, Any]], object], *args: str) -> dict[str, Any]:
    spec = busybox_spec(cid, *(args or ("true",)))
    change(spec)
    return spec


@dataclass
class Bad:
    spec: Callable[[str], dict[str, Any] | bytes]  # from the container id
    error: type[DockyardError]
    message: str
    tamper: Callable[[Client, str, list[Mount]], Awaitable[list[Mount]]] | None = None  # before Tasks/Create


BAD_INPUT = {
    "not-json": Bad(lambda cid: b"{not json", InvalidArgument, "container spec is not valid JSON"),
    "not-an-object": Bad(lambda cid: b"[1, 2]", InvalidArgument, "must be a JSON object"),
    "unknown-namespace": Bad(
        lambda cid: _spec_with(cid, lambda s: s["linux"]["namespaces"].append({"type": "bogus"})),
        InvalidArgument, "unknown namespace type 'bogus'"),
    "missing-binary": Bad(lambda cid: busybox_spec(cid, "/no/such/binary"), NotFound,
                          'exec: "/no/such/binary": no such file or directory'),
    "escaping-mount": Bad(
        lambda cid: _spec_with(cid, lambda s: s["mounts"].append(
            {"destination": f"/escape/{VICTIM}", "type": "tmpfs", "source": "tmpfs"})),
        InvalidArgument, "escapes the container root", _escaping_symlink),
    "gone-snapshot": Bad(lambda cid: busybox_spec(cid, "true"), NotFound, "rootfs mount overlay: /",
                         _gone_snapshot),
}


def _userns(spec: dict[str, Any]) -> None:
    spec["linux"]["namespaces"].append({"type": "user"})
    for key in ("uidMappings", "gidMappings"):
        spec["linux"][key] = [{"containerID": 0, "hostID": 100000, "size": 65536}]


async def test_a_remapped_root_that_cannot_reach_its_bundle_is_refused_early(busybox_daemon: DaemonProcess,
                                                                            c: Client) -> None:
    """The test daemon lives in a private mkdtemp dir (0700): host uid 100000 cannot search it."""
    assert busybox_daemon.base.stat().st_mode & 0o777 == 0o700
    cid = new_id("userns")
    shims = shims_in_bundles(busybox_daemon)
    mounts = await make_container(c, cid, _spec_with(cid, _userns, "id", "-u"))
    try:
        with pytest.raises(FailedPrecondition) as info:
            await c.tasks.create(cid, mounts)
        assert info.value.message == (
            f"the container's root (host uid 100000, user namespace) cannot reach its bundle: {busybox_daemon.base} is "
            "mode 0700; the directories above the state dir must be searchable (0711)")
        assert shims_in_bundles(busybox_daemon) == shims and mounts_under(str(busybox_daemon.base)) == []
        assert list((busybox_daemon.state / "tasks").glob("[!.]*/*")) == []  # .dockyard-shim: the zygote
    finally:
        await runner.remove_container(c, cid)


@pytest.mark.parametrize("case", list(BAD_INPUT))
async def test_bad_input_fails_clearly_and_leaves_nothing(busybox_daemon: DaemonProcess, c: Client, case: str) -> None:
    bad = BAD_INPUT[case]
    cid = new_id(case)
    shims = shims_in_bundles(busybox_daemon)
    mounts = await make_container(c, cid, bad.spec(cid))
    try:
        if bad.tamper is not None:
            mounts = await bad.tamper(c, cid, mounts)
        with pytest.raises(bad.error) as info:
            await c.tasks.create(cid, mounts)
        assert bad.message in info.value.message
        with pytest.raises(NotFound):
            await c.tasks.get(cid)
        await wait_until_async(lambda: not shims_in_bundles(busybox_daemon) - shims, 10, "the shim to exit")
        assert mounts_under(str(busybox_daemon.base)) == []
        assert not cgroups_of(cid)
        assert list((busybox_daemon.state / "tasks").glob("[!.]*/*")) == []  # no bundle, not even a hidden one
        assert not Path("/tmp", VICTIM).exists()
    finally:
        with contextlib.suppress(DockyardError):
            await runner.remove_container(c, cid)
