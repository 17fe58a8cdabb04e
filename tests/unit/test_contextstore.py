"""Synced build contexts (supervisor/build/contextstore.py): after any change to a directory, the
tree the daemon makes from its kept copy plus the changed entries equals the tree the whole
context sent as a tar gives; bad manifests and tars are refused and nothing half-made is kept."""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock.build import _scan_context, write_context
from dockyard_common.errors import InvalidArgument
from supervisor.archive.context import extract_context
from supervisor.build.contextstore import ContextEntry, ContextStore, ContextSync, check_manifest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="extraction sets owners 0:0")


def entries_of(root: Path) -> tuple[list[str], list[ContextEntry]]:
    paths, pbs = _scan_context(root, None)
    return paths, [ContextEntry(e.path, e.mode, e.size, e.mtime_ns, e.linkname, e.link_group) for e in pbs]


def full_tree(root: Path, out: Path) -> Path:
    """What the whole context sent as a tar gives."""
    paths, _ = entries_of(root)
    tar = out.with_suffix(".tar")
    with open(tar, "wb") as f:
        write_context(root, paths, f)
    out.mkdir(mode=0o700)
    extract_context(tar, out)
    tar.unlink()
    return out


def sync_once(store: ContextStore, root: Path, work: Path, key: str = "k") -> ContextSync:
    """One synced build's context: begin, send what is wanted, apply (the caller ends it)."""
    paths, entries = entries_of(root)
    sync = store.begin("ns", key, entries, work / "context")
    tar = work / "changes.tar"
    with open(tar, "wb") as f:
        write_context(root, [paths[i] for i in sync.wanted], f)
    sync.apply(tar)
    return sync


def snapshot(tree: Path) -> dict[str, tuple[object, ...]]:
    """Everything of a tree a build can see, root excluded; hard links as groups of paths."""
    out: dict[str, tuple[object, ...]] = {}
    groups: dict[tuple[int, int], list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, tree)
            st = os.lstat(full)
            extra: object = None
            if stat.S_ISREG(st.st_mode):
                extra = Path(full).read_bytes()
                groups.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(full)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, extra)  # atime: our reads move it
    for members in groups.values():
        for rel in members:
            out[rel] = (*out[rel], tuple(sorted(members)))
    return out


def make_tree(root: Path, rng: random.Random) -> None:
    root.mkdir()
    for d in ("a", "a/b", "c", "c/d/e"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for i in range(40):
        d = rng.choice(["", "a", "a/b", "c", "c/d", "c/d/e"])
        (root / d / f"f{i}").write_bytes(os.urandom(rng.randrange(0, 300)))
    (root / "top").write_text("top")
    os.symlink("../top", root / "a" / "link")
    os.link(root / "top", root / "a" / "hard")
    os.mkfifo(root / "c" / "fifo")
    os.chmod(root / "a" / "b", 0o750)


def mutate(root: Path, rng: random.Random, step: int) -> None:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    dirs = [p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()]
    kind = step % 12
    if kind == 0 and files:  # the same size, new content, a new mtime
        f = rng.choice(files)
        data = f.read_bytes()
        f.write_bytes(bytes(b ^ 0xFF for b in data))
    elif kind == 1 and files:
        rng.choice(files).unlink()
    elif kind == 2 and dirs:
        shutil.rmtree(rng.choice(dirs))
    elif kind == 3:
        d = root / f"new{step}" / "deep"
        d.mkdir(parents=True)
        (d / "x").write_text(str(step))
    elif kind == 4 and files:
        os.chmod(rng.choice(files), 0o600)
    elif kind == 5 and files:  # a file becomes a directory
        f = rng.choice(files)
        f.unlink()
        f.mkdir()
        (f / "inside").write_text("now a dir")
    elif kind == 6 and dirs:  # a directory becomes a symlink
        d = rng.choice(dirs)
        shutil.rmtree(d)
        os.symlink("/etc", d)
    elif kind == 7 and files:  # a new hard link to an unchanged file
        f = rng.choice(files)
        os.link(f, root / f"hl{step}")
    elif kind == 8 and files:  # one link of a group replaced: the group splits
        linked = [f for f in files if f.stat().st_nlink > 1] or files
        f = rng.choice(linked)
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data)
    elif kind == 9 and dirs:
        d = rng.choice(dirs)
        os.utime(d, (1_000_000_000, 1_000_000_000))
    elif kind == 10 and files:
        f = rng.choice(files)
        f.rename(f.with_name(f.name + ".moved"))
    elif kind == 11:
        (root / ".dockerignore").write_text(rng.choice(["a\n", "c/d\n", "*.moved\n", ""]))


