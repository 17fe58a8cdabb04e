"""CRI mount propagation through the shim: a bidirectional (rshared) mount of a host path that is
a shared mount propagates both ways, as under runc; host-to-container (rslave) one way; and the
container's own rootfs mounts never reach the host, whatever the root propagation.

One daemon for the module (tests/integration/test_cri_containers.py's cri_rig) with busybox.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ctr import ok
from tests.images import Image, build_image, tar_tree
from tests.integration.test_cri_containers import BUSYBOX, CriRig, container, cri_rig, pod

pytestmark = pytest.mark.root

HOST_TO_CONTAINER, BIDIRECTIONAL = 1, 2  # the CRI's MountPropagation numbers


def _images(root: Path) -> list[Image]:
    return [build_image(BUSYBOX, [tar_tree(root)])]


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    with cri_rig(CriRig, "dy-criprop-", _images) as r:
        yield r


def mounts_under(top: Path) -> list[str]:
    prefix = str(top) + "/"
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)]


@contextlib.contextmanager
def shared_host_dir(base: Path) -> Iterator[Path]:
    """`base`/mnt bound onto itself and made rshared (as kubelet's root dir is), with a source
    directory beside it for the host's mount; every mount under `base` undone at the end."""
    src, mnt = base / "src", base / "mnt"
    (src / "from-host").mkdir(parents=True)
    (src / "from-host" / "flag").write_text("host\n")
    mnt.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(mnt), str(mnt)], check=True)
        subprocess.run(["mount", "--make-rshared", str(mnt)], check=True)
        yield mnt
    finally:
        for point in sorted(mounts_under(base), reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def privileged(name: str, mnt: Path, propagation: int) -> dict[str, Any]:
    return container(name, command=["sleep", "3600"], linux={"security_context": {"privileged": True}},
                     mounts=[{"container_path": "/vol", "host_path": str(mnt), "propagation": propagation}])


@pytest.fixture
def clean(rig: CriRig) -> Iterator[CriRig]:
    yield rig
    rig.remove_pods()


@pytest.mark.parametrize(("propagation", "back_to_host"), [(BIDIRECTIONAL, True), (HOST_TO_CONTAINER, False)])
def test_propagation_with_the_host(clean: CriRig, propagation: int, back_to_host: bool) -> None:
    rig = clean
    base = rig.tmp / f"prop-{propagation}"
    with shared_host_dir(base) as mnt:
        pcfg = pod("prop", rig.tmp)
        p = rig.runp(pcfg)
        cid = rig.run(p, pcfg, privileged("c", mnt, propagation))
        inspect = rig.json("inspect", cid)
        assert inspect["info"]["runtimeSpec"]["linux"]["rootfsPropagation"] == \
            ("rshared" if back_to_host else "rslave")
        # host to container: a mount made on the host after the start shows inside
        (mnt / "seen").mkdir()
        subprocess.run(["mount", "--bind", str(base / "src" / "from-host"), str(mnt / "seen")], check=True)
        assert rig.ok("exec", "-s", cid, "cat", "/vol/seen/flag").strip() == "host"
        # container to host: only when bidirectional
        rig.ok("exec", "-s", cid, "sh", "-c", "mkdir -p /vol/made && mount -t tmpfs inside /vol/made && "
                                              "echo container > /vol/made/flag")
        assert rig.ok("exec", "-s", cid, "cat", "/vol/made/flag").strip() == "container"
        flag = mnt / "made" / "flag"
        assert flag.exists() == back_to_host, mounts_under(base)
        if back_to_host:
            assert flag.read_text() == "container\n"
        # the container's rootfs (mounted in its own namespace) never shows on the host
        assert mounts_under(rig.d.state / "tasks") == []
        rig.ok("rm", "-f", cid)


def test_rootfs_stays_in_the_container_when_the_bundle_is_on_a_shared_mount(clean: CriRig) -> None:
    """The daemon's own directory made a shared mount (as / is under systemd): the container's
    rootfs overlay, mounted in its namespace after its root was made rshared, must not show up
    on the host (the rootfs's parent mount is made a slave first)."""
    rig = clean
    base = rig.d.base
    subprocess.run(["mount", "--rbind", str(base), str(base)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(base)], check=True)
        with shared_host_dir(rig.tmp / "prop-shared-bundle") as mnt:
            pcfg = pod("sharedbundle", rig.tmp)
            p = rig.runp(pcfg)
            cid = rig.run(p, pcfg, privileged("c", mnt, BIDIRECTIONAL))
            assert rig.ok("exec", "-s", cid, "cat", "/etc/hostname").strip()  # it runs in its own root
            assert mounts_under(rig.d.state / "tasks") == []
            rig.ok("exec", "-s", cid, "sh", "-c", "mkdir -p /vol/made && mount -t tmpfs inside /vol/made")
            assert (mnt / "made").is_mount()
            ok(rig.crictl("rmp", "-f", p))
            rig.pods.remove(p)
    finally:
        subprocess.run(["umount", "-l", str(base)], check=True)
