"""One suite for every Snapshotter (habit 2), in the spirit of containerd's snapshots/testsuite.

Written against the `Snapshotter` protocol only; the returned mounts are really
mounted (as root, with mount(8)) and their contents checked.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.types import Mount
from supervisor.snapshotter import (
    Info,
    Kind,
    NativeSnapshotter,
    OverlaySnapshotter,
    Snapshotter,
    Usage,
)

from .mounts import mount_all, mounts_under, unmount
from .remote_snapshotter import RemoteNative, RemoteOverlay

Implementation = type[OverlaySnapshotter] | type[NativeSnapshotter] | type[RemoteOverlay] | type[RemoteNative]

pytestmark = pytest.mark.root

IMPLEMENTATIONS: dict[str, Implementation] = {
    "overlayfs": OverlaySnapshotter,
    "native": NativeSnapshotter,
    # The same suite through dockyardd's Snapshots service (namespaced metadata, gRPC, SDK).
    "grpc-overlayfs": RemoteOverlay,
    "grpc-native": RemoteNative,
}

Applier = Callable[[str], None]
Opener = Callable[..., Awaitable[Snapshotter]]


# -- filesystem changes applied both to a mounted snapshot and to a plain "flat" dir --


def _p(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def create_file(path: str, data: bytes, mode: int = 0o644) -> Applier:
    def apply(root: str) -> None:
        with open(_p(root, path), "wb") as f:
            f.write(data)
        os.chmod(_p(root, path), mode)

    return apply


def create_dir(path: str, mode: int = 0o755) -> Applier:
    def apply(root: str) -> None:
        os.mkdir(_p(root, path))
        os.chmod(_p(root, path), mode)

    return apply


def remove_all(path: str) -> Applier:
    def apply(root: str) -> None:
        target = _p(root, path)
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)

    return apply


def chown(path: str, uid: int, gid: int) -> Applier:
    return lambda root: os.lchown(_p(root, path), uid, gid)


def link(old: str, new: str) -> Applier:
    return lambda root: os.link(_p(root, old), _p(root, new))


def symlink(target: str, path: str) -> Applier:
    return lambda root: os.symlink(target, _p(root, path))


def rename(old: str, new: str) -> Applier:
    return lambda root: os.rename(_p(root, old), _p(root, new))


def apply(*ops: Applier) -> Applier:
    def run(root: str) -> None:
        for op in ops:
            op(root)

    return run


def read(root: str, path: str) -> bytes:
    with open(_p(root, path), "rb") as f:
        return f.read()


def tree_of(root: str) -> dict[str, tuple[object, ...]]:
    """Everything a container would see in a tree, minus times and inode numbers."""
    tree: dict[str, tuple[object, ...]] = {}
    groups: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = os.path.join(dirpath, name) if name else dirpath
            if not name and dirpath != root:
                continue
            rel = "/" + os.path.relpath(path, root) if path != root else "/"
            st = os.lstat(path)
            xattrs = tuple(
                sorted(
                    (x, os.getxattr(path, x, follow_symlinks=False))
                    for x in os.listxattr(path, follow_symlinks=False)
                    if x.startswith("user.")
                )
            )
            mode = st.st_mode
            entry: tuple[object, ...] = (stat.S_IFMT(mode), stat.S_IMODE(mode), st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content: object = f.read()
                # Hard links: name the group by its first path seen in sorted order.
                key = (st.st_dev, st.st_ino)
                group = groups.setdefault(key, rel) if st.st_nlink > 1 else rel
                entry += (content, group if group != rel else None)
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                entry += (st.st_rdev,)
            tree[rel] = (*entry, xattrs)
        dirnames.sort()
    return tree


# -- fixtures --------------------------------------------------------------------------


class Mounter:
    """Mounts snapshots in a work dir and unmounts whatever is left at teardown."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.mounted: list[str] = []

    def mount(self, mounts: list[Mount], name: str) -> str:
        target = str(self.work / name)
        os.makedirs(target, exist_ok=True)
        mount_all(mounts, target)
        self.mounted.append(target)
        return target

    def umount(self, target: str) -> None:
        unmount(target)
        self.mounted.remove(target)

    def umount_all(self) -> None:
        for target in reversed(self.mounted):
            unmount(target)
        self.mounted.clear()


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def impl(request: pytest.FixtureRequest) -> Implementation:
    return IMPLEMENTATIONS[request.param]


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def mounter(work: Path, tmp_path: Path) -> Iterator[Mounter]:
    m = Mounter(work)
    yield m
    m.umount_all()
    assert mounts_under(str(tmp_path)) == []


