"""Named volumes, bind mounts, tmpfs and read-only roots, with a real daemon and our shim.

The image is busybox plus a layer holding /data (owners, modes, a setuid file, a symlink, a hard
link, an xattr, a subdirectory) and /etclink -> /etc, so seeding can be checked entry by entry
and shown not to follow a symlink out of the container's root.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from dock.client import Client
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tests.compat.conftest import ctr
from tests.compat.runtimes import daemon_with_runtime, remove_everything
from tests.daemon import REPO, DaemonProcess
from tests.images import EPOCH, build_image, oci_archive, tar_tree
from tests.rootfs import make_busybox_rootfs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

IMAGE = "docker.io/library/volimg:1"
HELLO = b"hello from the image\n"
T = TypeVar("T")


def _entry(tf: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, *, data: bytes = b"", mode: int = 0o644,
           uid: int = 0, gid: int = 0, link: str = "", xattrs: dict[str, str] | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime, info.linkname = kind, mode, uid, gid, EPOCH, link
    if xattrs:
        info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in xattrs.items()}
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def content_layer() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _entry(tf, "data", tarfile.DIRTYPE, mode=0o750, uid=1234, gid=5678)
        _entry(tf, "data/hello.txt", data=HELLO, mode=0o640, uid=1234, gid=5678, xattrs={"user.dy": "seeded"})
        # a hard link's header carries its inode's attributes (appliers set them, as containerd's)
        _entry(tf, "data/hard", tarfile.LNKTYPE, link="data/hello.txt", mode=0o640, uid=1234, gid=5678)
        _entry(tf, "data/link", tarfile.SYMTYPE, link="hello.txt")
        _entry(tf, "data/escape", tarfile.SYMTYPE, link="/etc/hostname")
        _entry(tf, "data/suid", data=b"#!/bin/sh\n", mode=0o4755)
        _entry(tf, "data/sub", tarfile.DIRTYPE, mode=0o700, uid=7, gid=8)
        _entry(tf, "data/sub/deep.txt", data=b"deep\n", mode=0o600)
        _entry(tf, "etclink", tarfile.SYMTYPE, link="/etc")
    return buf.getvalue()


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with tempfile.TemporaryDirectory(prefix="dy-volimg-") as tmp, daemon_with_runtime("dockyard") as d:
        root = make_busybox_rootfs(Path(tmp) / "rootfs")
        archive = Path(tmp) / "img.tar"
        archive.write_bytes(oci_archive([build_image(IMAGE, [tar_tree(root), content_layer()])]))
        res = ctr(d, "images", "import", str(archive))
        assert res.returncode == 0, res.stderr
        yield d


@pytest.fixture
def d(daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    yield daemon
    remove_everything(daemon)
    call(daemon, lambda c: c.volumes.prune(all=True))


def call(d: DaemonProcess, fn: Callable[[Client], Awaitable[T]]) -> T:
    async def go() -> T:
        async with d.client() as client:
            return await fn(client)
    return asyncio.run(go())


def uid(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def dock(d: DaemonProcess, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def ok(d: DaemonProcess, *args: str) -> str:
    res = dock(d, *args)
    assert res.returncode == 0, f"dock {args}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr
    return res.stdout


_NAME_FLAG: list[bool] = []


def run_args(cid: str, *options: str, cmd: list[str]) -> list[str]:
    """`dock run` in whichever form this checkout has: `--name ID IMAGE CMD` or `IMAGE ID CMD`."""
    if not _NAME_FLAG:
        out = subprocess.run([sys.executable, "-m", "dock.cli", "run", "--help"], capture_output=True, text=True,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
        _NAME_FLAG.append("--name" in out)
    where = ["--name", cid, IMAGE] if _NAME_FLAG[0] else [IMAGE, cid]
    return ["run", "--net", "none", *options, *where, *cmd]


def run(d: DaemonProcess, *options: str, cmd: list[str], name: str = "c") -> subprocess.CompletedProcess[str]:
    return dock(d, *run_args(uid(name), *options, cmd=cmd))


def run_ok(d: DaemonProcess, *options: str, cmd: list[str], name: str = "c") -> str:
    return ok(d, *run_args(uid(name), *options, cmd=cmd))


def mountpoint(d: DaemonProcess, name: str) -> Path:
    vol, _ = call(d, lambda c: c.volumes.get(name))
    return Path(vol.mountpoint)


# -- seeding ------------------------------------------------------------------------------------


def test_first_mount_seeds_the_volume_from_the_image(d: DaemonProcess) -> None:
    name = uid("seed")
    assert run_ok(d, "--rm", "-v", f"{name}:/data", cmd=["cat", "/data/hello.txt", "/data/sub/deep.txt"]) \
        == (HELLO + b"deep\n").decode()
    data = mountpoint(d, name)
    assert data == d.root / "volumes" / "default" / name / "_data"
    top = data.lstat()
    assert (top.st_uid, top.st_gid, stat.S_IMODE(top.st_mode)) == (1234, 5678, 0o750)  # the image's dir, as Docker
    hello = (data / "hello.txt").lstat()
    assert (hello.st_uid, hello.st_gid, stat.S_IMODE(hello.st_mode)) == (1234, 5678, 0o640)
    assert hello.st_mtime == EPOCH
    assert os.getxattr(data / "hello.txt", "user.dy") == b"seeded"
    assert (data / "hard").lstat().st_ino == hello.st_ino  # one file, two names, as in the image
    assert os.readlink(data / "link") == "hello.txt"
    assert os.readlink(data / "escape") == "/etc/hostname"  # copied as a link, never followed
    assert stat.S_IMODE((data / "suid").lstat().st_mode) == 0o4755
    sub = (data / "sub").lstat()
    assert (sub.st_uid, sub.st_gid, stat.S_IMODE(sub.st_mode)) == (7, 8, 0o700)

    # Not empty any more: a later container sees what is there, the image's copy is not redone.
    (data / "hello.txt").unlink()
    (data / "mine").write_text("kept\n")
    out = run_ok(d, "--rm", "-v", f"{name}:/data", cmd=["sh", "-c", "ls /data; cat /data/mine"])
    assert "hello.txt" not in out.split() and out.endswith("kept\n")


def test_nocopy_and_a_path_the_image_lacks_leave_the_volume_empty(d: DaemonProcess) -> None:
    a, b = uid("nocopy"), uid("nopath")
    run_ok(d, "--rm", "-v", f"{a}:/data:nocopy", "-v", f"{b}:/nothing/here", cmd=["true"])
    assert list(mountpoint(d, a).iterdir()) == []
    assert list(mountpoint(d, b).iterdir()) == []


def test_seeding_does_not_follow_a_symlink_out_of_the_root(d: DaemonProcess) -> None:
    """/etclink -> /etc in the image: the copy is the image's /etc, never the host's."""
    name = uid("etc")
    run_ok(d, "--rm", "-v", f"{name}:/etclink", cmd=["true"])
    seeded = mountpoint(d, name)
    assert {p.name for p in seeded.iterdir()} == {"passwd", "group", "hostname"}  # tests/rootfs.py's /etc
    assert len(list(Path("/etc").iterdir())) > 10  # the host's would have shown
    assert (seeded / "hostname").read_text() == "busybox\n"
    assert "nobody:x:65534:65534:nobody:/nonexistent:/bin/false" in (seeded / "passwd").read_text()  # the image's


def test_seed_rpc_refuses_bad_input_in_words(d: DaemonProcess) -> None:
    cid = uid("seedrpc")
    ok(d, *run_args(cid, cmd=["true"]))  # a container whose snapshot we can name
    name = uid("v")
    call(d, lambda c: c.volumes.create(name))
    with pytest.raises(NotFound, match="volume 'nope-x'"):
        call(d, lambda c: c.volumes.seed("nope-x", "overlayfs", cid, "/data"))
    with pytest.raises(InvalidArgument, match="must be absolute"):
        call(d, lambda c: c.volumes.seed(name, "overlayfs", cid, "data"))
    with pytest.raises(InvalidArgument, match="escapes"):
        call(d, lambda c: c.volumes.seed(name, "overlayfs", cid, "/../etc"))
    with pytest.raises(NotFound):
        call(d, lambda c: c.volumes.seed(name, "overlayfs", "no-such-snapshot", "/data"))
    done = call(d, lambda c: c.volumes.seed(name, "overlayfs", cid, "/data"))
    # hello.txt, hard, link, escape, suid, sub, sub/deep.txt; a hard link's bytes count once
    assert done.seeded and done.entries == 7 and done.bytes == len(HELLO) + len(b"#!/bin/sh\n") + len(b"deep\n")
    assert not call(d, lambda c: c.volumes.seed(name, "overlayfs", cid, "/data")).seeded  # not empty now


# -- lifetime -----------------------------------------------------------------------------------


def test_data_outlives_its_container_and_is_shared(d: DaemonProcess) -> None:
    name = uid("keep")
    run_ok(d, "--rm", "-v", f"{name}:/store", cmd=["sh", "-c", "echo written-by-first > /store/note"])
    assert run_ok(d, "--rm", "-v", f"{name}:/elsewhere", cmd=["cat", "/elsewhere/note"]) == "written-by-first\n"


def test_read_only_volume_refuses_writes(d: DaemonProcess) -> None:
    name = uid("ro")
    res = run(d, "--rm", "-v", f"{name}:/data:ro", cmd=["sh", "-c", "cat /data/hello.txt && echo x > /data/new"])
    assert res.returncode != 0
    assert res.stdout == HELLO.decode()  # seeded, readable
    assert "Read-only file system" in res.stderr
    assert not (mountpoint(d, name) / "new").exists()


def test_rm_is_refused_while_a_container_uses_the_volume(d: DaemonProcess) -> None:
    name, cid = uid("busy"), uid("user")
    ok(d, *run_args(cid, "-v", f"{name}:/data", cmd=["true"]))  # the container stays (no --rm)
    res = dock(d, "volume", "rm", name)
    assert res.returncode == 1
    assert f"volume '{name}' is in use by container {cid}" in res.stderr and "Traceback" not in res.stderr
    with pytest.raises(FailedPrecondition):
        call(d, lambda c: c.volumes.delete(name))
    inspected = json.loads(ok(d, "volume", "inspect", name))
    assert inspected[0]["containers"] == [cid] and inspected[0]["mountpoint"] == str(mountpoint(d, name))
    ok(d, "containers", "rm", cid)
    assert ok(d, "volume", "rm", name) == f"{name}\n"
    assert not (d.root / "volumes" / "default" / name).exists()
    res = dock(d, "volume", "rm", name)
    assert res.returncode == 1 and f"volume '{name}': not found" in res.stderr


def test_prune_removes_only_unused_volumes(d: DaemonProcess) -> None:
    used, unused, cid = uid("used"), uid("unused"), uid("holder")
    ok(d, *run_args(cid, "-v", f"{used}:/data", cmd=["true"]))
    run_ok(d, "--rm", "-v", f"{unused}:/data", cmd=["dd", "if=/dev/zero", "of=/data/blob", "bs=64k", "count=16"])
    out = json.loads(ok(d, "--format", "json", "volume", "prune", "--all", "-f"))
    assert out["removed"] == [unused]
    assert out["space_reclaimed"] >= 1 << 20
    assert [v.name for v in call(d, lambda c: c.volumes.list())] == [used]


def test_create_get_list_and_errors(d: DaemonProcess) -> None:
    name = uid("api")
    assert ok(d, "volume", "create", "--label", "team=a", name) == f"{name}\n"
    vol, created = call(d, lambda c: c.volumes.create(name, {"team": "a"}))  # idempotent
    assert not created and vol.labels == {"team": "a"} and vol.created_at is not None
    with pytest.raises(AlreadyExists, match="other labels"):
        call(d, lambda c: c.volumes.create(name, {"team": "b"}))
    other = uid("api")
    call(d, lambda c: c.volumes.create(other))
    assert [v.name for v in call(d, lambda c: c.volumes.list(["labels.team==a"]))] == [name]
    assert sorted(ok(d, "volume", "ls", "-q").split()) == sorted([name, other])
    for bad in ["a", "../x", ".hidden", "x/y"]:
        res = dock(d, "volume", "create", bad)
        assert res.returncode == 1 and "volume name" in res.stderr and "Traceback" not in res.stderr
        with pytest.raises(InvalidArgument):
            call(d, lambda c, bad=bad: c.volumes.create(bad))  # type: ignore[misc]
    with pytest.raises(NotFound):
        call(d, lambda c: c.volumes.get("missing-volume"))
    # Per namespace: another namespace neither sees nor reaches it.
    async def elsewhere(c: Client) -> list[str]:
        c.namespace = "other-ns"
        return [v.name for v in await c.volumes.list()]
    assert call(d, elsewhere) == []


# -- binds, tmpfs, read-only root ------------------------------------------------------------------


def test_bind_mount_both_ways(d: DaemonProcess, tmp_path: Path) -> None:
    host = tmp_path / "shared"
    host.mkdir()
    (host / "from-host").write_text("hi container\n")
    out = run_ok(d, "--rm", "-v", f"{host}:/mnt/h", cmd=["sh", "-c", "cat /mnt/h/from-host; echo hi host > "
                                                                       "/mnt/h/from-container"])
    assert out == "hi container\n"
    assert (host / "from-container").read_text() == "hi host\n"
    res = run(d, "--rm", "-v", f"{host}:/mnt/h:ro", cmd=["sh", "-c", "echo x > /mnt/h/nope"])
    assert res.returncode != 0 and "Read-only file system" in res.stderr
    assert not (host / "nope").exists()
    res = run(d, "--rm", "-v", f"{tmp_path}/missing:/m", cmd=["true"])
    assert res.returncode == 1 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_tmpfs_mount_with_size_and_mode(d: DaemonProcess) -> None:
    out = run_ok(d, "--rm", "--tmpfs", "/scratch:size=64m,mode=1777",
                 cmd=["sh", "-c", "grep ' /scratch ' /proc/mounts; stat -c %a /scratch; df -k /scratch"])
    mount_line, mode, *df = out.splitlines()
    fields = mount_line.split()
    assert fields[2] == "tmpfs"
    opts = fields[3].split(",")
    assert "size=65536k" in opts and {"nosuid", "nodev", "noexec"} <= set(opts)
    assert mode == "1777"
    assert df[-1].split()[1] == "65536"


def test_read_only_root_refuses_writes_but_not_to_its_mounts(d: DaemonProcess) -> None:
    res = run(d, "--rm", "--read-only", cmd=["touch", "/newfile"])
    assert res.returncode != 0 and "Read-only file system" in res.stderr
    name = uid("rw")
    out = run_ok(d, "--rm", "--read-only", "--tmpfs", "/tmp", "-v", f"{name}:/data",
                 cmd=["sh", "-c", "touch /tmp/a && echo ok > /data/b && cat /data/b"])
    assert out == "ok\n"