@pytest.fixture
def tmp(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_synced_equals_sent_whole_after_random_changes(tmp: Path) -> None:
    rng = random.Random(20261206)
    root = tmp / "ctx"
    make_tree(root, rng)
    store = ContextStore(tmp / "store", keep=4)
    sent_partly = 0
    for step in range(60):
        work = tmp / f"work{step}"
        work.mkdir()
        sync = sync_once(store, root, work)
        try:
            expected = snapshot(full_tree(root, tmp / f"full{step}"))
            assert snapshot(sync.tree) == expected, f"step {step}"
            if step and 0 < len(sync.wanted) < len(sync.entries):
                sent_partly += 1
        finally:
            store.end(sync)
        shutil.rmtree(work)
        shutil.rmtree(tmp / f"full{step}")
        mutate(root, rng, step)
    assert sent_partly > 30  # the store did its job: most builds sent only some entries


def test_unchanged_context_sends_nothing_and_hard_links_go_as_groups(tmp: Path) -> None:
    root = tmp / "ctx"
    (root / "d").mkdir(parents=True)
    (root / "one").write_text("1")
    os.link(root / "one", root / "d" / "two")
    (root / "other").write_text("x")
    store = ContextStore(tmp / "store")
    for want in (None, 0):
        work = tmp / f"w{want}"
        work.mkdir()
        sync = sync_once(store, root, work)
        assert len(sync.wanted) == (len(sync.entries) if want is None else 0)
        store.end(sync)
    # A new link to "one": both old links are sent again, so the tar holds the group whole.
    os.link(root / "one", root / "three")
    work = tmp / "w3"
    work.mkdir()
    sync = sync_once(store, root, work)
    wanted = {sync.entries[i].path for i in sync.wanted}
    assert {"one", "d/two", "three"} <= wanted and "other" not in wanted
    assert os.stat(sync.tree / "three").st_ino == os.stat(sync.tree / "one").st_ino
    store.end(sync)


def test_a_second_build_of_the_same_key_gets_its_own_tree(tmp: Path) -> None:
    root = tmp / "ctx"
    root.mkdir()
    (root / "f").write_text("x")
    store = ContextStore(tmp / "store")
    (tmp / "w1").mkdir()
    first = sync_once(store, root, tmp / "w1")
    store.end(first)
    (tmp / "w2").mkdir()
    (tmp / "w3").mkdir()
    busy = sync_once(store, root, tmp / "w2")
    other = sync_once(store, root, tmp / "w3")  # while `busy` holds the kept tree
    assert busy.kept and not busy.wanted
    assert not other.kept and len(other.wanted) == len(other.entries)
    store.end(other)
    store.end(busy)
    assert not (tmp / "w2" / "context").exists()  # back in the store
    assert (tmp / "w3" / "context").exists()  # never kept: the caller removes it


def test_a_failed_apply_is_not_kept_and_a_lost_tree_is_sent_whole(tmp: Path) -> None:
    root = tmp / "ctx"
    root.mkdir()
    (root / "f").write_text("x")
    (root / "g").write_text("y")
    store = ContextStore(tmp / "store")
    (tmp / "w1").mkdir()
    store.end(sync_once(store, root, tmp / "w1"))
    (root / "f").write_text("changed")
    (tmp / "w2").mkdir()
    _, entries = entries_of(root)
    sync = store.begin("ns", "k", entries, tmp / "w2" / "context")
    assert [entries[i].path for i in sync.wanted] == ["f"]
    bad = tmp / "w2" / "bad.tar"
    with open(bad, "wb") as f:
        write_context(root, ["g"], f)  # not what was asked for
    with pytest.raises(InvalidArgument, match="not asked for"):
        sync.apply(bad)
    store.end(sync)
    (tmp / "w3").mkdir()
    again = sync_once(store, root, tmp / "w3")
    assert len(again.wanted) == len(again.entries)  # nothing was kept
    # A daemon that dies while a tree is out: a new store over the same directory sends all.
    fresh = ContextStore(tmp / "store")
    (tmp / "w4").mkdir()
    lost = sync_once(fresh, root, tmp / "w4")
    assert len(lost.wanted) == len(lost.entries)


def tar_of(*members: tuple[str, bytes | None, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, (data or b"").decode()
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


@pytest.mark.parametrize("tar, message", [
    (tar_of(("f", None, "dir")), "not of the kind"),
    (tar_of(("f", b"x", "file"), ("f", b"y", "file")), "sent twice"),
    (tar_of(), "were not sent"),
])
def test_bad_tars_are_refused(tmp: Path, tar: bytes, message: str) -> None:
    store = ContextStore(tmp / "store")
    (tmp / "w").mkdir()
    sync = store.begin("ns", "k", [ContextEntry("f", stat.S_IFREG | 0o644, 1, 0)], tmp / "w" / "context")
    (tmp / "w" / "t.tar").write_bytes(tar)
    with pytest.raises(InvalidArgument, match=message):
        sync.apply(tmp / "w" / "t.tar")
    store.end(sync)


REG, DIR, LNK = stat.S_IFREG | 0o644, stat.S_IFDIR | 0o755, stat.S_IFLNK | 0o777


@pytest.mark.parametrize("entries, message", [
    ([ContextEntry("../x", REG)], "leaves the context"),
    ([ContextEntry("a/../b", REG)], "not a clean"),
    ([ContextEntry("./a", REG)], "not a clean"),
    ([ContextEntry("a/b", REG)], "parent is not a directory"),
    ([ContextEntry("a", LNK, linkname="/etc"), ContextEntry("a/passwd", REG)], "parent is not a directory"),
    ([ContextEntry("a", REG), ContextEntry("a", REG)], "listed twice"),
    ([ContextEntry("dev", stat.S_IFCHR | 0o600)], "not a file, directory"),
    ([ContextEntry(".wh.x", REG)], "names starting with"),
    ([ContextEntry("x", REG, link_group="y")], "hard-link group"),
    ([ContextEntry("d", DIR, link_group="d")], "hard-link group"),
    ([ContextEntry("a\0b", REG)], "NUL"),
])
def test_bad_manifests_are_refused(entries: list[ContextEntry], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_manifest(entries)


def test_least_recently_used_contexts_go_past_the_limit_and_prune_removes_a_namespaces(tmp: Path) -> None:
    root = tmp / "ctx"
    root.mkdir()
    (root / "f").write_text("x")
    store = ContextStore(tmp / "store", keep=2)
    for i, key in enumerate(("k1", "k2", "k3")):
        (tmp / f"w{i}").mkdir()
        sync = sync_once(store, root, tmp / f"w{i}", key=key)
        store.end(sync)
        t = 1_700_000_000 + i
        for manifest in (tmp / "store").glob("*/manifest.json"):
            if manifest.parent.name == sync.id:
                os.utime(manifest, (t, t))
    assert len(list((tmp / "store").iterdir())) == 2
    assert store.prune("other-namespace") == []
    assert len(store.prune("ns")) == 2
    assert list((tmp / "store").iterdir()) == []


def test_concurrent_begins_of_one_key_share_nothing(tmp: Path) -> None:
    root = tmp / "ctx"
    root.mkdir()
    (root / "f").write_text("x")
    store = ContextStore(tmp / "store")
    (tmp / "w").mkdir()
    store.end(sync_once(store, root, tmp / "w"))
    results: list[ContextSync] = []
    barrier = threading.Barrier(4)

    def one(i: int) -> None:
        (tmp / f"c{i}").mkdir()
        barrier.wait()
        results.append(sync_once(store, root, tmp / f"c{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for s in results if s.kept) == 1
    for s in results:
        assert (s.tree / "f").read_text() == "x"
        store.end(s)


@pytest.mark.parametrize("changed, gone", [
    (["a/b/f"], {"", "a", "a/b", "a/b/f"}),  # at or above the change
    (["a"], {"", "a", "a/b", "a/b/f", "a/bc"}),  # below a replaced parent
    (["c"], {""}),
    ([], set()),
])
def test_source_memo_drops_what_a_change_covers(changed: list[str], gone: set[str]) -> None:
    from supervisor.build.cachekey import SourceMemo
    memo = SourceMemo()
    keys = ["", "a", "a/b", "a/b/f", "other", "a/bc"]
    for k in keys:
        memo.put(k, False, f"d-{k}")
    memo.invalidate(changed)
    assert {k for k in keys if memo.get(k, False) is None} == gone
