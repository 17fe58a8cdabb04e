"""Build contexts kept between builds, so that a client sends only what changed (a synced context).

    store = ContextStore(root / "build-contexts", keep=8)
    sync = store.begin("default", key, entries, work / "context")   # work/context: the build's tree
    send_to_client(sync.wanted)                 # indexes into `entries`: what to send as a tar
    sync.apply(tar_path, limits, cancel)       # those entries; then the tree is the whole context
    ... the build reads work/context ...
    store.end(sync)                             # the tree goes back to the store for the next build

The client describes its context (what .dockerignore leaves in) as a manifest, an entry per
file, directory, symlink or FIFO in walk order (parents first): its path, st_mode, size, mtime in
ns, a symlink's target, and for a file with several links the path of its group's first link.
The store keeps, per (namespace, key), the tree the last build of that key ended with and the
manifest it was made from. `begin` moves that tree to the build's directory, removes what the new
manifest no longer has (or has as another type), and wants every entry whose description is new
or differs; every link of a hard-link group is wanted when one is, so the tar carries the group
whole. `apply` takes only the wanted entries, each of its manifest type (nothing else may come in
this way), then sets the times of the directories it or the removals touched as the whole tar
would have. The tree is then what the whole context sent as a tar gives (the client's tar
carries modes, whole-second mtimes and owners 0:0; tests/unit/test_contextstore.py compares the
two after random changes).

Trust: a description is the client's word, as the tar is; a client that lies about one gets a
context that differs from its directory, as it would by sending another tar. The store keys by
namespace and the client's key, so builds of other directories do not meet. A key's tree serves
one build at a time: a second build of the same key while one runs gets an empty tree (it is
sent everything) that is not kept. A tree is kept only when its sync completed; a build that
fails later still returns it (its content is the client's, whatever the build did: steps only
read the context). A daemon that dies while a tree is out loses that tree: its manifest is
removed before the tree leaves, so the store never claims a tree it lacks. The least recently
used trees beyond `keep` are removed; `prune` removes a namespace's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from dockyard_common.errors import DockyardError, Internal, InvalidArgument, ResourceExhausted
from dockyard_common.rootpath import NotADirectory, RootDir, clean_name
from supervisor.archive.apply import WHITEOUT_PREFIX, apply_layer
from supervisor.archive.context import ContextChecker, ContextLimits, ContextStats
from supervisor.build.cachekey import SourceMemo

log = logging.getLogger("dockyard.build.context")

_TREE = "tree"
_MANIFEST = "manifest.json"
_MANIFEST_OUT = "manifest.out"  # the manifest while its tree is out (claims nothing)
_VERSION = 1
# The kinds a context may hold (devices are refused, as in a context sent whole).
KINDS = (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO)
DEFAULT_LIMITS = ContextLimits()


@dataclass(frozen=True)
class ContextEntry:
    path: str  # relative, "/"-separated, clean ("a/b", never "./a" or "a/")
    mode: int  # st_mode: kind and permission bits
    size: int = 0  # a file's
    mtime_ns: int = 0
    linkname: str = ""  # a symlink's target
    link_group: str = ""  # a file with several links: the path of its group's first entry

    @property
    def kind(self) -> int:
        return stat.S_IFMT(self.mode)

    def signature(self) -> tuple[int, int, int, str, str]:
        """What decides whether the kept copy is still this entry."""
        return (self.mode, self.size if self.kind == stat.S_IFREG else 0, self.mtime_ns, self.linkname,
                self.link_group)


def check_manifest(entries: Sequence[ContextEntry], limits: ContextLimits = DEFAULT_LIMITS) -> None:
    """Refuse a manifest a tree cannot be made from: a name that is not clean or leaves the
    context, one given twice, a device or unknown kind, a `.wh.` name (see archive/context), or
    an entry whose parent is not a directory listed before it."""
    if len(entries) > limits.max_entries:
        raise InvalidArgument(f"build context: more than {limits.max_entries} entries")
    dirs: set[str] = {""}
    seen: set[str] = set()
    for e in entries:
        what = f"build context: entry {e.path!r}"
        if "\0" in e.path or "\0" in e.linkname or "\0" in e.link_group:
            raise InvalidArgument(f"{what}: contains a NUL byte")
        parts = clean_name(e.path, what="build context: entry", escapes=" leaves the context")
        if not parts or "/".join(parts) != e.path:
            raise InvalidArgument(f"{what}: not a clean relative path")
        if any(p.startswith(WHITEOUT_PREFIX) for p in parts):
            raise InvalidArgument(f"{what}: names starting with {WHITEOUT_PREFIX!r} are not supported")
        if e.path in seen:
            raise InvalidArgument(f"{what}: listed twice")
        seen.add(e.path)
        if e.kind not in KINDS:
            raise InvalidArgument(f"{what}: mode {e.mode:o} is not a file, directory, symlink or FIFO")
        if e.size < 0 or e.mode < 0 or e.mode > 0xFFFFFFFF:
            raise InvalidArgument(f"{what}: negative size or bad mode")
        if "/".join(parts[:-1]) not in dirs:
            raise InvalidArgument(f"{what}: its parent is not a directory listed before it")
        if e.kind == stat.S_IFDIR:
            dirs.add(e.path)
        if e.link_group and (e.kind != stat.S_IFREG or e.link_group not in seen):
            raise InvalidArgument(f"{what}: hard-link group {e.link_group!r} is not a file listed before it")


@dataclass
class ContextSync:
    """One build's use of a kept context (see the module docstring)."""

    id: str
    namespace: str
    key: str
    entries: list[ContextEntry]
    tree: Path
    wanted: list[int]
    reused: int  # entries kept from the store's copy
    kept: bool  # the tree goes back to the store at the end
    removed: list[str] = field(default_factory=list)  # paths of the old tree removed by begin
    complete: bool = False  # apply succeeded: the tree is the context
    # The COPY sources' digests in this tree (a kept one), valid across builds until a sync
    # changes what they cover (cachekey.SourceMemo).
    memo: SourceMemo | None = None
    unchanged: bool = False  # the kept tree as it was: nothing wanted, nothing removed


    def apply(self, tar_path: Path, limits: ContextLimits = DEFAULT_LIMITS,
              cancel: threading.Event | None = None) -> ContextStats:
        """`apply_stream` of the tar at `tar_path`."""
        with open(tar_path, "rb") as stream:
            return self.apply_stream(stream, limits, cancel)

    def apply_stream(self, stream: BinaryIO, limits: ContextLimits = DEFAULT_LIMITS,
                     cancel: threading.Event | None = None) -> ContextStats:
        """Write the tar of the wanted entries into the tree as it is read, each entry checked
        before it is written (InvalidArgument for one that was not wanted or is of another kind,
        or for a wanted one missing at the end). A refused or broken tar leaves the sync
        incomplete: its tree is then not kept."""
        expect = {tuple(self.entries[i].path.split("/")): self.entries[i].kind for i in self.wanted}
        checker = ContextChecker(limits, expect)
        try:
            result = apply_layer(stream, self.tree, whiteout_mode="delete", cancel=cancel, check=checker)
        except InvalidArgument as exc:
            raise InvalidArgument(str(exc).replace("invalid layer tar", "build context: not a valid tar")) from None
        count = checker.finish()
        self._restore_dir_times()
        self.complete = True
        return ContextStats(result.size, count)

    def _restore_dir_times(self) -> None:
        """The directories whose entries changed got new mtimes from those changes: set them
        back to what the manifest says (as a whole tar sets them: whole seconds, atime = mtime)."""
        by_path = {e.path: e for e in self.entries}
        touched = {p.rpartition("/")[0] for p in self.removed}
        touched.update(self.entries[i].path.rpartition("/")[0] for i in self.wanted)
        touched.update(self.entries[i].path for i in self.wanted if self.entries[i].kind == stat.S_IFDIR)
        touched.discard("")
        with RootDir(self.tree, "the build context") as root:
            for path in sorted(touched):
                e = by_path.get(path)
                if e is None or e.kind != stat.S_IFDIR:
                    continue
                head, _, name = path.rpartition("/")
                parent = root.resolve_dir(head.split("/") if head else [])
                if parent is None:
                    continue
                try:
                    ns = e.mtime_ns // 1_000_000_000 * 1_000_000_000
                    os.utime(name, ns=(ns, ns), dir_fd=parent.fd, follow_symlinks=False)
                finally:
                    os.close(parent.fd)


