"""CRI image volumes (Kubernetes' ImageVolume): a mount naming an image gets that image's tree
read-only in the container, kept by the collector while the container lives, and everything it
made (host mount, directory, view snapshot) goes with the container, after a daemon restart too.

One daemon for the module (tests/integration/test_cri_containers.py's cri_rig), with busybox and a
two-layer data image imported into `k8s.io`: nothing is pulled.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from tests.ctr import ctr, ok
from tests.daemon import start_daemon
from tests.images import Image, build_image, oci_archive, tar_tree
from tests.integration.test_cli import dock
from tests.integration.test_cri_containers import BUSYBOX, CriRig, container, cri_rig, pod
from tests.integration.test_cri_sandbox import CRI_NS
from tests.waiting import wait_until

pytestmark = pytest.mark.root

DATA = "example.org/cri/data:1"  # two layers: /share/greeting, then /share/second and a symlink to /share
SLEEPER = ["sh", "-c", "sleep 3600"]


def _images(root: Path) -> list[Image]:
    first, second = root.parent / "data-1", root.parent / "data-2"
    (first / "share").mkdir(parents=True)
    (first / "share" / "greeting").write_text("hello from the image\n")
    (second / "share").mkdir(parents=True)
    (second / "share" / "second").write_text("from the upper layer\n")
    os.symlink("/share", second / "link")
    return [build_image(BUSYBOX, [tar_tree(root)]), build_image(DATA, [tar_tree(first), tar_tree(second)])]


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    with cri_rig(CriRig, "dy-criiv-", _images) as r:
        yield r


def volumes_dir(rig: CriRig) -> Path:
    return rig.d.state / "cri" / "image-volumes"


def mount_points(rig: CriRig) -> list[str]:
    top = str(volumes_dir(rig)) + "/"
    return sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if line.split()[4].startswith(top))


def views(rig: CriRig) -> list[str]:
    lines = ok(ctr(rig.d, "snapshots", "ls", namespace=CRI_NS)).splitlines()[1:]
    return sorted(line.split()[0] for line in lines if line.split()[0].startswith("cri-image-volume-"))


@pytest.fixture
def clean(rig: CriRig) -> Iterator[CriRig]:
    """Each test leaves no pod, container, image volume mount, directory or view behind."""
    yield rig
    rig.remove_pods()
    assert mount_points(rig) == []
    assert not volumes_dir(rig).exists() or list(volumes_dir(rig).iterdir()) == []
    assert views(rig) == []


def image_mount(path: str, image: str = DATA, **more: Any) -> dict[str, Any]:
    return {"container_path": path, "image": {"image": image}, "readonly": True, **more}


def image_id(rig: CriRig, name: str) -> str:
    return str(rig.json("inspecti", name)["status"]["id"])


def exec_in(rig: CriRig, cid: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return rig.crictl("exec", "-s", cid, *cmd)


def output(rig: CriRig, cid: str, *cmd: str) -> str:
    """What `cmd` printed in the container (crictl adds blank lines: stripped)."""
    return ok(exec_in(rig, cid, *cmd)).strip()


def test_image_volume_is_the_image_read_only(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("iv", rig.tmp)
    p = rig.runp(pcfg)
    data_id = image_id(rig, DATA)
    cid = rig.run(p, pcfg, container("c", command=SLEEPER, mounts=[
        image_mount("/mnt/whole"), image_mount("/mnt/sub", image=data_id, image_sub_path="link")]))
    # both layers are there (a view of the whole chain), through the sub path's symlink too
    assert output(rig, cid, "cat", "/mnt/whole/share/greeting", "/mnt/whole/share/second") == \
        "hello from the image\nfrom the upper layer"
    assert sorted(output(rig, cid, "ls", "/mnt/sub").split()) == ["greeting", "second"]
    # read-only, and not noexec: busybox is run from an image volume of busybox below
    res = exec_in(rig, cid, "touch", "/mnt/whole/share/new")
    assert res.returncode != 0 and "Read-only file system" in res.stdout + res.stderr, res
    assert not (volumes_dir(rig) / cid / "0" / "share" / "new").exists()
    # the status reports the mounts as asked, each with the image's ID
    mounts = {m["containerPath"]: m for m in rig.status(cid)["mounts"]}
    assert (mounts["/mnt/whole"]["image"]["image"], mounts["/mnt/whole"]["image"]["imageRef"]) == (DATA, data_id)
    assert mounts["/mnt/sub"]["image"]["imageRef"] == data_id and mounts["/mnt/sub"]["imageSubPath"] == "link"
    assert mount_points(rig) == [str(volumes_dir(rig) / cid / "0"), str(volumes_dir(rig) / cid / "1")]
    # the collector keeps the views while the container exists, even with the image gone
    ok(rig.crictl("rmi", DATA))
    try:
        ok(dock(str(rig.d.address), "gc", namespace=CRI_NS))
        assert views(rig) == [f"cri-image-volume-{cid}-0", f"cri-image-volume-{cid}-1"]
        assert output(rig, cid, "cat", "/mnt/sub/greeting") == "hello from the image"
        rig.ok("rm", "-f", cid)
        assert mount_points(rig) == [] and views(rig) == [] and not (volumes_dir(rig) / cid).exists()
    finally:
        import_data_again(rig)


def import_data_again(rig: CriRig) -> None:
    """The data image again, for the tests after one that removed it."""
    root = rig.tmp / f"again-{secrets.token_hex(3)}"
    (root / "busybox").mkdir(parents=True)
    archive = root / "data.tar"
    archive.write_bytes(oci_archive(_images(root / "busybox")[1:]))
    ok(ctr(rig.d, "images", "import", str(archive), namespace=CRI_NS))


def test_executables_run_from_an_image_volume(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("ivexec", rig.tmp)
    p = rig.runp(pcfg)
    cid = rig.run(p, pcfg, container("c", command=SLEEPER, mounts=[image_mount("/opt/bb", image=BUSYBOX)]))
    assert output(rig, cid, "/opt/bb/bin/echo", "ran") == "ran"


def test_mounted_again_at_start_and_kept_over_a_daemon_restart(clean: CriRig) -> None:
    """The host mount gone (as after a reboot, which empties the state dir): StartContainer mounts
    it again. A kill -9 of the daemon keeps it; a container record removed behind the CRI's back
    while the daemon was away has its volumes swept at the next start."""
    rig = clean
    pcfg = pod("ivrestart", rig.tmp)
    p = rig.runp(pcfg)
    created = rig.create(p, pcfg, container("later", command=SLEEPER, mounts=[image_mount("/data")]))
    target = volumes_dir(rig) / created / "0"
    subprocess.run(["umount", str(target)], check=True)
    rig.ok("start", created)
    assert os.path.ismount(target)
    assert output(rig, created, "cat", "/data/share/second") == "from the upper layer"

    orphan = rig.create(p, pcfg, container("orphan", command=SLEEPER, mounts=[image_mount("/data")]))
    # its record goes without the CRI's RemoveContainer, then the daemon dies
    ok(ctr(rig.d, "containers", "rm", orphan, namespace=CRI_NS))
    rig.containers.remove(orphan)
    assert (volumes_dir(rig) / orphan / "0").is_mount()
    assert rig.d.stop(9) in (0, -9)
    rig.d = start_daemon(rig.d.base, netns=rig.netns)
    wait_until(lambda: not (volumes_dir(rig) / orphan).exists(), what="the orphan's image volume to be swept")
    ok(dock(str(rig.d.address), "gc", namespace=CRI_NS))  # its view: no record keeps it
    assert mount_points(rig) == [str(target)] and views(rig) == [f"cri-image-volume-{created}-0"]
    assert output(rig, created, "cat", "/data/share/greeting") == "hello from the image"


def test_bad_image_volumes_are_refused_and_leave_nothing(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("ivbad", rig.tmp)
    p = rig.runp(pcfg)

    def volume(**fields: Any) -> api_pb2.Mount:
        return api_pb2.Mount(container_path="/v", readonly=fields.pop("readonly", True), **fields)

    cases = [
        volume(image=api_pb2.ImageSpec(image="example.org/not/pulled:1")),
        volume(image=api_pb2.ImageSpec(image=DATA), readonly=False),
        volume(image=api_pb2.ImageSpec(image=DATA), image_sub_path="no/such/dir"),
        volume(image=api_pb2.ImageSpec(image=DATA), image_sub_path="../etc"),
        volume(image=api_pb2.ImageSpec(image=DATA), host_path="/tmp"),
        volume(host_path="/tmp", image_sub_path="share"),
    ]

    async def calls() -> list[tuple[grpc.StatusCode, str]]:
        out = []
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            for i, m in enumerate(cases):
                config = api_pb2.ContainerConfig(metadata=api_pb2.ContainerMetadata(name=f"bad{i}"),
                                                 image=api_pb2.ImageSpec(image=BUSYBOX), command=SLEEPER,
                                                 mounts=[m])
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.CreateContainer(api_pb2.CreateContainerRequest(pod_sandbox_id=p, config=config))
                out.append((err.value.code(), err.value.details() or ""))
        return out

    results = asyncio.run(calls())
    codes = [code for code, _ in results]
    assert codes == [grpc.StatusCode.NOT_FOUND] + [grpc.StatusCode.INVALID_ARGUMENT] * 5, results
    assert "pull it first" in results[0][1] and "read-only" in results[1][1], results
    assert "'no/such/dir' does not exist" in results[2][1] and "relative path inside" in results[3][1], results
    assert "mutually exclusive" in results[4][1] and "only for an image volume" in results[5][1], results
    for _, message in results:
        assert "Traceback" not in message and "Error(" not in message, message
    assert rig.ps() == [] and mount_points(rig) == [] and views(rig) == []
    assert not volumes_dir(rig).exists() or list(volumes_dir(rig).iterdir()) == []
