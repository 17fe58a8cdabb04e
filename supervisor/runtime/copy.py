"""Files in and out of a container: the daemon's half of `docker cp` (`dock cp`).

Contract
--------
`ContainerFiles(containers, tasks, snapshots, tmp_root)`:

- `stat(ns, cid, path, follow)`: the `PathStat` of a container path (NotFound when missing).
- `copy_from(ns, cid, path, follow)`: an async iterator whose first item is the `PathStat` of the
  path and the rest the bytes of a tar of it. The top entry is named after the path's last
  component (`.` for a path ending in `/.`, or for `/`); a directory's contents follow below it.
- `copy_to(ns, cid, path, chunks, copy_uid_gid)`: extract the tar `chunks` into the existing
  directory `path`; the owners are the tar's with `copy_uid_gid`, else the container's root.

Paths: absolute, or relative to the container's `/`. A trailing `/` asks for a directory
(InvalidArgument otherwise); a trailing `/.` for a directory's contents. `follow` follows a
symlink at the end of the path (docker cp -L); intermediate symlinks are always followed.

Which tree: a task that runs (or is paused) is reached through `/proc/<init>/root`, so the
paths are the container's own view, its volumes and tmpfs mounts included (pseudo filesystems
such as /proc and /sys are left out of archives). A container without a live task has its
snapshot mounted for the call (read-only for reading), or, while a stopped task still holds it,
its bundle's rootfs is used.

Safety: every path resolves through `dockyard_common.rootpath.RootDir` (symlinks, absolute
ones included, are followed inside the container's root; `..` stops at it); archives are
read with `*at` calls that never follow a symlink; extraction is the layer applier's
(`supervisor.archive.apply`, whiteout handling off), which writes nothing outside its target
directory, whatever names or symlinks the tar or the container hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from dockyard_common.aio import BlockingReader, uninterrupted
from dockyard_common.errors import (
    Cancelled,
    DockyardError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    from_os_error,
)
from dockyard_common.fdwait import readable
from dockyard_common.jsonutil import json_value
from dockyard_common.mountinfo import mountinfo
from dockyard_common.mounts import mounted
from dockyard_common.rootpath import MAX_SYMLINKS, Canonical, NotADirectory, RootDir
from dockyard_common.types import Container, Status
from supervisor.archive.apply import apply_layer
from supervisor.archive.tarwrite import (
    TYPE_BLOCK,
    TYPE_CHAR,
    TYPE_DIR,
    TYPE_FIFO,
    TYPE_LINK,
    TYPE_REG,
    TYPE_SYMLINK,
    TarHeader,
    TarWriter,
)
from supervisor.metadata.containers import ContainerStore
from supervisor.metadata.snapshots import SnapshotStore
from supervisor.runtime.manager import TaskManager

log = logging.getLogger(__name__)
T = TypeVar("T")

# Filesystems whose files are the kernel's views, not data: an archive does not descend into them.
PSEUDO_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs",
                       "tracefs", "bpf", "configfs", "fusectl", "pstore", "binfmt_misc"})
CHUNK = 256 << 10  # bytes per message of an archive
_WINDOW = 8  # chunks in flight between the archive's thread and the stream
_NS = 1_000_000_000
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPEN_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_LIVE = (Status.RUNNING, Status.PAUSED, Status.PAUSING)


@dataclass(frozen=True)
class PathStat:
    """A path's stat, as Docker's X-Docker-Container-Path-Stat carries it (mode: st_mode)."""

    name: str
    size: int
    mode: int
    mtime_ns: int
    link_target: str = ""
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class _Root:
    """An open container root for one call: its resolver, pseudo filesystems to leave out,
    and the host ids of the container's root user."""

    dir: RootDir
    skip: frozenset[Canonical]
    owner: tuple[int, int]


@dataclass
class _Target:
    """A resolved path: its parent directory (an O_PATH fd, ours to close) and name, or for a
    directory named by `..`/`/` the directory itself (`name` None)."""

    parent_fd: int
    name: str | None
    st: os.stat_result
    canonical: Canonical

    def close(self) -> None:
        os.close(self.parent_fd)


