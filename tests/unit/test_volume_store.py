"""supervisor/volumes: the store's records, users, removal and crash leftovers; the seed copy."""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import stat
from pathlib import Path

import pytest

from dockyard_common import volumelabels
from dockyard_common.errors import AlreadyExists, FailedPrecondition, Internal, InvalidArgument, NotFound
from dockyard_common.types import Container, Mount
from supervisor.snapshotter.tree import empty
from supervisor.treecopy import copy_tree
from supervisor.volumes.store import VolumeStore


class FakeContainers:
    def __init__(self) -> None:
        self.by_ns: dict[str, list[Container]] = {}

    async def list(self, ns: str, filter_texts: builtins.list[str] | None = None) -> builtins.list[Container]:
        return [c for c in self.by_ns.get(ns, []) if volumelabels.MOUNTS in c.labels]

    def add(self, ns: str, cid: str, *names: str) -> None:
        label = volumelabels.encode([volumelabels.VolumeMount(n, f"/{n}") for n in names])
        record = Container(cid, "io.containerd.runc.v2", None, {volumelabels.MOUNTS: label})
        self.by_ns.setdefault(ns, []).append(record)


class NoSnapshots:
    async def mounts(self, ns: str, sn: str, key: str) -> builtins.list[Mount]:
        raise NotFound(f"snapshot {key}")


def store_at(tmp_path: Path, containers: FakeContainers | None = None) -> VolumeStore:
    return VolumeStore(tmp_path / "volumes", containers or FakeContainers(), NoSnapshots(), tmp_path / "tmp")


def test_create_is_idempotent_with_the_same_labels(tmp_path: Path) -> None:
    async def go() -> None:
        store = store_at(tmp_path)
        vol, created = await store.create("default", "data", {"a": "1"})
        assert created and vol.mountpoint == tmp_path / "volumes" / "default" / "data" / "_data"
        assert stat.S_IMODE(vol.mountpoint.stat().st_mode) == 0o755
        again, created = await store.create("default", "data", {"a": "1"})
        assert not created and again == vol
        with pytest.raises(AlreadyExists, match="other labels \\(a=1\\)"):
            await store.create("default", "data", {"a": "2"})
        with pytest.raises(InvalidArgument, match="volume name"):
            await store.create("default", "../x")
        with pytest.raises(InvalidArgument, match="label"):
            await store.create("default", "big", {"k": "v" * 5000})
        assert [v.name for v in await store.list("default")] == ["data"]
        assert await store.list("other") == []  # per namespace
        await store.create("other", "data")  # the same name in another namespace is another volume
        assert (await store.get("other", "data")).labels == {}
        await store.create("default", "logs", {"a": "2"})
        assert [v.name for v in await store.list("default", ["labels.a==2", "name==data"])] == ["data", "logs"]
        assert [v.name for v in await store.list("default", ["labels.a==2"])] == ["logs"]
    asyncio.run(go())


def test_concurrent_creates_make_one_volume(tmp_path: Path) -> None:
    async def go() -> None:
        store = store_at(tmp_path)
        results = await asyncio.gather(*(store.create("default", "race") for _ in range(8)))
        assert sum(created for _, created in results) == 1
        assert sorted(os.listdir(tmp_path / "volumes" / "default")) == ["race"]  # no staging left over
    asyncio.run(go())


def test_delete_refused_while_used_and_prune_keeps_used(tmp_path: Path) -> None:
    async def go() -> None:
        containers = FakeContainers()
        store = store_at(tmp_path, containers)
        for name in ("used", "free", "other"):
            await store.create("default", name)
        (tmp_path / "volumes" / "default" / "free" / "_data" / "blob").write_bytes(b"x" * 100_000)
        containers.add("default", "web", "used")
        containers.add("elsewhere", "db", "other")  # another namespace's container does not hold ours
        with pytest.raises(FailedPrecondition, match="'used' is in use by container web"):
            await store.delete("default", "used")
        pruned = await store.prune("default")
        assert sorted(pruned.removed) == ["free", "other"]
        assert pruned.space_reclaimed >= 100_000
        assert [v.name for v in await store.list("default")] == ["used"]
        with pytest.raises(NotFound):
            await store.delete("default", "free")
        containers.by_ns.clear()
        await store.delete("default", "used")
        assert os.listdir(tmp_path / "volumes" / "default") == []
    asyncio.run(go())


