"""A namespace's cgroup directory goes with its last container, v1 and v2, and races cost nothing.

The drivers remove the empty levels above a deleted container's cgroup, up to (not including)
`dockyard`; a create racing that removal starts its walk again. The daemon does the same for
tasks of a foreign shim (containerd's runc shim), which removes only the container's own cgroup.
Every cgroup made here lives under `dockyard/dytest-<random>/` (or a namespace with a random
name); the host's cgroups are compared before and after (module fixture of test_cgroups_real).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common.cgroups import PARENT, host_version, prune_parents, v1_mounts
from dockyard_common.errors import DockyardError
from shim.cgroups import Resources, V1Manager, V2Manager
from supervisor.runtime.cgroups import CgroupPruner, cgroup_rel
from tests.cgroupfs import unmount_private
from tests.compat.conftest import ctr
from tests.compat.runtimes import daemon_with_runtime, import_busybox, remove_everything
from tests.integration.test_cgroups_real import _cleanup_tree, host_cgroups_untouched  # noqa: F401

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="cgroups need root")]

v1_only = pytest.mark.skipif(host_version() != 1 or "memory" not in v1_mounts(), reason="host is not cgroup v1")

Manager = V1Manager | V2Manager


class Tree:
    """Managers of one driver, on the host's v1 hierarchies or a private cgroup2 mount."""

    def __init__(self, version: int, root: str) -> None:
        self.version, self.root = version, root
        self.prefix = f"dytest-{uuid.uuid4().hex[:8]}"

    def manager(self) -> Manager:
        return V1Manager(v1_mounts()) if self.version == 1 else V2Manager(self.root)

    def tops(self) -> list[str]:
        if self.version == 2:
            return [os.path.join(self.root, PARENT)]
        return sorted({os.path.join(m, PARENT) for m in V1Manager(v1_mounts())._mounts.values()})

    def make(self, name: str, resources: Resources | None = None) -> Manager:
        mgr = self.manager()
        mgr.create(f"/{self.prefix}/{name}", resources)
        return mgr

    def exists(self, rel: str = "") -> list[bool]:
        return [os.path.isdir(os.path.join(top, self.prefix, rel)) for top in self.tops()]


@pytest.fixture(params=["v1", "v2"])
def tree(request: pytest.FixtureRequest) -> Iterator[Tree]:
    if request.param == "v1":
        if host_version() != 1 or "memory" not in v1_mounts():
            pytest.skip("host is not cgroup v1")
        t = Tree(1, "/sys/fs/cgroup")
        made_top = {top: not os.path.isdir(top) for top in t.tops()}
        try:
            yield t
        finally:
            for top in t.tops():
                _cleanup_tree(top, t.prefix, made_top[top])
        return
    root = tempfile.mkdtemp(prefix="dytest-cg2-")
    if subprocess.run(["mount", "-t", "cgroup2", "none", root], capture_output=True).returncode != 0:
        os.rmdir(root)
        pytest.skip("cannot mount cgroup2 here")
    t = Tree(2, root)
    made_v2_top = not os.path.isdir(os.path.join(root, PARENT))
    try:
        yield t
    finally:
        try:
            _cleanup_tree(os.path.join(root, PARENT), t.prefix, made_v2_top)
        finally:
            unmount_private(root)


def test_the_namespace_goes_with_its_last_container(tree: Tree) -> None:
    a, b = tree.make("a"), tree.make("b")
    assert all(tree.exists("a")) and all(tree.exists("b"))
    a.delete()
    assert all(tree.exists()) and not any(tree.exists("a")), "b still lives in the namespace"
    b.delete()
    assert not any(tree.exists()), "the empty namespace directory stayed"
    assert all(os.path.isdir(top) for top in tree.tops()), "our parent itself stays"


def test_deeper_levels_go_too_and_stop_at_a_busy_one(tree: Tree) -> None:
    deep, keep = tree.make("x/y/z"), tree.make("x/other")
    deep.delete()
    assert not any(tree.exists("x/y")) and all(tree.exists("x/other"))
    keep.delete()
    assert not any(tree.exists())


def test_a_level_with_a_process_is_kept(tree: Tree) -> None:
    outer, inner = tree.make("outer"), tree.manager()
    outer._release()  # as once the init has joined: a claimed leaf takes no cgroup below it
    inner.create(f"/{tree.prefix}/outer/inner")
    proc = subprocess.Popen(["sleep", "60"])
    try:
        outer.add_process(proc.pid)
        inner.delete()
        assert all(tree.exists("outer")), "a cgroup holding a process was removed"
    finally:
        proc.kill()
        proc.wait()
    outer.delete(force=True)
    assert not any(tree.exists())


def test_a_failed_create_leaves_no_empty_namespace(tree: Tree) -> None:
    a = tree.make("a")
    with pytest.raises(DockyardError):
        tree.make("b", Resources(cpus="4095") if tree.version == 1 else Resources(unified={"nosuch.file": "1"}))
    assert not any(tree.exists("b"))
    a.delete()
    assert not any(tree.exists())