@pytest.fixture
async def opener(
    impl: Implementation, tmp_path: Path
) -> AsyncIterator[Opener]:
    opened: list[Snapshotter] = []

    async def open_(root: Path | None = None) -> Snapshotter:
        sn = await impl.open(root or tmp_path / "root")
        opened.append(sn)
        return sn

    yield open_
    for sn in opened:
        await sn.close()


@pytest.fixture
async def sn(opener: Opener) -> Snapshotter:
    return await opener()


LABELS = {"containerd.io/gc.root": "2024-01-01T00:00:00Z"}


async def check_snapshots(sn: Snapshotter, mounter: Mounter, work: Path, *appliers: Applier) -> None:
    """Apply each changeset as a new layer; each committed layer must look like `flat`."""
    flat = work / "flat"
    flat.mkdir()
    flat.chmod(0o755)
    parent = ""
    for i, applier in enumerate(appliers):
        key = f"prepare-{i}"
        target = mounter.mount(await sn.prepare(key, parent, labels=LABELS), key)
        assert tree_of(target) == tree_of(str(flat)), f"layer {i} before changes"
        applier(target)
        applier(str(flat))
        assert tree_of(target) == tree_of(str(flat)), f"layer {i} after changes"
        mounter.umount(target)
        name = f"committed-{i}"
        await sn.commit(name, key, labels=LABELS)
        view = mounter.mount(await sn.view(f"view-{i}", name), f"view-{i}")
        assert tree_of(view) == tree_of(str(flat)), f"committed layer {i}"
        mounter.umount(view)
        await sn.remove(f"view-{i}")
        parent = name


# -- lifecycle -------------------------------------------------------------------------


async def test_implements_protocol(sn: Snapshotter) -> None:
    assert isinstance(sn, Snapshotter)
    assert sn.name in IMPLEMENTATIONS


async def test_basic_lifecycle(sn: Snapshotter, mounter: Mounter, work: Path) -> None:
    preparing = "extract-1 sha256:aaaa"
    mounts = await sn.prepare(preparing, "", labels=LABELS)
    assert mounts
    assert await sn.mounts(preparing) == mounts
    target = mounter.mount(mounts, "preparing")
    apply(
        create_file("/foo", b"foo\n", 0o777),
        create_dir("/a"),
        create_dir("/a/b"),
        create_dir("/a/b/c"),
    )(target)
    mounter.umount(target)

    await sn.commit("sha256:chain1", preparing, labels=LABELS)
    info = await sn.stat("sha256:chain1")
    assert (info.name, info.parent, info.kind, info.labels) == ("sha256:chain1", "", Kind.COMMITTED, LABELS)
    with pytest.raises(NotFound):
        await sn.stat(preparing)

    nxt = "extract-2 sha256:bbbb"
    target = mounter.mount(await sn.prepare(nxt, "sha256:chain1", labels=LABELS), "next")
    assert read(target, "foo") == b"foo\n"
    apply(
        create_file("/bar", b"bar\n", 0o777),
        create_file("/foo", b"bar\n", 0o777),
        remove_all("/a/b"),
    )(target)
    mounter.umount(target)
    await sn.commit("sha256:chain2", nxt, labels=LABELS)
    info = await sn.stat("sha256:chain2")
    assert (info.parent, info.kind) == ("sha256:chain1", Kind.COMMITTED)

    names = {i.name: i for i in [x async for x in sn.walk()]}
    assert set(names) == {"sha256:chain1", "sha256:chain2"}
    assert names["sha256:chain2"] == info

    view = mounter.mount(await sn.view("container-view", "sha256:chain2"), "view")
    assert sorted(os.listdir(view)) == ["a", "bar", "foo"]
    assert os.listdir(os.path.join(view, "a")) == []
    assert read(view, "foo") == b"bar\n"
    mounter.umount(view)

    with pytest.raises(FailedPrecondition, match="cannot remove snapshot with child"):
        await sn.remove("sha256:chain1")
    await sn.remove("container-view")
    await sn.remove("sha256:chain2")
    await sn.remove("sha256:chain1")
    assert [x async for x in sn.walk()] == []


