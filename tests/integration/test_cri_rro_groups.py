"""Recursive read-only mounts and SupplementalGroupsPolicy through the daemon and the shim, driven
by the real crictl: a read-only CRI mount of a host directory holding a tmpfs sub-mount leaves
the tmpfs writable, a recursive one (OCI option "rro", made with mount_setattr(2)) makes it
read-only too; Merge adds the image's /etc/group groups of the user to the supplemental groups,
Strict does not; ContainerStatus reports the identity; Status reports both features.

One daemon for the module (tests/integration/test_cri_containers.py's cri_rig) with busybox.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard_common import linux as L
from tests.ctr import ok
from tests.images import Image, build_image, tar_tree
from tests.integration.test_cri_containers import BUSYBOX, CriRig, container, cri_rig, pod
from tests.waiting import wait_until

pytestmark = pytest.mark.root

GROUPED = "example.org/cri/grouped:1"  # USER 1000, listed in /etc/group's group 50000


def _images(root: Path) -> list[Image]:
    plain = build_image(BUSYBOX, [tar_tree(root)])
    with (root / "etc" / "group").open("a") as f:
        f.write("group-defined-in-image:x:50000:user\n")  # `user` is uid 1000 (gid 1000)
    return [plain, build_image(GROUPED, [tar_tree(root)], config={"User": "1000"})]


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    with cri_rig(CriRig, "dy-crirro-", _images) as r:
        yield r


@pytest.fixture
def clean(rig: CriRig) -> Iterator[CriRig]:
    yield rig
    rig.remove_pods()
    assert rig.leftovers()["containers"] == []


@contextlib.contextmanager
def dir_with_submount(base: Path) -> Iterator[Path]:
    """`base`/vol, a host directory with a tmpfs mounted on its `tmpfs` subdirectory (unmounted
    at the end)."""
    vol = base / f"vol-{secrets.token_hex(3)}"
    (vol / "tmpfs").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "dy-rro-test", str(vol / "tmpfs")], check=True)
    try:
        yield vol
    finally:
        subprocess.run(["umount", "-l", str(vol / "tmpfs")], check=True)


def mounting(vol: Path, **more: Any) -> dict[str, Any]:
    return container("m", command=["sleep", "3600"],
                     mounts=[{"container_path": "/mnt", "host_path": str(vol), "readonly": True, **more}])


def writes(rig: CriRig, cid: str, path: str) -> str:
    """What `touch path` says in the container ("" when it worked)."""
    res = rig.crictl("exec", "-s", cid, "sh", "-c", f"touch {path} 2>&1 || true")
    return ok(res).strip()


def test_status_reports_the_features(clean: CriRig) -> None:
    info = clean.json("info")  # crictl prints these two with the proto's own field names
    handlers = {h.get("name", ""): h.get("features", {}) for h in info["runtimeHandlers"]}  # "" is left out
    assert set(handlers) >= {"", "runc"}, info["runtimeHandlers"]
    assert handlers[""].get("recursive_read_only_mounts", False) is L.has_mount_setattr(), handlers
    assert info["features"]["supplemental_groups_policy"] is True, info["features"]


@pytest.mark.skipif(not L.has_mount_setattr(), reason="mount_setattr(2) needs Linux 5.12")
@pytest.mark.parametrize("recursive", [False, True])
def test_read_only_mount_of_a_tree(clean: CriRig, recursive: bool) -> None:
    rig = clean
    with dir_with_submount(rig.tmp) as vol:
        pcfg = pod("rro", rig.tmp)
        p = rig.runp(pcfg)
        cid = rig.run(p, pcfg, mounting(vol, recursive_read_only=recursive))
        found = rig.json("inspect", cid)
        mount = next(m for m in found["info"]["runtimeSpec"]["mounts"] if m["destination"] == "/mnt")
        assert ("rro" in mount["options"]) is recursive and "ro" in mount["options"]
        assert found["status"]["mounts"][0].get("recursiveReadOnly", False) is recursive
        assert "Read-only file system" in writes(rig, cid, "/mnt/top")  # the bind itself: read-only either way
        said = writes(rig, cid, "/mnt/tmpfs/sub")
        if recursive:
            assert "Read-only file system" in said and not (vol / "tmpfs" / "sub").exists()
        else:
            assert said == "" and (vol / "tmpfs" / "sub").exists()  # written through to the host's tmpfs
        # the host's own mounts are untouched: its tmpfs stays writable
        (vol / "tmpfs" / "from-host").write_text("x")
        rig.ok("rm", "-f", cid)


def test_a_bad_recursive_read_only_mount_is_refused_and_leaves_nothing(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("rro-bad", rig.tmp)
    p = rig.runp(pcfg)
    host = rig.tmp / "never-made"
    for more, words in (({"readonly": False}, "needs readonly to be true"),
                        ({"propagation": 1}, "needs propagation PROPAGATION_PRIVATE")):
        cfg = container("bad", command=["sleep", "1"], mounts=[
            {"container_path": "/mnt", "host_path": str(host), "readonly": True, "recursive_read_only": True,
             **more}])
        said = rig.fails("create", p, rig.config_file(cfg), rig.config_file(pcfg))
        assert f"mounts[0]: recursive_read_only {words}" in said and "Traceback" not in said, said
    assert rig.ps() == [] and not host.exists()


@pytest.mark.parametrize(("policy", "groups"), [(None, "1000 1234 50000"), ("Strict", "1000 1234")])
def test_supplemental_groups_policy(clean: CriRig, policy: str | None, groups: str) -> None:
    rig = clean
    pcfg = pod("groups", rig.tmp)
    p = rig.runp(pcfg)
    security: dict[str, Any] = {"supplemental_groups": [1234]}
    if policy is not None:
        security["supplemental_groups_policy"] = 1  # Strict
    cid = rig.run(p, pcfg, container("g", GROUPED, command=["sh", "-c", "id -G; sleep 3600"],
                                     linux={"security_context": security}))
    user = rig.status(cid)["user"]["linux"]  # (protobuf's JSON gives int64s as strings)
    assert (int(user["uid"]), int(user["gid"])) == (1000, 1000), user
    assert sorted(int(g) for g in user["supplementalGroups"]) == [int(g) for g in groups.split()]
    wait_until(lambda: rig.ok("logs", cid).strip() != "", what="the first process' `id -G`")
    assert rig.ok("logs", cid).split() == groups.split()
    assert rig.ok("exec", "-s", cid, "id", "-G").split() == groups.split()  # an exec'd process alike
    assert rig.ok("exec", "-s", cid, "id", "-u").strip() == "1000"
