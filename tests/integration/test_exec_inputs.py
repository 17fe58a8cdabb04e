"""Hostile exec processes through containerd's API (Tasks/Exec, Start, Wait, DeleteProcess), one
test per case of tests/exec_fuzz.py, into one running container that must stay running, against
a daemon whose log must stay free of tracebacks. Each call ends with the status the case names
and a message without Python's words; afterwards no exec process is left in the container, the
shim holds no more fds than before, and nothing was written outside the rootfs.

What this round found (each now a case):
- an exec id that is not an identifier (10 KB, `a/b`, `..`, `../../x`, NUL, newline) was taken:
  the daemon now applies containerd's identifier rule (InvalidArgument "exec id ...") for every shim;
- an exec's AppArmor profile or SELinux label was ignored (the init's were refused): refused too;
- stdio paths were opened by the shim and the file handed to the process: /proc/self/mem gave a
  process in the container the shim's memory, /proc/sys or /sys files the host kernel's, a memory
  device the host's RAM; a directory was UNKNOWN "[Errno 21]" at Start (or, as stdin, accepted);
  `file://host/x` wrote /x on this host. Refused now (InvalidArgument), before anything is made;
- RLIMIT_NOFILE 0 was INTERNAL "Too many open files": InvalidArgument naming the rlimit now.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from dockyard_common.errors import DockyardError, NotFound
from tests import exec_fuzz
from tests.compat.runtimes import import_busybox
from tests.daemon import DaemonProcess, traceback_free_daemon

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

CASES = {case.name: case for case in exec_fuzz.EXEC_CASES if case.count == 1}
BURSTS = [case for case in exec_fuzz.EXEC_CASES if case.count > 1]


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with traceback_free_daemon() as d:
        import_busybox(d)
        yield d


@pytest.fixture(scope="module")
def target(daemon: DaemonProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[exec_fuzz.Target]:
    async def start() -> tuple[str, int]:
        async with daemon.client() as c:
            cid = await exec_fuzz.start_target(c, daemon)
            return cid, await exec_fuzz.shim_of(c, cid)

    async def stop(cid: str) -> None:
        async with daemon.client() as c:
            await exec_fuzz.stop_neighbour(c, cid)

    cid, shim = asyncio.run(start())
    try:
        yield exec_fuzz.Target(cid, shim, tmp_path_factory.mktemp("exec-scratch"), tmp_path_factory.mktemp("victim"))
    finally:
        asyncio.run(stop(cid))


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_exec(daemon: DaemonProcess, target: exec_fuzz.Target, name: str) -> None:
    async def run() -> exec_fuzz.Outcome:
        async with daemon.client() as c:
            return await exec_fuzz.run_case(c, target, CASES[name])

    outcome = asyncio.run(run())
    assert not outcome.faults, (outcome.result, outcome.faults)


@pytest.mark.parametrize("case", BURSTS, ids=[c.name for c in BURSTS])
def test_a_burst_of_execs(tmp_path_factory: pytest.TempPathFactory, case: exec_fuzz.ExecCase) -> None:
    """1000 execs at once into one task: all run, none is left, the shim's fds are back, and the
    daemon's log has no traceback (the burst of SIGCHLDs overflowed the shim loop's wakeup pipe,
    and CPython printed one per lost byte until shim/reaper.py turned that warning off)."""
    with traceback_free_daemon() as d:
        import_busybox(d)

        async def run() -> exec_fuzz.Outcome:
            async with d.client() as c:
                cid = await exec_fuzz.start_target(c, d)
                try:
                    t = exec_fuzz.Target(cid, await exec_fuzz.shim_of(c, cid), tmp_path_factory.mktemp("burst"),
                                         tmp_path_factory.mktemp("victim"))
                    return await exec_fuzz.run_case(c, t, case)
                finally:
                    await exec_fuzz.stop_neighbour(c, cid)

        outcome = asyncio.run(run())
        assert not outcome.faults, (outcome.result, outcome.faults)


def test_waiting_on_an_exec_whose_start_failed_returns(daemon: DaemonProcess, target: exec_fuzz.Target) -> None:
    """`ctr tasks exec` waits before it starts. When the Start fails (no such binary), the Wait
    must end, as containerd's shim ends it; it waited for ever. The exec is stopped, deletable."""
    async def run() -> None:
        async with daemon.client() as c:
            process = exec_fuzz.base_process()
            process["args"] = ["/no/such/binary"]
            await c.tasks.exec(target.cid, "never-started", process, "", "", "")
            try:
                waiting = asyncio.ensure_future(c.tasks.wait(target.cid, "never-started"))
                with pytest.raises(DockyardError):
                    await c.tasks.start(target.cid, "never-started")
                status = await asyncio.wait_for(waiting, 30)
                assert status.code == 255
            finally:
                await c.tasks.delete_process(target.cid, "never-started")
            with pytest.raises(NotFound):
                await c.tasks.wait(target.cid, "never-started")

    asyncio.run(run())