async def test_stat_active_and_committed(sn: Snapshotter, mounter: Mounter) -> None:
    before = datetime.now(UTC)
    target = mounter.mount(await sn.prepare("active", "", labels={"a": "1"}), "active")
    after = datetime.now(UTC)
    info = await sn.stat("active")
    assert (info.name, info.parent, info.kind, info.labels) == ("active", "", Kind.ACTIVE, {"a": "1"})
    assert before <= info.created_at <= after
    assert info.created_at == info.updated_at
    assert info.created_at.tzinfo is not None
    create_file("/foo", b"foo\n")(target)
    mounter.umount(target)

    await sn.commit("committed", "active", labels={"b": "2"})
    info = await sn.stat("committed")
    # Commit replaces labels rather than inheriting the active snapshot's.
    assert (info.name, info.parent, info.kind, info.labels) == ("committed", "", Kind.COMMITTED, {"b": "2"})
    assert info.created_at >= after


async def test_transitivity(sn: Snapshotter) -> None:
    await sn.prepare("a-tmp", "")
    await sn.commit("A", "a-tmp")
    await sn.prepare("b-tmp", "A")
    await sn.commit("B", "b-tmp")
    await sn.prepare("c-tmp", "B")
    await sn.commit("C", "c-tmp")
    assert (await sn.stat("C")).parent == "B"
    assert (await sn.stat("B")).parent == "A"
    assert (await sn.stat("A")).parent == ""


async def test_same_key_twice_fails(sn: Snapshotter) -> None:
    await sn.prepare("base-tmp", "")
    await sn.commit("base", "base-tmp")
    await sn.prepare("new", "base")
    with pytest.raises(AlreadyExists):
        await sn.view("new", "base")
    with pytest.raises(AlreadyExists):
        await sn.prepare("new", "base")
    await sn.view("view", "base")
    with pytest.raises(AlreadyExists):
        await sn.view("view", "base")
    with pytest.raises(AlreadyExists):
        await sn.prepare("base", "")  # committed names share the key space


async def test_prepare_errors(sn: Snapshotter) -> None:
    with pytest.raises(NotFound):
        await sn.prepare("x", "missing")
    await sn.prepare("active", "")
    await sn.view("view", "")
    with pytest.raises(InvalidArgument, match='parent "active" is not committed snapshot'):
        await sn.prepare("x", "active")
    with pytest.raises(InvalidArgument, match='parent "view" is not committed snapshot'):
        await sn.view("x", "view")
    with pytest.raises(InvalidArgument):
        await sn.prepare("", "")
    with pytest.raises(InvalidArgument):
        await sn.prepare("x", "", labels={"k": 1})  # type: ignore[dict-item]
    # None of the failures left a record behind.
    assert sorted([i.name async for i in sn.walk()]) == ["active", "view"]


async def test_commit_errors(sn: Snapshotter) -> None:
    await sn.prepare("a", "")
    await sn.commit("c", "a")
    await sn.view("v", "c")
    await sn.prepare("a2", "c")
    with pytest.raises(NotFound):
        await sn.commit("x", "missing")
    with pytest.raises(FailedPrecondition):
        await sn.commit("x", "v")
    with pytest.raises(FailedPrecondition):
        await sn.commit("x", "c")
    with pytest.raises(AlreadyExists):
        await sn.commit("c", "a2")
    with pytest.raises(AlreadyExists):
        await sn.commit("v", "a2")
    with pytest.raises(InvalidArgument):
        await sn.commit("", "a2")
    # Failed commits leave the active snapshot as it was.
    assert (await sn.stat("a2")).kind == Kind.ACTIVE
    await sn.commit("c2", "a2")
    with pytest.raises(NotFound):
        await sn.stat("a2")