class ContainerFiles:
    def __init__(self, containers: ContainerStore, tasks: TaskManager, snapshots: SnapshotStore,
                 tmp_root: Path) -> None:
        self.containers = containers
        self.tasks = tasks
        self.snapshots = snapshots
        self.tmp_root = tmp_root

    async def stat(self, ns: str, cid: str, path: str, follow: bool) -> PathStat:
        async with self._root(ns, cid, writable=False) as root:
            return await _in_thread(path, _stat_path, root, path, follow)

    async def copy_from(self, ns: str, cid: str, path: str, follow: bool) -> AsyncGenerator[PathStat | bytes, None]:
        async with self._root(ns, cid, writable=False) as root:
            target = await _in_thread(path, _resolve, root.dir, path, follow)
            try:
                yield _path_stat(target, path)
                top = _top_name(path, target)
                async for chunk in _produced(lambda out: _write_archive(root, target, top, out)):
                    yield chunk
            finally:
                target.close()

    async def copy_to(self, ns: str, cid: str, path: str, chunks: AsyncIterator[bytes], copy_uid_gid: bool) -> None:
        container = await self.containers.get(ns, cid)
        root_spec = _spec(container).get("root")
        if isinstance(root_spec, dict) and root_spec.get("readonly") is True:
            raise FailedPrecondition(f"container {cid}: its root filesystem is read-only")
        async with self._root(ns, cid, writable=True) as root:
            dest = await _in_thread(path, _resolve_dir, root.dir, path)
            try:
                owner = None if copy_uid_gid else root.owner
                await _consumed(chunks, lambda stream, cancel: apply_layer(
                    stream, Path(f"/proc/self/fd/{dest.parent_fd}"), whiteout_mode="none", cancel=cancel,
                    owner=owner, stop_reading=cast(BlockingReader, stream).cancel))
            finally:
                dest.close()

    # -- the container's root ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _root(self, ns: str, cid: str, *, writable: bool) -> AsyncIterator[_Root]:
        container = await self.containers.get(ns, cid)
        owner = _host_root(_spec(container))
        live = await self._live_root(ns, cid)
        if live is not None:
            fd, skip = live
            try:
                with RootDir(f"/proc/self/fd/{fd}", f"the root of container {cid}") as rd:
                    yield _Root(rd, skip, owner)
            finally:
                os.close(fd)
            return
        bundle_rootfs = self._stopped_task_rootfs(ns, cid)
        if bundle_rootfs is not None:
            with RootDir(bundle_rootfs, f"the root of container {cid}") as rd:
                yield _Root(rd, frozenset(), owner)
            return
        if not container.snapshot_key or not container.snapshotter:
            raise FailedPrecondition(f"container {cid} has no snapshot, and no running task to copy through")
        mounts = await self.snapshots.mounts(ns, container.snapshotter, container.snapshot_key)
        cm = mounted(mounts, self.tmp_root, readonly=not writable)
        where = await asyncio.to_thread(cm.__enter__)
        try:
            with RootDir(where, f"the root of container {cid}") as rd:
                yield _Root(rd, frozenset(), owner)
        finally:
            await asyncio.shield(asyncio.to_thread(cm.__exit__, None, None, None))

    async def _live_root(self, ns: str, cid: str) -> tuple[int, frozenset[Canonical]] | None:
        """An O_PATH fd of the running init's root (and the pseudo filesystems mounted in it),
        or None when no init runs. The pidfd, taken first, proves the fd is that init's: a pid
        reused after the init died would otherwise hand us another process's root."""
        try:
            task = self.tasks.get(ns, cid)
        except NotFound:
            return None
        if task.deleting or not task.pid or (await task.state()).status not in _LIVE:
            return None
        try:
            pidfd = os.pidfd_open(task.pid)
        except OSError:
            return None
        try:
            fd = os.open(f"/proc/{task.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            os.close(pidfd)
            return None
        try:
            alive = not readable(pidfd, 0)
            mine = os.fstat(fd)
            host = os.stat("/")
            # An init that has not pivoted yet still sees the host's root: never serve that.
            if not alive or (mine.st_dev, mine.st_ino) == (host.st_dev, host.st_ino):
                os.close(fd)
                return None
            skip = _pseudo_mounts(task.pid)
        except OSError:
            os.close(fd)
            return None
        finally:
            os.close(pidfd)
        return fd, skip

    def _stopped_task_rootfs(self, ns: str, cid: str) -> Path | None:
        try:
            task = self.tasks.get(ns, cid)
        except NotFound:
            return None
        rootfs = task.bundle.rootfs
        return rootfs if os.path.ismount(rootfs) else None


# -- resolving paths -------------------------------------------------------------------------------


def _components(path: str) -> list[str]:
    if "\0" in path:
        raise InvalidArgument(f"path {path!r}: contains a NUL byte")
    return [c for c in path.split("/") if c not in ("", ".")]


def _wants_dir(path: str) -> bool:
    return path.endswith(("/", "/.")) or path == "."


def _resolve(rd: RootDir, path: str, follow: bool) -> _Target:
    """`path` inside the root: its parent directory and name, symlinks followed as the
    container would (the last one only with `follow`, or when the path asks for a directory)."""
    comps = _components(path)
    follow = follow or _wants_dir(path)
    for _ in range(MAX_SYMLINKS + 1):
        if not comps or comps[-1] == "..":
            fd, canonical = _resolve_parent(rd, comps, path)
            return _Target(fd, None, os.fstat(fd), canonical)
        parent_fd, canonical = _resolve_parent(rd, comps[:-1], path)
        name = comps[-1]
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            os.close(parent_fd)
            raise NotFound(f"no such file or directory in the container: {path}") from None
        except BaseException:
            os.close(parent_fd)
            raise
        if not (stat.S_ISLNK(st.st_mode) and follow):
            if _wants_dir(path) and not stat.S_ISDIR(st.st_mode):
                os.close(parent_fd)
                raise InvalidArgument(f"{path}: not a directory")
            return _Target(parent_fd, name, st, (*canonical, name))
        target = os.readlink(name, dir_fd=parent_fd)
        os.close(parent_fd)
        if not target:
            raise InvalidArgument(f"{path}: empty symbolic link")
        rest = [c for c in target.split("/") if c not in ("", ".")]
        comps = rest if target.startswith("/") else [*canonical, *rest]
    raise InvalidArgument(f"{path}: too many levels of symbolic links")


def _resolve_parent(rd: RootDir, comps: list[str], path: str) -> tuple[int, Canonical]:
    try:
        resolved = rd.resolve_dir(comps)
    except NotADirectory as exc:
        raise InvalidArgument(f"{path}: /{'/'.join(exc.canonical)} is not a directory") from None
    if resolved is None:
        raise NotFound(f"no such file or directory in the container: {path}")
    return resolved.fd, resolved.canonical


def _resolve_dir(rd: RootDir, path: str) -> _Target:
    """The existing directory `path` (all symlinks followed), opened as the apply target."""
    comps = _components(path)
    fd, canonical = _resolve_parent(rd, comps, path)
    return _Target(fd, None, os.fstat(fd), canonical)


def _stat_path(root: _Root, path: str, follow: bool) -> PathStat:
    target = _resolve(root.dir, path, follow)
    try:
        return _path_stat(target, path)
    finally:
        target.close()


def _path_stat(t: _Target, path: str) -> PathStat:
    """The stat of what `path` resolved to, named as the path names it (as Docker does: a
    followed symlink keeps the link's name)."""
    link = os.readlink(t.name, dir_fd=t.parent_fd) if t.name is not None and stat.S_ISLNK(t.st.st_mode) else ""
    name = _given_name(path) or t.name or (t.canonical[-1] if t.canonical else "/")
    return PathStat(name=name, size=t.st.st_size, mode=t.st.st_mode, mtime_ns=t.st.st_mtime_ns, link_target=link,
                    uid=t.st.st_uid, gid=t.st.st_gid)


def _given_name(path: str) -> str | None:
    comps = _components(path)
    return comps[-1] if comps and comps[-1] != ".." else None


def _top_name(path: str, t: _Target) -> str:
    """The archive's top entry: the path's last name; `.` for a directory's contents (or `/`)."""
    if path.endswith("/.") or path == "." or (t.name is None and not t.canonical):
        return "."
    return _given_name(path) or t.name or t.canonical[-1]


# -- writing an archive ------------------------------------------------------------------------------


def _write_archive(root: _Root, t: _Target, top: str, out: BinaryIO) -> None:
    tar = TarWriter(out)
    writer = _ArchiveWriter(tar, root.skip)
    if t.name is None:
        fd = os.open(".", _OPEN_DIR, dir_fd=t.parent_fd)
        try:
            writer.directory(fd, top, t.st, t.canonical)
        finally:
            os.close(fd)
    else:
        writer.entry(t.parent_fd, t.name, top, t.st, t.canonical)
    tar.close()


class _ArchiveWriter:
    """Entries from descriptors: every name is opened relative to its directory's descriptor
    without following it, so nothing the container changes meanwhile leads outside its root."""

    def __init__(self, tar: TarWriter, skip: frozenset[Canonical]) -> None:
        self.tar = tar
        self.skip = skip
        self.links: dict[tuple[int, int], bytes] = {}

    def entry(self, dir_fd: int, name: str, arc: str, st: os.stat_result, canonical: Canonical) -> None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            try:
                fd = os.open(name, _OPEN_DIR, dir_fd=dir_fd)
            except FileNotFoundError:
                return  # gone since it was listed
            try:
                self.directory(fd, arc, st, canonical)
            finally:
                os.close(fd)
            return
        if stat.S_ISSOCK(mode):
            return  # a tar cannot hold a socket
        h = _header(arc.encode("utf-8", "surrogateescape"), st)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            h.typeflag, h.linkname, h.size = TYPE_LINK, self.links[key], 0
            self.tar.add(h)
            return
        if stat.S_ISLNK(mode):
            h.linkname = os.fsencode(os.readlink(name, dir_fd=dir_fd))
        if stat.S_ISREG(mode):
            try:
                fd = os.open(name, _OPEN_FILE, dir_fd=dir_fd)
            except FileNotFoundError:
                return
            try:
                # Replaced by something else since the stat (a FIFO would block): zeros.
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
                os.set_blocking(fd, True)
                with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
                    self.tar.add(h, cast(BinaryIO, _Exactly(f if regular else None, h.size)))
            finally:
                os.close(fd)
        else:
            self.tar.add(h)
        if st.st_nlink > 1:
            self.links[key] = h.name

    def directory(self, fd: int, arc: str, st: os.stat_result, canonical: Canonical) -> None:
        self.tar.add(_header(arc.rstrip("/").encode("utf-8", "surrogateescape") + b"/", st))
        if canonical in self.skip:
            return  # the directory, not the kernel's files below it
        for name in sorted(os.listdir(fd)):
            try:
                child = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            self.entry(fd, name, f"{arc.rstrip('/')}/{name}", child, (*canonical, name))


def _header(name: bytes, st: os.stat_result) -> TarHeader:
    mode = st.st_mode
    h = TarHeader(name, TYPE_REG, mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid, mtime=st.st_mtime_ns // _NS)
    if stat.S_ISREG(mode):
        h.size = st.st_size
    elif stat.S_ISDIR(mode):
        h.typeflag = TYPE_DIR
    elif stat.S_ISLNK(mode):
        h.typeflag = TYPE_SYMLINK
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        h.typeflag = TYPE_CHAR if stat.S_ISCHR(mode) else TYPE_BLOCK
        h.devmajor, h.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        h.typeflag = TYPE_FIFO
    return h


class _Exactly:
    """`size` bytes of a file that a running container may be changing: cut where it grew,
    padded with zeros where it shrank (the header already promised `size`)."""

    def __init__(self, f: Any, size: int) -> None:
        self.f = f
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        want = self.left if n < 0 else min(n, self.left)
        data = (self.f.read(want) if self.f is not None else b"") or bytes(want)
        self.left -= len(data)
        return data  # type: ignore[no-any-return]


# -- threads and streams -------------------------------------------------------------------------------


class _Sink:
    """A write-only file for the archive's thread: chunks go to the event loop's queue, at most
    _WINDOW of them unread; a stopped stream makes the next write raise Cancelled."""

    def __init__(self, queue: asyncio.Queue[bytes | None], loop: asyncio.AbstractEventLoop,
                 stop: threading.Event, window: threading.Semaphore) -> None:
        self.queue, self.loop, self.stop, self.window = queue, loop, stop, window
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self.buf:
            return
        while not self.window.acquire(timeout=0.5):
            if self.stop.is_set():
                raise Cancelled("copy from the container: the reader went away")
        if self.stop.is_set():
            raise Cancelled("copy from the container: the reader went away")
        chunk, self.buf = bytes(self.buf), bytearray()
        self.loop.call_soon_threadsafe(self.queue.put_nowait, chunk)


async def _produced(work: Callable[[BinaryIO], None]) -> AsyncIterator[bytes]:
    """What `work` writes in a worker thread, as chunks; its error, if any, after them. The
    thread has ended when this ends, however it ends (the caller unmounts after)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    stop = threading.Event()
    window = threading.Semaphore(_WINDOW)
    sink = _Sink(queue, loop, stop, window)

    def run() -> None:
        try:
            work(cast(BinaryIO, sink))
            sink.flush()
        except OSError as exc:
            raise _os_error("archive", exc) from None
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    done = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        while (chunk := await queue.get()) is not None:
            window.release()
            yield chunk
        await done
    finally:
        stop.set()
        if not done.done():
            with contextlib.suppress(BaseException):
                await asyncio.shield(done)


async def _consumed(chunks: AsyncIterator[bytes], work: Callable[[BinaryIO, threading.Event], object]) -> None:
    """Run `work` in a thread over the bytes of `chunks`; a cancelled call stops it before the
    next entry and waits for it (the caller unmounts after)."""
    cancel = threading.Event()
    reader = BlockingReader(chunks, asyncio.get_running_loop())
    await uninterrupted(asyncio.to_thread(work, cast(BinaryIO, reader), cancel), cancel.set)


async def _in_thread(path: str, fn: Callable[..., T], *args: Any) -> T:
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        raise _os_error(path, exc) from None


# -- odds and ends ---------------------------------------------------------------------------------


def _spec(container: Container) -> dict[str, Any]:
    if container.spec is None:
        return {}
    try:
        spec = json_value(container.spec.value, "its spec")  # any client wrote it
    except ValueError:
        return {}
    return spec if isinstance(spec, dict) else {}


def _host_root(spec: dict[str, Any]) -> tuple[int, int]:
    """The host ids of the container's root (user namespaces map them), for files copied in."""
    linux = spec.get("linux") if isinstance(spec.get("linux"), dict) else {}
    assert isinstance(linux, dict)
    return _mapped(linux.get("uidMappings")), _mapped(linux.get("gidMappings"))


def _mapped(mappings: Any) -> int:
    for m in mappings if isinstance(mappings, list) else []:
        if isinstance(m, dict) and m.get("containerID") == 0 and isinstance(m.get("hostID"), int):
            return int(m["hostID"])
    return 0


def _pseudo_mounts(pid: int) -> frozenset[Canonical]:
    """Mount points of pseudo filesystems as the init sees them (its root is `/`)."""
    out = set()
    for point, fstype, _ in mountinfo(f"/proc/{pid}/mountinfo"):
        if fstype in PSEUDO_FS:
            out.add(tuple(c for c in point.split("/") if c))
    return frozenset(out)


def _os_error(what: str, exc: OSError) -> DockyardError:
    return from_os_error(what, exc)  # one errno table for every module acting on a caller's paths
