"""Applying layers to snapshots and computing layers from them (Diff.Apply, Diff.Diff).

Apply takes the fast path containerd takes: an overlay snapshot's layer is written straight
into its upperdir (whiteouts as overlay whiteouts, the lowers consulted), a bind mount's
source is written in place; anything else is mounted first. Both directions stream: the blob
is read from the content store in chunks and never held in memory.

Which mounts. containerd applies onto, and diffs, whatever mounts its client sends; the client
there is trusted with the host. Here a gRPC client must not make the daemon write into (Apply)
or read out (Diff) host paths the daemon did not make, so both take only the mounts this
daemon's snapshotters hand out (`check_mounts`): one mount, `bind` of a snapshot's directory
(`<root>/snapshots/<snapshotter>/snapshots/<id>/fs`, or the same through the overlay
snapshotter's short link) or `overlay` whose upperdir, workdir and every lowerdir are such
directories, with only the options those carry. Anything else is InvalidArgument: the request
names mounts no Dockyard snapshot has, whoever asks (not PermissionDenied: no caller may).
`ctr` (pull, import, `snapshots diff`) and dock send exactly what Prepare/View/Mounts returned.
A path that does not exist is NotFound, as the kernel would say. Apply also writes only into an
active snapshot's directory (the bind's source, the overlay's upperdir): a committed snapshot's
tree is shared by every image and container on it (FailedPrecondition).

What a diff writes. A tree holding a name layers reserve for whiteouts (a container's `touch
/.wh.bin`) is refused by the walk (archive/diff.py) instead of yielding a layer that deletes
/bin. A walk the host refuses (a path past PATH_MAX, ...) is the error kind its errno stands for, naming the
path inside the tree, never the daemon's mount point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

from dockyard_common.aio import uninterrupted
from dockyard_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, from_os_error
from dockyard_common.imagespec import (
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    Descriptor,
    compression_for_media_type,
)
from dockyard_common.mountopts import PROPAGATION_FLAGS, RECURSIVE_ATTRS, overlay_dirs
from dockyard_common.mounts import mounted, readonly_view
from dockyard_common.types import Kind, Mount
from supervisor.archive.apply import apply_layer
from supervisor.archive.compression import open_compressor, open_layer
from supervisor.archive.diff import write_diff
from supervisor.archive.hashing import DigestingReader, DigestingWriter
from supervisor.content.store import BlobReader
from supervisor.metadata.content import NamespacedContentStore
from supervisor.snapshotter.overlay import SHORT_LINK_DIR

log = logging.getLogger("dockyard.differ")

UNCOMPRESSED_LABEL = "containerd.io/uncompressed"
_CHUNK = 1 << 20
# Options of the mounts our snapshotters hand out, besides the directories (see check_mounts):
# mount flags, and overlay's own. No other data option reaches the kernel.
_MOUNT_FLAGS = frozenset({"ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime", "atime",
                          "nodiratime", "diratime", "relatime", "norelatime", "strictatime", "nostrictatime",
                          "sync", "async", "dirsync", "lazytime", "nolazytime", "nosymfollow"})
_BIND_OPTIONS = _MOUNT_FLAGS | {"bind", "rbind"} | set(PROPAGATION_FLAGS) | set(RECURSIVE_ATTRS)
_OVERLAY_KEYS = frozenset({"index", "uidmap", "gidmap", "redirect_dir", "metacopy", "xino", "nfs_export",
                           "userxattr", "volatile"})


class _BlockingBlob:
    """A sync, sequential file view of an async BlobReader, for code running in a thread.

    Decompressors read in small pieces (gzip: 8 KiB); each hop through the event loop costs far
    more than that, so it reads ahead in large chunks and serves small reads from a buffer."""

    READ_AHEAD = 4 << 20

    def __init__(self, reader: BlobReader, loop: asyncio.AbstractEventLoop) -> None:
        self._reader = reader
        self._loop = loop
        self._offset = 0  # of the blob, past what is buffered
        self._buffer = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:  # everything that is left
            return b"".join(iter(lambda: self.read(self.READ_AHEAD), b""))
        if not self._buffer:
            size = min(self._reader.size - self._offset, max(self.READ_AHEAD, n))
            if size <= 0:
                return b""
            data = asyncio.run_coroutine_threadsafe(self._reader.read_at(self._offset, size), self._loop).result()
            self._offset += len(data)
            self._buffer = memoryview(data)
        take = min(n, len(self._buffer))
        out, self._buffer = self._buffer[:take], self._buffer[take:]
        return bytes(out)

    def readable(self) -> bool:
        return True


SnapshotKinds = Callable[[str, int], Awaitable[Kind | None]]  # (snapshotter, directory id) -> kind


class Differ:
    def __init__(self, content: NamespacedContentStore, tmp_root: Path, compress_helper: str | None = None,
                 snapshots_root: Path | None = None, snapshot_kind: SnapshotKinds | None = None) -> None:
        """`snapshots_root`: where the snapshotters keep their trees (`<root>/snapshots`, each
        snapshotter in a directory of its own); the mounts Apply and Diff take must be there.
        None: the daemon's layout, `snapshots` beside `tmp_root` (`<root>/tmp`). `snapshot_kind`
        says what a snapshot directory holds: Apply writes only into an active snapshot's."""
        self.content = content
        self.tmp_root = tmp_root
        self.compress_helper = compress_helper  # containerd's encoders (archive/gocompress.py), or None
        self.snapshots_root = snapshots_root if snapshots_root is not None else tmp_root.parent / "snapshots"
        self.snapshot_kind = snapshot_kind

    async def apply(self, ns: str, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        """Apply the layer blob `desc` onto `mounts`; returns the uncompressed descriptor."""
        compression_for_media_type(desc.media_type)  # unknown media types fail before any work
        if not mounts:
            raise InvalidArgument("apply: no mounts given")
        await asyncio.to_thread(self.check_mounts, mounts, "apply: mounts")
        await self._check_writable(mounts)
        reader = await self.content.reader(ns, desc.digest)
        try:
            if desc.size and reader.size != desc.size:
                raise FailedPrecondition(
                    f"content {desc.digest} has size {reader.size}, descriptor says {desc.size}")
            blob = DigestingReader(cast(BinaryIO, _BlockingBlob(reader, asyncio.get_running_loop())))
            started = time.monotonic()
            cancel = threading.Event()
            # cancelled: the thread stops at the next entry, and ends before anyone removes the snapshot
            result = await uninterrupted(asyncio.to_thread(self._apply, blob, desc.media_type, list(mounts), cancel),
                                         cancel.set)
            log.debug("applied %s (%d bytes, %d uncompressed) in %.3fs", desc.digest, reader.size, result.size,
                      time.monotonic() - started)
        finally:
            await reader.close()
        if blob.digest != desc.digest:  # the store verified it at commit; this guards the disk since
            raise FailedPrecondition(f"layer {desc.digest} read back as {blob.digest}")
        return Descriptor(MEDIA_TYPE_OCI_LAYER, result.digest, result.size)

    def _apply(self, blob: DigestingReader, media_type: str, mounts: list[Mount], cancel: threading.Event) -> Any:
        stream = open_layer(cast(BinaryIO, blob), media_type)
        if len(mounts) == 1 and mounts[0].type == "overlay":
            dirs = overlay_dirs(mounts[0].options)
            if dirs.upper is not None:
                result = apply_layer(stream, Path(dirs.upper), whiteout_mode="overlay",
                                     parents=[Path(p) for p in dirs.lowers], cancel=cancel)
                blob.drain()
                return result
        if len(mounts) == 1 and mounts[0].type == "bind" and "ro" not in mounts[0].options:
            result = apply_layer(stream, Path(mounts[0].source), whiteout_mode="delete", cancel=cancel)
            blob.drain()
            return result
        with mounted(mounts, self.tmp_root) as target:
            result = apply_layer(stream, target, whiteout_mode="delete", cancel=cancel)
        blob.drain()
        return result

    async def diff(self, ns: str, lower: Sequence[Mount], upper: Sequence[Mount], *, media_type: str = "",
                   ref: str = "", labels: Mapping[str, str] | None = None, lease: str = "",
                   mtime_clamp: int | None = None, from_upperdir: bool = False) -> Descriptor:
        """Write the changes from `lower` to `upper` as a new layer blob in the content store
        (`mtime_clamp`: no entry newer than it, see archive/diff.py). `from_upperdir`: when
        `upper` is an overlay on `lower`, walk only what its upperdir holds (our builds; the
        bytes then need not be containerd's, see archive/diff.py write_diff)."""
        media_type = media_type or MEDIA_TYPE_OCI_LAYER_GZIP
        compression = compression_for_media_type(media_type)
        if compression is None:
            raise InvalidArgument(f"diff: media type {media_type!r} does not say how to compress")
        if not upper:
            raise InvalidArgument("diff: no upper mounts given")
        await asyncio.to_thread(self.check_mounts, lower, "diff: lower mounts")
        await asyncio.to_thread(self.check_mounts, upper, "diff: upper mounts")
        self.tmp_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp_name = tempfile.mkstemp(prefix="diff-", dir=self.tmp_root)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as out:
                changed = _upperdir(upper) if from_upperdir else None
                diff_id, written = await asyncio.to_thread(
                    self._diff, list(lower), list(upper), out, compression, mtime_clamp, changed)
                out.seek(0)
                digest = await self._store(ns, out, written, ref or f"diff-{secrets.token_hex(8)}",
                                           {**(labels or {}), UNCOMPRESSED_LABEL: diff_id}, lease)
        finally:
            await asyncio.to_thread(tmp.unlink, missing_ok=True)
        return Descriptor(media_type, digest, written)

    def _diff(self, lower: list[Mount], upper: list[Mount], out: BinaryIO, compression: Any,
              mtime_clamp: int | None = None, changed: Path | None = None) -> tuple[str, int]:
        counted = DigestingWriter(out)
        with open_compressor(cast(BinaryIO, counted), compression, helper=self.compress_helper) as compressor:
            uncompressed = DigestingWriter(compressor)
            sink = cast(BinaryIO, uncompressed)
            # Both trees mounted and walked, as containerd's differ does: reading an overlay
            # upperdir alone would be faster but cannot give containerd's bytes (it never writes
            # opaque markers, and judges changes on the merged views).
            with mounted(lower, self.tmp_root, readonly=True) if lower else _EmptyDir(self.tmp_root) as low, \
                    mounted(readonly_view(upper), self.tmp_root) as up:
                try:
                    write_diff(low, up, sink, mtime_clamp=mtime_clamp, changed=changed)
                except OSError as exc:  # the walk: words naming the path in the tree, not our mounts
                    raise from_os_error(f"diff: {_in_tree(exc.filename, (up, low))}", exc) from None
        out.flush()
        return uncompressed.digest, counted.size

    def check_mounts(self, mounts: Sequence[Mount], what: str) -> None:
        """InvalidArgument unless `mounts` are a mount this daemon's snapshotters hand out (the
        module docstring); NotFound for a directory that does not exist. Blocking (lstat, readlink)."""
        if not mounts:
            return
        if len(mounts) != 1:
            raise InvalidArgument(f"{what}: {len(mounts)} mounts; a snapshot of this daemon is one mount")
        m = mounts[0]
        if m.target:
            raise InvalidArgument(f"{what}: a mount target ({_shown(m.target)}) is not for a snapshot's mounts")
        if m.type == "bind":
            for opt in m.options:
                if opt not in _BIND_OPTIONS:
                    raise InvalidArgument(f"{what}: bind option {_shown(opt)} is not one a snapshot's mount carries")
            self._check_dir(m.source, "fs", f"{what}: bind source")
        elif m.type == "overlay":
            for opt in m.options:
                key, eq, value = opt.partition("=")
                if "," in opt or "\\" in opt:  # the kernel splits and unescapes what it is given
                    raise InvalidArgument(f"{what}: overlay option {_shown(opt)}: ',' and '\\' are not allowed")
                if eq and key in ("upperdir", "workdir"):
                    self._check_dir(value, "fs" if key == "upperdir" else "work", f"{what}: overlay {key}")
                elif eq and key == "lowerdir":
                    for lower in value.split(":"):
                        self._check_dir(lower, "fs", f"{what}: overlay lowerdir")
                elif not ((eq and key in _OVERLAY_KEYS) or (not eq and (opt in _MOUNT_FLAGS or opt in _OVERLAY_KEYS))):
                    raise InvalidArgument(f"{what}: overlay option {_shown(opt)} is not one a snapshot's mount carries")
            if overlay_dirs(m.options).lowers == ():
                raise InvalidArgument(f"{what}: an overlay mount needs a lowerdir")
        else:
            raise InvalidArgument(f"{what}: mount type {_shown(m.type)}: only the bind and overlay mounts of this "
                                  "daemon's snapshots are taken")

    async def _check_writable(self, mounts: Sequence[Mount]) -> None:
        """FailedPrecondition unless the directory Apply writes (a bind's source, an overlay's
        upperdir) is an active snapshot's: a committed snapshot's tree is shared by every image
        and snapshot on it, and a view of one is a read-only bind of that very tree. `mounts`
        passed `check_mounts`."""
        m = mounts[0]
        path = m.source if m.type == "bind" else overlay_dirs(m.options).upper
        if not path or self.snapshot_kind is None:
            return  # an overlay of lowers only is mounted read-only: nothing can be written
        name, sid = await asyncio.to_thread(self._snapshot_of, path)
        kind = await self.snapshot_kind(name, sid)
        if kind != Kind.ACTIVE:
            held = "no snapshot" if kind is None else f"a {kind.name.lower()} snapshot"
            raise FailedPrecondition(f"apply: {_shown(path)} holds {held} of the {name} snapshotter: layers "
                                     "are applied to active snapshots only (Prepare one)")

    def _snapshot_of(self, path: str) -> tuple[str, int]:
        """(snapshotter name, directory id) of a path `_check_dir` took."""
        parent, _, _leaf = path.rpartition("/")
        snapshots, _, sid = parent.rpartition("/")
        if os.path.dirname(snapshots) == SHORT_LINK_DIR:
            snapshots = os.readlink(snapshots)
        return os.path.basename(os.path.dirname(snapshots)), int(sid)

    def _check_dir(self, path: str, leaf: str, what: str) -> None:
        """`path` is `<a snapshotter's snapshots dir>/<id>/<leaf>`, spelt as the snapshotters spell
        it: the snapshots dir literally `<snapshots_root>/<name>/snapshots`, or the overlay
        snapshotter's short link to one (`/run/dy/<tag>`, read, not followed blindly). No client
        string is resolved: a symlink of the caller's, swapped after the check, could not steer
        the mount. `<id>` and `<leaf>` are the daemon's own directories, which no container can
        replace (fs is a container's /)."""
        if not path.startswith("/"):
            raise InvalidArgument(f"{what} {_shown(path)} is not an absolute path")
        if not os.path.lexists(path):
            raise NotFound(f"{what} {_shown(path)}: no such file or directory")
        parent, _, rest = path.rpartition("/")
        parent, _, sid = parent.rpartition("/")
        root = os.path.abspath(self.snapshots_root)
        if not (rest == leaf and sid.isascii() and sid.isdigit() and os.path.normpath(path) == path
                and (self._is_snapshots_dir(parent, root) or self._is_short_link(parent, root))):
            raise InvalidArgument(f"{what} {_shown(path)} is not a snapshot directory of this daemon's snapshotters "
                                  f"(<id>/{leaf} under {root}/<snapshotter>/snapshots)")

    @staticmethod
    def _is_snapshots_dir(path: str, root: str) -> bool:
        head, _, tail = path.rpartition("/")
        top, _, name = head.rpartition("/")
        return tail == "snapshots" and top == root and name not in ("", ".", "..")

    def _is_short_link(self, path: str, root: str) -> bool:
        if os.path.dirname(path) != SHORT_LINK_DIR:
            return False
        try:
            return self._is_snapshots_dir(os.readlink(path), root)
        except OSError:
            return False

    async def _store(self, ns: str, data: BinaryIO, size: int, ref: str, labels: Mapping[str, str],
                     lease: str) -> str:
        writer = await self.content.writer(ns, ref, total=size, lease=lease)
        try:
            offset = writer.status().offset  # a resumed ingest carries on where it stopped
            data.seek(offset)
            while chunk := await asyncio.to_thread(data.read, _CHUNK):
                offset = await writer.write(chunk, offset)
            digest = writer.digest()
            try:
                await writer.commit(size, digest, labels)
            except AlreadyExists:
                pass  # the same layer is already there: the descriptor is still right
            return digest
        except BaseException:
            with contextlib.suppress(Exception):
                await writer.close()
            raise


def _upperdir(mounts: Sequence[Mount]) -> Path | None:
    """The upperdir of `mounts` when they are one overlay (a snapshot on a parent), else None."""
    if len(mounts) != 1 or mounts[0].type != "overlay":
        return None
    upper = overlay_dirs(mounts[0].options).upper
    return Path(upper) if upper else None


def _shown(text: str, limit: int = 200) -> str:
    """A caller's string quoted for a message, at most `limit` characters of it."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _in_tree(filename: Any, roots: Sequence[Path]) -> str:
    """An OSError's path as the path inside the tree it is in (not the daemon's mount point),
    shortened for a message."""
    if filename is None:
        return "writing the layer"  # no path of either tree: the layer being written (a full disk)
    path = os.fsdecode(filename)
    for root in roots:
        prefix = str(root).rstrip("/") + "/"
        if path.startswith(prefix) or path == prefix[:-1]:
            path = "/" + path[len(prefix):]
            break
    return repr(path) if len(path) <= 200 else repr("..." + path[-200:]) + f" ({len(path)} characters)"


class _EmptyDir:
    """An empty directory standing in for a missing lower (the first layer)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = Path(tempfile.mkdtemp(prefix="empty-", dir=root))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        os.rmdir(self.path)