def test_creates_racing_the_last_delete_of_a_namespace_all_succeed(tree: Tree) -> None:
    """Creators and deleters in one namespace at once: the namespace directory comes and goes
    under them; every create must succeed (its walk starts again) and nothing may stay."""
    rounds, workers = 40, 4
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def churn(worker: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                mgr = tree.make(f"c{worker}-{i}")
                assert mgr.exists()
                mgr.delete()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(tree.exists())


def test_prune_never_leaves_its_top(tmp_path: Path) -> None:
    """Plain directories stand in for a hierarchy: the walk stops below `top`, always."""
    top = tmp_path / "h" / PARENT
    (top / "ns" / "c").mkdir(parents=True)
    (tmp_path / "h" / "sibling").mkdir()
    (top / "ns" / "c").rmdir()
    prune_parents(str(top / "ns" / "c"), str(top))
    assert not (top / "ns").exists() and top.is_dir() and (tmp_path / "h" / "sibling").is_dir()
    prune_parents(str(tmp_path / "h" / "elsewhere" / "c"), str(top))  # not below top: nothing
    assert (tmp_path / "h").is_dir()


def test_the_daemon_pruner_keeps_what_a_create_holds(tmp_path: Path) -> None:
    root = tempfile.mkdtemp(prefix="dytest-cg2-")
    if subprocess.run(["mount", "-t", "cgroup2", "none", root], capture_output=True).returncode != 0:
        os.rmdir(root)
        pytest.skip("cannot mount cgroup2 here")
    prefix = f"dytest-{uuid.uuid4().hex[:8]}"
    top = os.path.join(root, PARENT)
    made_top = not os.path.isdir(top)
    try:
        pruner = CgroupPruner(root)
        os.makedirs(os.path.join(top, prefix, "gone"))
        os.rmdir(os.path.join(top, prefix, "gone"))  # what runc's delete leaves: the empty level
        held = pruner.hold(f"{prefix}/being-created")
        pruner.prune(f"{prefix}/gone")
        assert os.path.isdir(os.path.join(top, prefix)), "a level a create holds was removed"
        pruner.release(held)
        pruner.prune(f"{prefix}/gone")
        assert not os.path.exists(os.path.join(top, prefix)) and os.path.isdir(top)
    finally:
        _cleanup_tree(top, prefix, made_top)
        unmount_private(root)


def test_cgroup_rel_reads_only_paths_under_our_parent() -> None:
    spec = {"linux": {"cgroupsPath": "/dockyard/ns1/c1"}}
    assert cgroup_rel(spec, "ns1", "c1", foreign=True) == "ns1/c1"
    assert cgroup_rel({"linux": {"cgroupsPath": "/elsewhere/c1"}}, "n", "c", foreign=True) is None
    assert cgroup_rel({"linux": {"cgroupsPath": "/dockyard/../x"}}, "n", "c", foreign=True) is None
    assert cgroup_rel({}, "n", "c", foreign=False) == "n/c"
    assert cgroup_rel("junk", "n", "c", foreign=False) == "n/c"


# --- through the daemon: our shim, and containerd's runc shim ------------------------------------


def _namespace_dirs(ns: str) -> list[str]:
    found = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{PARENT}/{ns}")]
    if os.path.isdir(f"/sys/fs/cgroup/{PARENT}/{ns}"):
        found.append(f"/sys/fs/cgroup/{PARENT}/{ns}")
    return found


@pytest.mark.compat
@pytest.mark.parametrize("runtime", ["dockyard", "runc-go"])
def test_the_daemon_leaves_no_namespace_directory(runtime: str) -> None:
    if runtime == "runc-go" and shutil.which("containerd-shim-runc-v2") is None:
        pytest.fail("containerd-shim-runc-v2 is not installed")
    ns = f"prune{uuid.uuid4().hex[:6]}"
    with daemon_with_runtime(runtime) as d:
        try:
            import_busybox(d, ns)
            for cid in ("one", "two"):
                res = ctr(d, "run", "-d", "docker.io/library/busybox:latest", cid, "sleep", "60", namespace=ns)
                assert res.returncode == 0, res.stderr
            assert _namespace_dirs(ns), "the containers' namespace has no cgroup directory"
            for cid in ("one", "two"):
                assert ctr(d, "tasks", "kill", "-s", "SIGKILL", cid, namespace=ns).returncode == 0
            for cid in ("one", "two"):
                for _ in range(100):
                    if ctr(d, "tasks", "rm", cid, namespace=ns).returncode == 0:
                        break
                    subprocess.run(["sleep", "0.1"])
                if cid == "one":
                    assert _namespace_dirs(ns), "removed while container two still lives there"
            assert _namespace_dirs(ns) == [], "the namespace's cgroup directory stayed behind"
        finally:
            with contextlib.suppress(Exception):
                remove_everything(d, ns)