async def test_mounts(sn: Snapshotter) -> None:
    await sn.prepare("a", "")
    await sn.commit("c", "a")
    with pytest.raises(FailedPrecondition):
        await sn.mounts("c")
    with pytest.raises(NotFound):
        await sn.mounts("missing")
    prepared = await sn.prepare("p", "c")
    viewed = await sn.view("v", "c")
    assert await sn.mounts("p") == prepared
    assert await sn.mounts("v") == viewed
    assert "ro" in viewed[0].options
    assert "ro" not in prepared[0].options


async def test_root_permission(sn: Snapshotter, mounter: Mounter) -> None:
    target = mounter.mount(await sn.prepare("p", ""), "p")
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755


async def test_view_is_readonly(sn: Snapshotter, mounter: Mounter) -> None:
    target = mounter.mount(await sn.prepare("p", ""), "p")
    create_file("/f", b"x")(target)
    mounter.umount(target)
    await sn.commit("c", "p")
    for key, parent in (("view-of-c", "c"), ("empty-view", "")):
        view = mounter.mount(await sn.view(key, parent), key)
        with pytest.raises(OSError) as err:
            create_file("/testfile", b"nope")(view)
        assert err.value.errno == errno.EROFS
        mounter.umount(view)
        await sn.remove(key)
    # A view over a two-layer chain.
    await sn.prepare("p2", "c")
    await sn.commit("c2", "p2")
    view = mounter.mount(await sn.view("v2", "c2"), "v2")
    assert os.listdir(view) == ["f"]
    with pytest.raises(OSError) as err:
        create_file("/testfile", b"nope")(view)
    assert err.value.errno == errno.EROFS


async def test_update_labels(sn: Snapshotter) -> None:
    await sn.prepare("c1-a", "")
    await sn.commit("c1", "c1-a")
    await sn.prepare("c2-a", "c1")
    await sn.commit("c2", "c2-a")
    await sn.prepare("a1", "c2")
    await sn.prepare("a2", "")
    await sn.view("v1", "c2")
    await sn.view("v2", "")
    cases = {
        "c1": (Kind.COMMITTED, ""),
        "c2": (Kind.COMMITTED, "c1"),
        "a1": (Kind.ACTIVE, "c2"),
        "a2": (Kind.ACTIVE, ""),
        "v1": (Kind.VIEW, "c2"),
        "v2": (Kind.VIEW, ""),
    }
    for name, (kind, parent) in cases.items():
        st = await sn.stat(name)
        created = st.created_at
        assert (st.kind, st.parent, st.name) == (kind, parent, name)

        expected = {"l1": "v1", "l2": "v2", "l3": "v3", "containerd.io/gc.root": "now"}
        st.parent = "doesnotexist"  # immutable fields are ignored
        st.labels = dict(expected)
        u1 = datetime.now(UTC)
        st = await sn.update(st)
        u2 = datetime.now(UTC)
        assert st.created_at == created
        assert u1 <= st.updated_at <= u2
        assert (st.kind, st.parent, st.name, st.labels) == (kind, parent, name, expected)

        st.labels = {"l1": "updated", "l4": "v4"}
        st = await sn.update(st, ["labels.l1", "labels.l2"])
        assert st.labels == {"l1": "updated", "l3": "v3", "containerd.io/gc.root": "now"}

        st.labels = {"l4": "v4", "containerd.io/gc.root": "now"}
        st = await sn.update(st, ["labels"])
        assert st.labels == {"l4": "v4", "containerd.io/gc.root": "now"}
        assert (await sn.stat(name)) == st

        bad = Info(name=name, parent="doesnotexist", labels={"l5": "v5"})
        with pytest.raises(InvalidArgument):
            await sn.update(bad, ["labels.l5", "parent"])
        assert (await sn.stat(name)) == st  # all or nothing
    with pytest.raises(NotFound):
        await sn.update(Info(name="missing", labels={"a": "b"}))


