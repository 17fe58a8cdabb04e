"""Hostile OCI runtime specs through containerd's API (Containers/Create, Tasks/Create and Start),
one test per case of tests/spec_fuzz.py, beside a neighbour container that must keep running and
against a daemon whose log must stay free of tracebacks. Each call ends with the status the case
names and a message without Python's words; afterwards no shim, mount, cgroup or bundle of the
container is left, and nothing was written outside its rootfs.

What this round found (each now a case):
- a cgroupsPath naming another container's cgroup, a level above one, or the namespace's level
  (`/default`) was joined: the new container's failure or delete then SIGKILLed and removed the
  other containers (FailedPrecondition "in use" now, before anything is made);
- sysctls the kernel does not scope to a namespace (`vm.swappiness`, `kernel.panic`), or `net.*`
  without a network namespace of the container's own, were written through /proc/sys: the host's
  values changed;
- a mount namespace given by path was joined, and the rootfs built (mounts, pivot_root) there;
- uid or gid 4294967295, (uid_t)-1 to setresuid, ran the process as root;
- a namespace path that was a FIFO hung Create for a minute; other non-namespace files, wrong
  types and missing paths were INTERNAL with setns's Python arguments;
- NUL bytes (args, env, cwd, mount destinations, root.path), an unknown filesystem type, mount
  options the kernel refuses, E2BIG at exec, a sysctl naming a directory, too many groups, a
  pids limit too low to fork, an init OOM-killed by a tiny memory limit: INTERNAL or UNKNOWN
  with "[Errno 36]"; overlapping id mappings only failed when uid_map was written;
- devices outside /dev, root.path climbing out of the bundle or "/", unknown seccomp
  architectures, OCI hooks, AppArmor profiles and SELinux labels (none of which this shim
  applies) were accepted and silently ignored or acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Iterator

import pytest

from dock import runner
from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument
from supervisor.runtime.bundle import confine_cgroup
from tests import spec_fuzz
from tests.compat.runtimes import import_busybox
from tests.daemon import DaemonProcess, traceback_free_daemon

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

CASES = {case.name: case for case in spec_fuzz.CASES}


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with traceback_free_daemon() as d:
        d.base.chmod(0o711)  # a remapped root reaches its bundle: the user namespace cases get to the kernel
        import_busybox(d)
        yield d


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with spec_fuzz.scratch_cgroup() as name:
        yield name


@pytest.fixture(scope="module")
def neighbour(daemon: DaemonProcess) -> Iterator[str]:
    async def start() -> str:
        async with daemon.client() as c:
            return await spec_fuzz.start_neighbour(c)

    async def stop(cid: str) -> None:
        async with daemon.client() as c:
            await spec_fuzz.stop_neighbour(c, cid)

    cid = asyncio.run(start())
    try:
        yield cid
    finally:
        asyncio.run(stop(cid))


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_spec(daemon: DaemonProcess, neighbour: str, scratch: str, name: str) -> None:
    async def run() -> spec_fuzz.Outcome:
        async with daemon.client() as c:
            return await spec_fuzz.run_case(c, daemon, CASES[name], neighbour, scratch)

    try:
        outcome = asyncio.run(run())
    finally:
        spec_fuzz.cleanup_fifos()
    assert not outcome.faults, (outcome.result, outcome.faults)


def test_a_foreign_shim_gets_a_cgroups_path_confined_to_our_parent() -> None:
    """containerd's runc shim resolves the path itself: `..` must never reach it."""
    def confined(path: str) -> str:
        spec: dict[str, object] = {"linux": {"cgroupsPath": path}}
        confine_cgroup(spec, "default", "c1")
        return spec["linux"]["cgroupsPath"]  # type: ignore[index, no-any-return]

    assert confined("/default/c1") == "/dockyard/default/c1"
    assert confined("/dockyard/default/c1") == "/dockyard/default/c1"
    assert confined("") == "/dockyard/default/c1"
    for hostile in ("/dockyard/../process_api", "../process_api", "/a/../../process_api", "slice:p:n", "/a\0b"):
        with pytest.raises(InvalidArgument):
            confined(hostile)


@pytest.mark.parametrize("round_", range(3))
def test_two_creates_racing_for_one_new_cgroups_path(daemon: DaemonProcess, neighbour: str, round_: int) -> None:
    """Two containers whose specs name one new cgroupsPath, created at once: each passes the
    emptiness check before the other's init joins; the leaf's lock (`claim_leaf`) lets exactly
    one through, the other is FailedPrecondition, and nothing of either is left."""
    rel = f"dy-race-{os.urandom(3).hex()}/c"
    cids = [f"race-{os.urandom(3).hex()}" for _ in range(2)]

    async def run() -> list[BaseException | None]:
        async with daemon.client() as c:
            mounts = []
            for cid in cids:
                spec = spec_fuzz.base_spec(cid, "sleep", "3600")
                spec["linux"]["cgroupsPath"] = f"/{rel}"
                mounts.append(await spec_fuzz.make_container(c, cid, json.dumps(spec).encode()))
            try:
                got = await asyncio.gather(*(c.tasks.create(cid, m) for cid, m in zip(cids, mounts, strict=True)),
                                           return_exceptions=True)
                return [g if isinstance(g, BaseException) else None for g in got]
            finally:
                for cid in cids:
                    with contextlib.suppress(DockyardError):
                        await runner.remove_container(c, cid)

    outcomes = asyncio.run(run())
    failed = [o for o in outcomes if o is not None]
    assert len(failed) == 1, outcomes
    assert isinstance(failed[0], FailedPrecondition) and "in use" in failed[0].message, failed[0]
    assert not spec_fuzz.cgroup_dirs(rel) and not spec_fuzz.cgroup_dirs(rel.split("/")[0])
    assert not [p for p in (daemon.state / "tasks").glob("[!.]*/*") if p.name != neighbour]