def test_a_restart_removes_what_a_crash_left(tmp_path: Path) -> None:
    ns = tmp_path / "volumes" / "default"
    (ns / ".new-x-1234" / "_data").mkdir(parents=True)
    (ns / ".del-y-5678" / "_data").mkdir(parents=True)
    (ns / "kept" / "_data").mkdir(parents=True)
    (ns / "kept" / "volume.json").write_text(json.dumps({"name": "kept", "labels": {}, "created_at": 1.0}))
    store = store_at(tmp_path)
    assert sorted(os.listdir(ns)) == ["kept"]
    assert [v.name for v in asyncio.run(store.list("default"))] == ["kept"]


def test_a_broken_record_is_an_error_in_words_and_does_not_hide_the_others(tmp_path: Path) -> None:
    async def go() -> None:
        store = store_at(tmp_path)
        await store.create("default", "good")
        await store.create("default", "bad")
        (tmp_path / "volumes" / "default" / "bad" / "volume.json").write_text('{"labels": [1]}')
        assert [v.name for v in await store.list("default")] == ["good"]
        with pytest.raises(Internal, match=r"volume 'bad'.*want labels"):
            await store.get("default", "bad")
        (tmp_path / "volumes" / "default" / "bad" / "volume.json").write_text("[[[")
        with pytest.raises(Internal, match="not valid JSON"):
            await store.get("default", "bad")
    asyncio.run(go())


def test_seed_checks_its_input_before_touching_anything(tmp_path: Path) -> None:
    async def go() -> None:
        store = store_at(tmp_path)
        await store.create("default", "v1")
        with pytest.raises(InvalidArgument, match="absolute"):
            await store.seed("default", "v1", "overlayfs", "c1", "data")
        with pytest.raises(InvalidArgument, match="escapes"):
            await store.seed("default", "v1", "overlayfs", "c1", "/a/../../etc")
        with pytest.raises(InvalidArgument, match="snapshotter and key"):
            await store.seed("default", "v1", "", "", "/data")
        with pytest.raises(NotFound, match="snapshot c1"):
            await store.seed("default", "v1", "overlayfs", "c1", "/data")
        with pytest.raises(NotFound, match="volume 'v2'"):
            await store.seed("default", "v2", "overlayfs", "c1", "/data")
    asyncio.run(go())


@pytest.mark.skipif(os.geteuid() != 0, reason="owners and device nodes need root")
def test_copy_tree_keeps_what_docker_keeps(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d" / "e").mkdir(parents=True)
    dst.mkdir()
    (src / "d" / "f").write_bytes(b"data" * 1000)
    os.chown(src / "d" / "f", 12, 34)
    os.chmod(src / "d" / "f", 0o2751)
    os.link(src / "d" / "f", src / "d" / "e" / "g")  # across directories
    os.symlink("../../etc/shadow", src / "d" / "loop")
    os.mkfifo(src / "fifo")
    os.chmod(src / "fifo", 0o620)  # past the umask
    os.mknod(src / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.setxattr(src / "d", "user.k", b"v")
    os.utime(src / "d", (1_000_000, 1_000_000))
    sfd, dfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY), os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stats = copy_tree(sfd, dfd)
        assert (stats.entries, stats.bytes) == (7, 4000)
        f = (dst / "d" / "f").lstat()
        assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (12, 34, 0o2751)
        assert (dst / "d" / "e" / "g").lstat().st_ino == f.st_ino
        assert os.readlink(dst / "d" / "loop") == "../../etc/shadow"
        assert stat.S_ISFIFO((dst / "fifo").lstat().st_mode) and stat.S_IMODE((dst / "fifo").lstat().st_mode) == 0o620
        assert (dst / "null").lstat().st_rdev == os.makedev(1, 3)
        assert os.getxattr(dst / "d", "user.k") == b"v"
        assert (dst / "d").lstat().st_mtime == 1_000_000  # set after its children were copied in
        with pytest.raises(FileExistsError):  # never over something already there
            copy_tree(sfd, dfd)
        empty(dfd)
        assert os.listdir(dst) == []
    finally:
        os.close(sfd)
        os.close(dfd)