async def test_remove_and_reuse_keys(sn: Snapshotter) -> None:
    await sn.prepare("committed-a", "")
    await sn.commit("committed-1", "committed-a")
    await sn.prepare("reuse-1", "committed-1")
    await sn.remove("reuse-1")
    await sn.view("reuse-1", "committed-1")
    await sn.remove("reuse-1")
    await sn.prepare("reuse-1", "")
    await sn.remove("committed-1")
    await sn.commit("committed-1", "reuse-1")
    with pytest.raises(NotFound):
        await sn.remove("reuse-1")
    with pytest.raises(NotFound):
        await sn.remove("never-existed")


async def test_remove_intermediate_snapshot(sn: Snapshotter, mounter: Mounter) -> None:
    target = mounter.mount(await sn.prepare("base", ""), "base")
    create_file("/f", b"base")(target)
    mounter.umount(target)
    await sn.commit("committed-base", "base")
    await sn.prepare("intermediate", "committed-base")
    await sn.commit("committed-inter", "intermediate")
    await sn.prepare("top", "committed-inter")
    with pytest.raises(FailedPrecondition, match="cannot remove snapshot with child"):
        await sn.remove("committed-inter")
    with pytest.raises(FailedPrecondition):
        await sn.remove("committed-base")
    # The refused removals changed nothing: the chain still mounts.
    view = mounter.mount(await sn.mounts("top"), "top")
    assert read(view, "f") == b"base"
    mounter.umount(view)
    await sn.remove("top")
    await sn.remove("committed-inter")
    await sn.remove("committed-base")
    assert [i async for i in sn.walk()] == []


async def test_walk_with_filters(sn: Snapshotter) -> None:
    gc = {"containerd.io/gc.root": "check-walk"}
    await sn.prepare("a-np", "", labels=gc)
    await sn.prepare("p-tmp", "", labels=gc)
    await sn.commit("p", "p-tmp", labels=gc)
    await sn.prepare("a", "p", labels=gc)
    await sn.view("v", "p", labels=gc)
    await sn.prepare("p-wl-tmp", "", labels=gc)
    await sn.commit("p-wl", "p-wl-tmp", labels={"l": "1", **gc})
    await sn.prepare("a-wl", "p-wl", labels={"l": "2", **gc})
    await sn.view("v-wl", "p-wl", labels={"l": "3", **gc})
    await sn.prepare("a-np-wl", "", labels={"l": "2", **gc})

    def gcroot(i: Info) -> bool:
        return i.labels.get("containerd.io/gc.root") == "check-walk"

    cases: list[tuple[Callable[[Info], bool] | None, set[str]]] = [
        (None, {"a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"}),
        (gcroot, {"a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"}),
        (lambda i: i.kind == Kind.ACTIVE and gcroot(i), {"a-np", "a", "a-wl", "a-np-wl"}),
        (lambda i: i.kind == Kind.VIEW, {"v", "v-wl"}),
        (lambda i: i.kind == Kind.COMMITTED, {"p", "p-wl"}),
        (lambda i: i.name in ("p", "a-np-wl"), {"p", "a-np-wl"}),
        (lambda i: i.name == "a-wl" and "l" in i.labels, {"a-wl"}),
        (lambda i: i.parent == "p", {"a", "v"}),
        (lambda i: i.parent != "" and gcroot(i), {"a", "v", "a-wl", "v-wl"}),
        (lambda i: "l" in i.labels, {"p-wl", "a-wl", "v-wl", "a-np-wl"}),
        (lambda i: i.labels.get("l") == "2", {"a-wl", "a-np-wl"}),
    ]
    for predicate, expected in cases:
        assert {i.name async for i in sn.walk(predicate)} == expected
    # Walk and Stat agree.
    async for info in sn.walk():
        assert await sn.stat(info.name) == info


# -- layers: what mounted chains show ---------------------------------------------------