@dataclass
class _Kept:
    id: str
    namespace: str | None = None  # None: unreadable (a tree being put back, or a torn one)
    used: float = 0.0  # the manifest's mtime: when the tree was last put back


class ContextStore:
    """Kept build contexts under `root` (see the module docstring); thread-safe."""

    def __init__(self, root: Path, keep: int = 8) -> None:
        self.root = root
        self.keep = keep
        self._busy: set[str] = set()
        self._memos: dict[str, SourceMemo] = {}  # of the kept trees, by id
        self._lock = threading.Lock()

    def begin(self, namespace: str, key: str, entries: list[ContextEntry], tree: Path,
              limits: ContextLimits = DEFAULT_LIMITS) -> ContextSync:
        """Make `tree` (which must not exist) from the kept copy of (namespace, key), minus what
        `entries` no longer has; the returned sync says which entries to send."""
        check_manifest(entries, limits)
        cid = context_id(namespace, key)
        with self._lock:
            kept = self.keep > 0 and cid not in self._busy
            if kept:
                self._busy.add(cid)
        try:
            old = self._take(cid, tree) if kept else None
            with self._lock:
                memo = self._memos.pop(cid, None)  # of the kept tree: only good with that tree
            if old is None:
                memo = None
            if old is None:
                tree.mkdir(mode=0o700)
                old = {}
            removed = _remove_stale(tree, old, entries)
            wanted = _wanted(old, entries)
            if kept:
                memo = memo or SourceMemo()
                memo.invalidate([*removed, *(entries[i].path for i in wanted)])
        except BaseException:
            self._release(cid, kept)
            raise
        unchanged = bool(old) and not wanted and not removed and len(old) == len(entries)
        return ContextSync(cid, namespace, key, entries, tree, wanted, len(entries) - len(wanted), kept, removed,
                           memo=memo, unchanged=unchanged)

    def end(self, sync: ContextSync) -> None:
        """The build is over: keep its tree for the next build of its key (when it may be kept
        and its sync completed), else leave it to the caller's clean-up."""
        try:
            if sync.kept and sync.complete:
                self._put(sync)
                if sync.memo is not None:
                    with self._lock:
                        self._memos[sync.id] = sync.memo
                self._evict(keep_id=sync.id)
        except OSError as exc:  # a full disk: the next build sends everything
            log.warning("build context %s not kept: %s", sync.id, exc)
        finally:
            self._release(sync.id, sync.kept)

    def prune(self, namespace: str, unused_for: float = 0.0) -> list[str]:
        """Remove the namespace's kept contexts not in use (and not used for `unused_for`
        seconds); returns their ids."""
        before = time.time() - unused_for
        return [k.id for k in self._listing()
                if k.namespace == namespace and k.used <= before and self._remove_if_idle(k.id)]

    # -- the store's directories ------------------------------------------------------------

    def _take(self, cid: str, tree: Path) -> dict[str, ContextEntry] | None:
        """Move the kept tree of `cid` to `tree` and return its manifest; None when there is none
        (or it cannot be read: then it is removed)."""
        d = self.root / cid
        try:
            with open(d / _MANIFEST, "rb") as f:
                raw = json.loads(f.read())
            if raw.get("version") != _VERSION:
                raise ValueError(f"version {raw.get('version')!r}")
            old = {e.path: e for e in (ContextEntry(*row) for row in raw["entries"])}
            # From here on the store claims no tree for cid; an unchanged tree takes it back (_put).
            os.rename(d / _MANIFEST, d / _MANIFEST_OUT)
            os.rename(d / _TREE, tree)
            return old
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("build context %s: the kept copy is unusable (%s); it is sent whole", cid, exc)
        shutil.rmtree(d, ignore_errors=True)
        return None

    def _put(self, sync: ContextSync) -> None:
        d = self.root / sync.id
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(d / _TREE)
        os.rename(sync.tree, d / _TREE)
        # Last: the manifest claims the tree only once it is there.
        if sync.unchanged:  # the manifest it came with still describes it (a rebuild)
            with contextlib.suppress(FileNotFoundError):
                os.rename(d / _MANIFEST_OUT, d / _MANIFEST)
                os.utime(d / _MANIFEST)  # used now (the least recently used go first)
                return
        doc = {"version": _VERSION, "namespace": sync.namespace, "key": sync.key,
               "entries": [[e.path, e.mode, e.size, e.mtime_ns, e.linkname, e.link_group] for e in sync.entries]}
        tmp = d / f"{_MANIFEST}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.rename(tmp, d / _MANIFEST)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(d / _MANIFEST_OUT)

    def _listing(self) -> list[_Kept]:
        out = []
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        for cid in names:
            kept = _Kept(cid)
            try:
                path = self.root / cid / _MANIFEST
                kept.used = os.stat(path).st_mtime
                with open(path, "rb") as f:
                    kept.namespace = _namespace_of(f.read(4096))  # written before the entries
            except OSError:
                pass
            out.append(kept)
        return out

    def _evict(self, keep_id: str) -> None:
        for kept in sorted(self._listing(), key=lambda k: k.used, reverse=True)[self.keep:]:
            if kept.id != keep_id:
                self._remove_if_idle(kept.id)

    def _remove_if_idle(self, cid: str) -> bool:
        with self._lock:
            if cid in self._busy:
                return False
            self._busy.add(cid)
        try:
            with self._lock:
                self._memos.pop(cid, None)
            shutil.rmtree(self.root / cid, ignore_errors=True)
            return True
        finally:
            self._release(cid, True)

    def _release(self, cid: str, held: bool) -> None:
        if held:
            with self._lock:
                self._busy.discard(cid)


