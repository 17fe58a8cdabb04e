"""A cgroups path below another container's cgroup is refused even while that container's init is
still joining (shim/cgroups/base.py: `check_unclaimed` honours the claims of the levels above).

The hole: a create makes its leaf and claims it (`claim_leaf`, an exclusive flock held until its
first process joined); a create whose cgroupsPath lay *below* that leaf saw a level without
processes and went through, nesting in the other container's cgroup (whose failure or delete
then killed it). Here the claim is held as a racing create holds it, by the shim's own cgroup
manager, on the host's real cgroupfs (v1 or v2), and a create below it must be refused, by the
shim's manager and through the daemon, leaving the claimed leaf as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
from collections.abc import Iterator

import pytest

from dock import runner
from dockyard_common.errors import DockyardError, FailedPrecondition
from shim.cgroups import CgroupManager, new_manager
from tests import spec_fuzz
from tests.compat.runtimes import import_busybox
from tests.daemon import DaemonProcess, traceback_free_daemon

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")]


@contextlib.contextmanager
def claimed_leaf() -> Iterator[tuple[str, CgroupManager]]:
    """A scratch level of ours with one leaf made and claimed by the shim's manager, as a create
    whose init has not joined yet holds it: (the scratch level, relative to our parent; the
    manager). Deleted after, with the scratch level (the manager prunes it)."""
    scratch = f"dy-claims-{secrets.token_hex(3)}"
    holder = new_manager()
    holder.create(f"/{scratch}/a")
    try:
        yield scratch, holder
    finally:
        holder.delete(force=True)
        for rel in (f"{scratch}/a", scratch):  # what a failed assertion may have left
            for p in spec_fuzz.cgroup_dirs(rel)[::-1]:
                with contextlib.suppress(OSError):
                    p.rmdir()
        assert not spec_fuzz.cgroup_dirs(scratch)


def test_a_create_below_a_leaf_still_claimed_is_refused() -> None:
    with claimed_leaf() as (scratch, _):
        with pytest.raises(FailedPrecondition, match=f"in use: another container is being created in /{scratch}/a"):
            new_manager().create(f"/{scratch}/a/b")
        # Deeper still, and through a level that does not exist yet.
        with pytest.raises(FailedPrecondition, match="being created in"):
            new_manager().create(f"/{scratch}/a/x/y")
        assert spec_fuzz.cgroup_dirs(f"{scratch}/a") and not spec_fuzz.cgroup_dirs(f"{scratch}/a/b")
        assert not spec_fuzz.cgroup_dirs(f"{scratch}/a/x")
        # A sibling is no container's: made and removed as ever, while the claim is held.
        sibling = new_manager()
        sibling.create(f"/{scratch}/c")
        sibling.delete()
        assert spec_fuzz.cgroup_dirs(f"{scratch}/a")  # its prune kept the claimed level's parent


def test_the_claimed_leaf_is_refused_alike_once_its_process_joined() -> None:
    """The claim goes when the first process joins; from then on its processes refuse (no gap)."""
    with claimed_leaf() as (scratch, holder):
        child = os.fork()
        if child == 0:  # a process that waits to be killed, as an init that joined
            os.closerange(3, 65536)  # as the shim's stage 1 does first: no copy of the claim's fd
            signal.pause()
            os._exit(0)
        try:
            holder.add_process(child)
            with pytest.raises(FailedPrecondition, match=f"/{scratch}/a holds processes"):
                new_manager().create(f"/{scratch}/a/b")
        finally:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with traceback_free_daemon() as d:
        import_busybox(d)
        yield d


def test_a_container_below_a_cgroup_being_created_is_refused(daemon: DaemonProcess) -> None:
    """Through containerd's API: Tasks/Create of a container whose cgroupsPath lies below a leaf
    another create holds is FailedPrecondition "in use", and nothing of it is left."""
    cid = f"below-claim-{secrets.token_hex(3)}"

    async def create(rel: str) -> BaseException | None:
        async with daemon.client() as c:
            spec = spec_fuzz.base_spec(cid, "sleep", "3600")
            spec["linux"]["cgroupsPath"] = f"/{rel}"
            mounts = await spec_fuzz.make_container(c, cid, json.dumps(spec).encode())
            try:
                await c.tasks.create(cid, mounts)
                return None
            except DockyardError as exc:
                return exc
            finally:
                with contextlib.suppress(DockyardError):
                    await c.tasks.kill(cid, 9)
                    await asyncio.wait_for(c.tasks.wait(cid), 20)
                with contextlib.suppress(DockyardError):
                    await runner.remove_container(c, cid)

    with claimed_leaf() as (scratch, _):
        got = asyncio.run(create(f"{scratch}/a/c"))
        assert isinstance(got, FailedPrecondition) and "in use" in got.message, got
        assert "Error" not in got.message
        assert spec_fuzz.cgroup_dirs(f"{scratch}/a") and not spec_fuzz.cgroup_dirs(f"{scratch}/a/c")
    assert not list((daemon.state / "tasks").glob(f"*/{cid}"))