async def test_layers_add_change_delete(sn: Snapshotter, mounter: Mounter, work: Path) -> None:
    await check_snapshots(
        sn,
        mounter,
        work,
        apply(
            create_file("/foo", b"foo\n", 0o777),
            create_file("/foobar", b"foobar\n", 0o644),
            create_dir("/etc", 0o700),
            create_file("/etc/hosts", b"mydomain 10.0.0.1"),
            create_file("/etc/profile", b"PATH=/usr/bin"),
            create_dir("/lib"),
            create_file("/lib/hidden", b""),
            symlink("../foo", "/etc/foo-link"),
            create_file("/hardlinked", b"one inode\n"),
            link("/hardlinked", "/etc/hardlink"),
        ),
        apply(
            remove_all("/foobar"),
            create_file("/etc/hosts", b"mydomain 10.0.0.2"),
            create_file("/etc/profile", b"PATH=/usr/bin", 0o666),
            remove_all("/lib"),
            create_dir("/lib", 0o700),
            create_file("/lib/not-hidden", b""),
            create_dir("/root", 0o700),
            create_file("/root/.bashrc", b"PATH=/usr/sbin:/usr/bin"),
        ),
        apply(
            create_file("/lib/newfile", b"new"),
            remove_all("/etc/foo-link"),
            symlink("/etc/hosts", "/etc/foo-link"),
            create_file("/foobar", b"back again\n", 0o600),
        ),
        apply(),
    )


async def test_move_file_from_lower_layer(sn: Snapshotter, mounter: Mounter, work: Path) -> None:
    await check_snapshots(
        sn,
        mounter,
        work,
        apply(
            create_dir("/dir1", 0o700),
            create_file("/dir1/f1", b"Hello"),
            create_dir("/dir2", 0o700),
            create_file("/dir2/f2", b"..."),
        ),
        apply(
            create_dir("/dir3", 0o700),
            create_file("/dir3/f1", b"Hello"),
            remove_all("/dir1"),
            link("/dir2/f2", "/dir3/f2"),
            remove_all("/dir2/f2"),
        ),
        apply(rename("/dir3/f1", "/moved"), create_file("/dir2/f3", b"x")),
    )


async def test_chown_and_permissions(sn: Snapshotter, mounter: Mounter, work: Path) -> None:
    await check_snapshots(
        sn,
        mounter,
        work,
        apply(
            create_dir("/opt", 0o700),
            create_dir("/opt/a", 0o700),
            create_dir("/opt/a/b", 0o700),
            create_file("/opt/a/b/file.txt", b"hello"),
            create_dir("/dir-perm", 0o700),
        ),
        apply(
            chown("/opt", 1, 1),
            chown("/opt/a", 1, 1),
            chown("/opt/a/b", 1, 1),
            chown("/opt/a/b/file.txt", 1, 1),
            create_file("/dir-perm/f", b"x"),
            lambda root: os.chmod(_p(root, "/opt/a/b/file.txt"), 0o4755),
        ),
    )


async def test_xattrs_and_special_files(sn: Snapshotter, mounter: Mounter, work: Path) -> None:
    def xattr(path: str, name: str, value: bytes) -> Applier:
        return lambda root: os.setxattr(_p(root, path), name, value)

    def mknod(path: str, mode: int, dev: int = 0) -> Applier:
        return lambda root: os.mknod(_p(root, path), mode, dev)

    await check_snapshots(
        sn,
        mounter,
        work,
        apply(
            create_file("/x", b"data"),
            xattr("/x", "user.one", b"1"),
            mknod("/null", stat.S_IFCHR | 0o666, os.makedev(1, 3)),
            mknod("/fifo", stat.S_IFIFO | 0o600),
        ),
        apply(xattr("/x", "user.two", b"2"), create_dir("/d"), xattr("/d", "user.dir", b"d")),
    )


async def test_deep_chain(sn: Snapshotter, mounter: Mounter, work: Path) -> None:
    layers = [create_file("/bottom", b"way at the bottom\n")]
    for i in range(1, 8):
        layers.append(
            apply(
                create_file("/overwriteme", f"{i} WAS HERE!\n".encode()),
                create_file(f"/file-{i}", b"same\n"),
                *([remove_all(f"/file-{i - 2}")] if i > 2 else []),
            )
        )
    await check_snapshots(sn, mounter, work, *layers)