def context_id(namespace: str, key: str) -> str:
    return hashlib.sha256(f"{namespace}\0{key}".encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _namespace_of(head: bytes) -> str | None:
    marker = b'"namespace":'
    at = head.find(marker)
    if at < 0:
        return None
    with contextlib.suppress(ValueError, json.JSONDecodeError):
        end = head.index(b',"key"', at)
        value = json.loads(head[at + len(marker):end])
        return value if isinstance(value, str) else None
    return None


def _wanted(old: dict[str, ContextEntry], entries: Sequence[ContextEntry]) -> list[int]:
    wanted = {i for i, e in enumerate(entries)
              if (o := old.get(e.path)) is None or o.signature() != e.signature()}
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        if e.link_group:
            groups.setdefault(e.link_group, []).append(i)
    index = {e.path: i for i, e in enumerate(entries)} if groups else {}
    for first, members in groups.items():
        whole = [index[first], *members]
        if any(i in wanted for i in whole):
            wanted.update(whole)
    return sorted(wanted)


def _remove_stale(tree: Path, old: dict[str, ContextEntry], entries: Iterable[ContextEntry]) -> list[str]:
    """Remove from `tree` what the old manifest has and the new one does not, or has as another
    kind (a directory's whole subtree goes with it); returns the paths removed."""
    new = {e.path: e.kind for e in entries}
    stale = [p for p, e in old.items() if new.get(p) != e.kind]
    removed = []
    started = time.monotonic()
    with RootDir(tree, "the build context") as root:
        for path in sorted(stale):  # a parent before what it held: its removal took them
            head, _, name = path.rpartition("/")
            try:
                parent = root.resolve_dir(head.split("/") if head else [])
            except NotADirectory:
                parent = None
            if parent is None:  # went with a directory removed before it
                continue
            try:
                st = os.stat(name, dir_fd=parent.fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    shutil.rmtree(name, dir_fd=parent.fd)
                else:
                    os.unlink(name, dir_fd=parent.fd)
                removed.append(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _error(f"build context: removing {path!r}", exc) from None
            finally:
                os.close(parent.fd)
    if removed:
        log.debug("build context: %d stale entries removed in %.3f s", len(removed), time.monotonic() - started)
    return removed


def _error(what: str, exc: OSError) -> DockyardError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"{what}: {exc.strerror}")
    return Internal(f"{what}: {exc.strerror or exc}")