async def test_128_layers_under_a_long_root(
    opener: Opener, mounter: Mounter, work: Path, tmp_path: Path
) -> None:
    # A root this long makes 128 absolute lowerdirs ~60 KiB: far past one page.
    root = tmp_path / ("long-" + "r" * 200) / ("s" * 200) / "root"
    sn = await opener(root)
    flat = work / "flat"
    flat.mkdir()
    flat.chmod(0o755)
    appliers = [
        apply(
            create_file("/bottom", b"way at the bottom\n", 0o777),
            create_file("/overwriteme", b"FIRST!\n", 0o777),
            create_dir("/ADDHERE"),
            create_dir("/ONLYME"),
            create_file("/ONLYME/bottom", b"bye!\n", 0o777),
        )
    ]
    for i in range(1, 128):
        appliers.append(
            apply(
                create_file("/overwriteme", f"{i} WAS HERE!\n".encode(), 0o777),
                create_file(f"/ADDHERE/file-{i}", b"same\n", 0o755),
                remove_all("/ONLYME"),
                create_dir("/ONLYME"),
                create_file(f"/ONLYME/file-{i}", b"only me!\n", 0o777),
            )
        )
    parent = ""
    for i, applier in enumerate(appliers):
        key = f"prepare-layer-{i}"
        target = mounter.mount(await sn.prepare(key, parent, labels=LABELS), key)
        if i % 32 == 0 or i == len(appliers) - 1:
            assert tree_of(target) == tree_of(str(flat)), f"layer {i}"
        applier(target)
        applier(str(flat))
        mounter.umount(target)
        os.rmdir(target)
        parent = f"committed-{i}"
        await sn.commit(parent, key, labels=LABELS)
    view = mounter.mount(await sn.view("fullview", parent), "fullview")
    assert tree_of(view) == tree_of(str(flat))
    mounter.umount(view)
    # And an active snapshot on top of all 128.
    target = mounter.mount(await sn.prepare("top", parent), "top")
    assert tree_of(target) == tree_of(str(flat))


# -- keys, usage, restart, cleanup ---------------------------------------------------------


ODD_KEYS = [
    "extract-123 sha256:abc",
    "/abs/dir",
    "../../../../../../etc/passwd",
    "..",
    ".",
    "a/../../b",
    "default/12/sha256:ffff",
    "with\nnewline and\ttab",
    "ключ ✓",
    "k" * 1000,
]


async def test_odd_keys(sn: Snapshotter, mounter: Mounter, tmp_path: Path) -> None:
    before = sorted(os.listdir(tmp_path))
    parent = ""
    for i, key in enumerate(ODD_KEYS):
        mounts = await sn.prepare(key, parent, labels={"i": str(i)})
        target = mounter.mount(mounts, f"m{i}")
        create_file(f"/f{i}", str(i).encode())(target)
        mounter.umount(target)
        name = key + " committed"
        await sn.commit(name, key)
        info = await sn.stat(name)
        assert (info.name, info.parent, info.kind) == (name, parent, Kind.COMMITTED)
        parent = name
    for key in ODD_KEYS:
        await sn.view(key, parent)
        assert (await sn.stat(key)).kind == Kind.VIEW
    # Nothing was created outside the root (and the mount targets made by the test).
    assert sorted(os.listdir(tmp_path)) == before
    assert "abs" not in os.listdir("/")
    names = {i.name async for i in sn.walk()}
    assert names == set(ODD_KEYS) | {k + " committed" for k in ODD_KEYS}
    view = mounter.mount(await sn.mounts(ODD_KEYS[0]), "view")
    assert sorted(os.listdir(view)) == sorted(f"f{i}" for i in range(len(ODD_KEYS)))
    mounter.umount(view)
    for key in ODD_KEYS:
        await sn.remove(key)
    for key in reversed(ODD_KEYS):
        await sn.remove(key + " committed")
    assert [i async for i in sn.walk()] == []


async def test_usage(sn: Snapshotter, mounter: Mounter) -> None:
    with pytest.raises(NotFound):
        await sn.usage("missing")
    target = mounter.mount(await sn.prepare("a", ""), "a")
    empty = await sn.usage("a")
    assert empty.inodes <= 1
    os.mkdir(os.path.join(target, "dir"))
    create_file("/dir/big", b"x" * (1 << 20))(target)
    grown = await sn.usage("a")
    assert grown.size >= empty.size + (1 << 20)
    assert grown.inodes >= empty.inodes + 2
    link("/dir/big", "/dir/again")(target)
    # A hard link is the same inode and the same blocks.
    assert await sn.usage("a") == grown
    mounter.umount(target)
    await sn.commit("c", "a")
    assert await sn.usage("c") == grown

    # A child's usage excludes its parent's.
    target = mounter.mount(await sn.prepare("child", "c"), "child")
    assert (await sn.usage("child")).size < 1 << 20
    create_file("/small", b"y" * 100)(target)
    assert (await sn.usage("child")).size < 1 << 20
    mounter.umount(target)
    await sn.view("v", "c")
    assert await sn.usage("v") == Usage(0, 0)


async def test_restart_sees_the_same_snapshots(
    opener: Opener, mounter: Mounter, tmp_path: Path
) -> None:
    sn = await opener()
    target = mounter.mount(await sn.prepare("l1-tmp", "", labels={"x": "1"}), "l1")
    create_file("/one", b"1")(target)
    mounter.umount(target)
    await sn.commit("l1", "l1-tmp", labels={"x": "1"})
    active_mounts = await sn.prepare("ctr", "l1", labels={"y": "2"})
    await sn.view("v", "l1")
    infos = sorted([i async for i in sn.walk()], key=lambda i: i.name)
    usage = await sn.usage("l1")
    await sn.close()
    with pytest.raises(FailedPrecondition):
        await sn.stat("l1")

    again = await opener()
    assert sorted([i async for i in again.walk()], key=lambda i: i.name) == infos
    assert await again.usage("l1") == usage
    assert await again.mounts("ctr") == active_mounts
    target = mounter.mount(active_mounts, "ctr")
    assert os.listdir(target) == ["one"]
    create_file("/two", b"2")(target)
    mounter.umount(target)
    await again.commit("l2", "ctr")
    await again.prepare("l3", "l2")
    # Keys freed before the restart stay free; new snapshots do not collide.
    await again.remove("v")
    await again.view("v", "l2")
    target = mounter.mount(await again.mounts("v"), "v")
    assert sorted(os.listdir(target)) == ["one", "two"]


async def test_cleanup_keeps_live_snapshots(sn: Snapshotter, mounter: Mounter) -> None:
    target = mounter.mount(await sn.prepare("a", ""), "a")
    create_file("/kept", b"yes")(target)
    mounter.umount(target)
    await sn.commit("c", "a")
    await sn.prepare("gone", "c")
    await sn.remove("gone")
    await sn.prepare("active", "c")
    await sn.cleanup()
    await sn.cleanup()
    target = mounter.mount(await sn.mounts("active"), "active")
    assert os.listdir(target) == ["kept"]


async def test_concurrent_prepares(sn: Snapshotter) -> None:
    await sn.prepare("base-a", "")
    await sn.commit("base", "base-a")
    keys = [f"ctr-{i}" for i in range(20)]
    results = await asyncio.gather(*(sn.prepare(k, "base") for k in keys))
    assert len({repr(m) for m in results}) == len(keys)
    # Racing for one key: exactly one wins.
    outcomes = await asyncio.gather(
        *(sn.prepare("contested", "base") for _ in range(5)), return_exceptions=True
    )
    assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
    assert all(isinstance(o, AlreadyExists) for o in outcomes if isinstance(o, BaseException))


async def test_close_twice(sn: Snapshotter) -> None:
    await sn.prepare("p", "")
    await sn.commit("n", "p")
    await sn.remove("n")
    await sn.close()
    await sn.close()
