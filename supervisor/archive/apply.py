"""Apply an OCI/Docker layer tar to a directory (the engine behind Diff.Apply).

Contract
--------
`apply_layer(stream, target, whiteout_mode=...)` reads an *uncompressed* layer tar from
`stream` (see `compression.open_layer` for the compressed ones) and writes its changes into
`target`, returning the size and sha256 of the uncompressed bytes (the layer's diff ID).
It is synchronous and streaming (run it in a thread); memory does not grow with the size
of the layer's files.

Whiteouts (OCI image-spec, layer.md):
- `dir/.wh.<name>` removes `<name>` of the lower layers;
- `dir/.wh..wh..opq` makes `dir` opaque: nothing of the lower layers shows through.

`whiteout_mode` says what the target is:
- "delete": the target holds the full parent tree (native snapshots). Whiteouts delete,
  opaque directories are emptied of what lower layers put there (not of what this layer
  added, whatever the order of the entries).
- "none": the tar is a plain archive, not a layer (`docker cp`): `.wh.` names are files
  like any other (the target is handled as in "delete" mode otherwise).
- "overlay": the target is an empty overlayfs upperdir. A whiteout becomes a 0/0 character
  device, an opaque directory gets `trusted.overlay.opaque=y`. `parents` (the lowerdirs,
  topmost first) are looked up as overlayfs merges them (see `lowers.py`): implicitly
  created parent directories get the attributes of the directory they shadow (as
  containerd's WithParents does), and a parent that is a symlink in the lowers (usrmerge's
  `lib -> usr/lib`) is followed inside the upperdir instead of being shadowed by a new
  directory, so the merged view equals what "delete" mode gives on the full tree.

Safety: names are cleaned by `dockyard_common.rootpath.clean_name` (a leading `/` is dropped, a `..` above
the root is InvalidArgument naming the entry); every parent is resolved by
`dockyard_common.rootpath.RootDir` as if `target` were `/`; the final component is always handled with
`*at` calls that do not follow it. `trusted.*` xattrs in an archive are ignored (they are
the overlay driver's private namespace). Nothing outside `target` is created, changed or
removed, even when the archive fails halfway (the target may then hold a partial tree).

Speed (a layer of many small files is bound by Python and system calls): the tar is parsed
by `tarread` (no tarfile objects per member) from a read-ahead thread that decompresses and
digests (`readahead`); file data is written straight from its buffers; a new file's owner
and mode are set only when the create did not already give them; parent directories stay
open in an LRU cache, and a miss is walked from the deepest cached ancestor.

Errors: a malformed, truncated or hostile archive raises InvalidArgument, as do header
values no system call takes (a device number past the kernel's dev_t, an id past uid_t, a NUL
in a name), naming the entry and the field; out of space raises ResourceExhausted; a missing
target or parent raises NotFound; a set `cancel` event raises Cancelled; other I/O errors
Internal. No Python-level error (OverflowError, ValueError, ...) leaves: one not foreseen
still becomes a domain error naming the entry, in words (the details go to the log).

Example::

    with open(blob, "rb") as raw, open_layer(raw, media_type) as tar_stream:
        result = apply_layer(tar_stream, Path(upperdir), whiteout_mode="overlay")
    assert result.digest == diff_id
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from dockyard_common.devices import check_device_number
from dockyard_common.errors import (
    Cancelled,
    DockyardError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    from_os_error,
)
from dockyard_common.rootpath import Canonical, NotADirectory, ResolvedDir, RootDir, clean_name
from supervisor.archive.hashing import DigestingReader
from supervisor.archive.lowers import OVERLAY_OPAQUE_XATTR, LowerView
from supervisor.archive.readahead import ReadAhead
from supervisor.archive.tarread import (
    BLOCKDEV,
    CHAR,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Entry,
    TarFormatError,
    TarReader,
)

log = logging.getLogger(__name__)

WhiteoutMode = Literal["overlay", "delete", "none"]

WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
WHITEOUT_OPAQUE = ".wh..wh..opq"

# Open parent directories kept per apply. Layers usually list a directory's entries
# together, but not always (the benchmark's generator spreads files over 100 directories).
_CACHE_SIZE = max(16, min(256, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 16))
_I64_MAX = (1 << 63) - 1
# The largest id chown takes ((uid_t)-1 means "unchanged" to it, so it is no owner).
_ID_MAX = (1 << 32) - 2

_DEVICE_TYPES = {CHAR: stat.S_IFCHR, BLOCKDEV: stat.S_IFBLK, FIFO: stat.S_IFIFO}
_SUPPORTED = {REGULAR, DIRECTORY, SYMLINK, HARDLINK, CHAR, BLOCKDEV, FIFO}
_CREATE_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class ApplyResult:
    """What was read: size and `sha256:<hex>` of the uncompressed tar (the diff ID)."""

    size: int
    digest: str


def apply_layer(
    stream: BinaryIO,
    target: Path,
    *,
    whiteout_mode: WhiteoutMode,
    parents: Sequence[Path] = (),
    cancel: threading.Event | None = None,
    owner: tuple[int, int] | None = None,
    check: Callable[[Entry], None] | None = None,
    stop_reading: Callable[[], None] | None = None,
) -> ApplyResult:
    """Apply the uncompressed layer tar `stream` to `target`; see the module docstring.

    `cancel`, set from another thread, stops the apply before the next entry (Cancelled).
    `owner` (uid, gid), when given, owns every entry instead of the ids the tar names.
    `check`, when given, sees each entry before it is applied and refuses one by raising (a
    build context checked as it streams in: archive/context.py).
    `stop_reading`, when given, is called at the end of the archive instead of reading the
    stream to its end: a tar a caller sends (`dock cp -`) is done at its end blocks, and what
    follows them, maybe without end (`< /dev/zero`), is not ours to wait for. A layer is read to
    its end: the padding counts in its digest.
    """
    if whiteout_mode not in ("overlay", "delete", "none"):
        raise InvalidArgument(f"whiteout mode {whiteout_mode!r}: must be 'overlay', 'delete' or 'none'")
    if not os.path.isdir("/proc/self/fd"):
        raise FailedPrecondition("apply layer: /proc is not mounted")
    reader = DigestingReader(stream)
    try:
        applier = _Applier(target, whiteout_mode, parents, owner)
    except FileNotFoundError as e:
        raise NotFound(f"apply target {e.filename}") from None
    except NotADirectoryError as e:
        raise InvalidArgument(f"apply target {e.filename}: not a directory") from None
    except OSError as e:
        raise _os_error(f"apply target {target}", e) from None
    try:
        # Decompressing and digesting happen on the read-ahead thread, the writes here.
        with ReadAhead(reader.read) as ahead:
            try:
                tar = TarReader(ahead.read)
                while (entry := tar.next()) is not None:
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"apply layer to {target}")
                    if check is not None:
                        check(entry)
                    applier.apply(tar, entry)
                    applier.last = entry.name
            except TarFormatError as e:
                raise InvalidArgument(f"invalid layer tar: {e}") from None
            applier.finish()
            if stop_reading is None:
                ahead.finish()  # the padding after the end blocks counts in the diff ID
            else:
                stop_reading()  # unblocks the read-ahead thread, which then ends
    except DockyardError:
        raise
    except OSError as e:  # reading the layer's bytes (the entries map their own)
        raise _os_error("read layer", e) from None
    except Exception as e:
        raise _unexpected(f"layer tar (after entry {applier.last!r})" if applier.last else "layer tar", e) from None
    finally:
        applier.close()
    return ApplyResult(size=reader.size, digest=reader.digest)


class _Applier:
    """The state of one apply: open roots, a parent cache, what this layer unpacked."""

    def __init__(self, target: Path, mode: WhiteoutMode, parents: Sequence[Path],
                 owner: tuple[int, int] | None = None) -> None:
        self.mode = mode
        self.owner = owner
        for p in parents:
            if not os.path.isdir(p):
                raise NotFound(f"apply layer: parent directory {p}")
        self.lowers = LowerView(parents) if mode == "overlay" and parents else None
        self.root = RootDir(target)
        # Canonical paths at which a resolution followed a symlink of the lowers: creating
        # something there in the upperdir changes what later lookups must find.
        self._via_lower_links: set[Canonical] = set()
        # Resolved parent directories by cleaned name parts. Only successful lookups of
        # existing directories are kept; any removal clears it, since only a removal can
        # change what an existing path resolves to. Evicted fds are closed only once the
        # current entry is done, so callers may hold them across an invalidation.
        self._cache: OrderedDict[tuple[str, ...], ResolvedDir] = OrderedDict()
        self._retired: list[int] = []
        # Canonical paths this layer wrote, and their ancestors: what an opaque marker in
        # delete mode must keep.
        self._unpacked: set[Canonical] = set()
        self._unpacked_ancestors: set[Canonical] = set()
        # Directory times are set last: writing children changes them. Keyed by canonical
        # path, with the inode so a directory replaced later is not touched.
        self._dir_times: dict[Canonical, tuple[int, int, int, int]] = {}
        self.last = ""  # the name of the last entry applied, for errors between entries

    def close(self) -> None:
        self._invalidate()
        self._release()
        self.root.close()

    # -- entries -----------------------------------------------------------------------

    def apply(self, tar: TarReader, e: Entry) -> None:
        try:
            if self.owner is not None:
                e.uid, e.gid = self.owner
            _check_entry(e)
            self._apply(tar, e)
        except (DockyardError, TarFormatError):  # the latter is apply_layer's to word
            raise
        except NotADirectory as err:
            raise InvalidArgument(f"tar entry {e.name!r}: {'/'.join(err.canonical)!r} is not a directory") from None
        except OSError as err:
            raise _os_error(f"apply tar entry {e.name!r}", err) from None
        except Exception as err:  # what _check_entry did not foresee: still no Python words for the user
            raise _unexpected(f"tar entry {e.name!r}", err) from None
        finally:
            self._release()

    def _apply(self, tar: TarReader, e: Entry) -> None:
        parts = clean_name(e.name)
        if not parts:
            return  # the root itself: its attributes belong to the snapshot, not the layer
        base = parts[-1]
        if base.startswith(WHITEOUT_PREFIX) and self.mode != "none":
            self._whiteout(e, parts)
            return
        if e.type not in _SUPPORTED:
            raise InvalidArgument(f"tar entry {e.name!r}: unsupported type {e.type!r}")

        parent = self._parent(parts[:-1], create=True)
        assert parent is not None
        canonical = (*parent.canonical, base)
        if e.type == REGULAR:
            self._write_file(tar, e, parent, base)
        elif e.type == DIRECTORY:
            self._directory(e, parent, base, canonical)
        else:
            # Replace, never write through: the old entry may be a symlink, or a hard link
            # shared with a lower layer.
            if _lstat_at(parent.fd, base) is not None:
                _remove_at(parent.fd, base)
                self._invalidate()
            if e.type == SYMLINK:
                os.symlink(e.linkname, base, dir_fd=parent.fd)
                _set_symlink_attrs(parent.fd, base, e)
            elif e.type == HARDLINK:
                self._hardlink(e, parent.fd, base)
            else:
                dev = os.makedev(e.devmajor, e.devminor) if e.type != FIFO else 0
                os.mknod(base, _DEVICE_TYPES[e.type] | 0o600, dev, dir_fd=parent.fd)
                self._set_attrs_at(parent.fd, base, e)
        self._created(canonical)
        self._mark_unpacked(canonical)

    def _write_file(self, tar: TarReader, e: Entry, parent: ResolvedDir, name: str) -> None:
        # O_EXCL|O_NOFOLLOW: never write through what is there (a symlink, a hard link shared
        # with a lower layer); it is removed first. Created with the entry's permission bits,
        # so the usual file needs no chmod.
        perm = e.mode & 0o777
        try:
            fd = os.open(name, _CREATE_FILE, perm, dir_fd=parent.fd)
        except FileExistsError:
            _remove_at(parent.fd, name)
            self._invalidate()
            fd = os.open(name, _CREATE_FILE, perm, dir_fd=parent.fd)
        try:
            for piece in tar.data():
                while piece:
                    piece = piece[os.write(fd, piece) :]
            # What the file got from the create (umask, a setgid parent, default ACLs):
            # calls that would set what it already has are skipped; on a small VM they are
            # most of the kernel's time per file. Order matters: chown clears setuid/setgid
            # and security.capability, so it goes first, then xattrs, then the mode.
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (e.uid, e.gid):
                os.chown(fd, e.uid, e.gid)
            if e.xattrs:
                _set_xattrs(fd, e, follow_symlinks=True)
            if stat.S_IMODE(st.st_mode) != e.mode & 0o7777:
                os.chmod(fd, e.mode & 0o7777)
            os.utime(fd, ns=_times(e))
        finally:
            os.close(fd)

    def _directory(self, e: Entry, parent: ResolvedDir, name: str, canonical: Canonical) -> None:
        try:
            os.mkdir(name, 0o700, dir_fd=parent.fd)
        except FileExistsError:
            existing = _lstat_at(parent.fd, name)
            if existing is None or not stat.S_ISDIR(existing.st_mode):  # merged only into a directory
                if existing is not None:
                    _remove_at(parent.fd, name)
                    self._invalidate()
                os.mkdir(name, 0o700, dir_fd=parent.fd)
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent.fd)
        try:
            _set_attrs(fd, e, set_times=False)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        atime, mtime = _times(e)
        self._dir_times[canonical] = (st.st_dev, st.st_ino, atime, mtime)

    def _hardlink(self, e: Entry, dir_fd: int, name: str) -> None:
        lparts = clean_name(e.linkname, what=f"hard link {e.name!r} to")
        if not lparts:
            raise InvalidArgument(f"hard link {e.name!r}: cannot link to the layer root")
        try:
            lparent = self._parent(lparts[:-1], create=False)
        except NotADirectory:
            lparent = None
        lst = _lstat_at(lparent.fd, lparts[-1]) if lparent is not None else None
        if lparent is None or lst is None:
            raise InvalidArgument(f"hard link {e.name!r}: target {e.linkname!r} not found")
        if stat.S_ISDIR(lst.st_mode):
            raise InvalidArgument(f"hard link {e.name!r}: target {e.linkname!r} is a directory")
        # follow_symlinks=False: a link to a symlink links the symlink itself (linkat
        # without AT_SYMLINK_FOLLOW), so it cannot reach what the symlink points to.
        os.link(lparts[-1], name, src_dir_fd=lparent.fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(lst.st_mode):
            _set_symlink_attrs(dir_fd, name, e)
        else:
            self._set_attrs_at(dir_fd, name, e)

    def _set_attrs_at(self, dir_fd: int, name: str, e: Entry) -> None:
        """Attributes of a non-symlink we cannot open for I/O (device, FIFO, link)."""
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):  # cannot happen: we just made it
                raise InvalidArgument(f"tar entry {e.name!r}: replaced while applying")
            # An O_PATH fd accepts no f*() calls; its /proc magic link reaches the very
            # inode we opened, whatever happens to the name meanwhile.
            _set_attrs(f"/proc/self/fd/{fd}", e, set_times=True)
        finally:
            os.close(fd)

    # -- whiteouts ---------------------------------------------------------------------

    def _whiteout(self, e: Entry, parts: tuple[str, ...]) -> None:
        base, dir_parts = parts[-1], parts[:-1]
        if base == WHITEOUT_OPAQUE:
            self._opaque(dir_parts)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            # Other `.wh..wh.` names are aufs bookkeeping (e.g. `.wh..wh.plnk`); never content.
            log.debug("tar entry %r: ignoring whiteout metadata entry", e.name)
            return
        original = base[len(WHITEOUT_PREFIX) :]
        if original in ("", ".", ".."):
            raise InvalidArgument(f"tar entry {e.name!r}: invalid whiteout name")

        if self.mode == "delete":
            parent = self._existing_parent(dir_parts)
            if parent is not None and _lstat_at(parent.fd, original) is not None:
                _remove_at(parent.fd, original)
                self._invalidate()
            return

        parent = self._parent(dir_parts, create=True)
        assert parent is not None
        if _lstat_at(parent.fd, original) is not None:
            _remove_at(parent.fd, original)
            self._invalidate()
        # overlayfs's whiteout: a 0/0 character device hides the name in lower layers.
        os.mknod(original, stat.S_IFCHR, 0, dir_fd=parent.fd)
        os.chown(original, e.uid, e.gid, dir_fd=parent.fd, follow_symlinks=False)
        self._created((*parent.canonical, original))

    def _opaque(self, dir_parts: tuple[str, ...]) -> None:
        if self.mode == "delete":
            parent = self._existing_parent(dir_parts)
            if parent is not None:
                self._empty_of_lower(parent.fd, parent.canonical)
                self._invalidate()
            return
        parent = self._parent(dir_parts, create=True)
        assert parent is not None
        os.setxattr(f"/proc/self/fd/{parent.fd}", OVERLAY_OPAQUE_XATTR, b"y")
        if self.lowers is not None:
            # The lowers below this directory are hidden now, their symlinks included.
            self.lowers.opaque_upper.add(parent.canonical)
            self._invalidate()

    def _empty_of_lower(self, dir_fd: int, canonical: Canonical) -> None:
        """Remove what lower layers left under a directory; keep what this layer wrote."""
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            for name in os.listdir(fd):
                child = (*canonical, name)
                st = _lstat_at(fd, name)
                if st is None:
                    continue
                if child in self._unpacked or child in self._unpacked_ancestors:
                    # Ours (or holds something of ours): keep it, but a directory merged
                    # into a lower one must still lose the lower one's contents.
                    if stat.S_ISDIR(st.st_mode):
                        self._empty_child(fd, name, child)
                    continue
                _remove_at(fd, name)
        finally:
            os.close(fd)

    def _empty_child(self, dir_fd: int, name: str, canonical: Canonical) -> None:
        fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            self._empty_of_lower(fd, canonical)
        finally:
            os.close(fd)

    def _mark_unpacked(self, canonical: Canonical) -> None:
        if self.mode != "delete":
            return
        self._unpacked.add(canonical)
        for i in range(len(canonical) - 1, -1, -1):
            prefix = canonical[:i]
            if prefix in self._unpacked_ancestors:
                break
            self._unpacked_ancestors.add(prefix)

    # -- parents -----------------------------------------------------------------------

    def _parent(self, parts: tuple[str, ...], *, create: bool) -> ResolvedDir | None:
        hit = self._cache.get(parts)
        if hit is not None:
            self._cache.move_to_end(parts)
            return hit
        # Start from the deepest ancestor already open (a sibling directory's parent).
        base, rest = None, parts
        for i in range(len(parts) - 1, 0, -1):
            base = self._cache.get(parts[:i])
            if base is not None:
                self._cache.move_to_end(parts[:i])
                rest = parts[i:]
                break
        resolved = self.root.resolve_dir(
            rest,
            create=create,
            on_create=self._on_create if create else None,
            lower_link=self._lower_link if self.lowers is not None else None,
            base=base,
        )
        if resolved is None:
            return None
        self._cache[parts] = resolved
        if len(self._cache) > _CACHE_SIZE:
            _, old = self._cache.popitem(last=False)
            self._retired.append(old.fd)
        return resolved

    def _existing_parent(self, parts: tuple[str, ...]) -> ResolvedDir | None:
        """The directory for a delete-mode whiteout: absent or not a directory = nothing to do."""
        try:
            return self._parent(parts, create=False)
        except NotADirectory:
            return None

    def _on_create(self, dir_fd: int, name: str, canonical: Canonical) -> None:
        """An implicit parent was made: copy the attributes of the directory it shadows.

        In overlay mode a fresh 0755 root-owned directory in the upperdir would replace the
        mode, owner and xattrs the merged view showed for it; take them from the lowers.
        """
        found = self.lowers.entry(canonical) if self.lowers is not None else None
        if found is None or not stat.S_ISDIR(found[1].st_mode):
            return
        src_fd = os.open(found[0], os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _copy_dir_attrs(src_fd, dir_fd, name)
            src = os.fstat(src_fd)
        finally:
            os.close(src_fd)
        new = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        self._dir_times[canonical] = (new.st_dev, new.st_ino, src.st_atime_ns, src.st_mtime_ns)

    def _lower_link(self, canonical: Canonical) -> str | None:
        assert self.lowers is not None
        target = self.lowers.symlink_target(canonical)
        if target is not None:
            self._via_lower_links.add(canonical)
        return target

    def _created(self, canonical: Canonical) -> None:
        """Something now exists at `canonical` in the target; drop lookups it changes."""
        if canonical in self._via_lower_links:
            self._invalidate()

    def _invalidate(self) -> None:
        self._retired.extend(r.fd for r in self._cache.values())
        self._cache.clear()

    def _release(self) -> None:
        for fd in self._retired:
            os.close(fd)
        self._retired.clear()

    def finish(self) -> None:
        """Set directory times, now that nothing more will be written into them."""
        try:
            for canonical, (dev, ino, atime, mtime) in self._dir_times.items():
                fd = self.root.open_canonical_dir(canonical)
                if fd is None:
                    continue
                try:
                    st = os.fstat(fd)
                    if (st.st_dev, st.st_ino) == (dev, ino):
                        os.utime(fd, ns=(atime, mtime))
                finally:
                    os.close(fd)
        except OSError as e:
            raise _os_error("apply layer: set directory times", e) from None
        except (ValueError, OverflowError) as e:
            raise _unexpected("apply layer: set directory times", e) from None


# -- attribute helpers -------------------------------------------------------------------


def _set_attrs(handle: int | str, e: Entry, *, set_times: bool) -> None:
    """Owner, xattrs, mode, times of a non-symlink, through an fd or a /proc fd path.

    Order matters: chown clears setuid/setgid and security.capability, so it goes first,
    then xattrs, then the mode.
    """
    os.chown(handle, e.uid, e.gid)
    _set_xattrs(handle, e, follow_symlinks=True)
    os.chmod(handle, e.mode & 0o7777)
    if set_times:
        os.utime(handle, ns=_times(e))


def _set_symlink_attrs(dir_fd: int, name: str, e: Entry) -> None:
    # No chmod: a symlink's mode means nothing on Linux and cannot be changed.
    os.chown(name, e.uid, e.gid, dir_fd=dir_fd, follow_symlinks=False)
    _set_xattrs(f"/proc/self/fd/{dir_fd}/{name}", e, follow_symlinks=False)
    os.utime(name, ns=_times(e), dir_fd=dir_fd, follow_symlinks=False)


def _set_xattrs(handle: int | str, e: Entry, *, follow_symlinks: bool) -> None:
    for name, data in e.xattrs.items():
        if name.startswith("trusted."):
            # The overlay driver keys opaque dirs, redirects and metacopy on trusted.*;
            # a layer must not forge them.
            log.warning("tar entry %r: ignoring xattr %s", e.name, name)
            continue
        try:
            os.setxattr(handle, name, data, follow_symlinks=follow_symlinks)
        except OSError as err:
            # user.* is only allowed on files and directories; some filesystems lack
            # xattrs altogether. Neither is the archive's fault (containerd agrees).
            if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) or (
                err.errno == errno.EPERM and name.startswith("user.") and e.type not in (REGULAR, DIRECTORY)
            ):
                log.warning("tar entry %r: ignoring xattr %s: %s", e.name, name, err.strerror)
                continue
            raise


def _copy_dir_attrs(src_fd: int, dir_fd: int, name: str) -> None:
    """Give the directory `name` the owner, non-trusted xattrs and mode of `src_fd`."""
    st = os.fstat(src_fd)
    src = f"/proc/self/fd/{src_fd}"
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.chown(fd, st.st_uid, st.st_gid)
        try:
            keys = os.listxattr(src)
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            keys = []
        for key in keys:
            if key.startswith("trusted."):
                continue
            try:
                os.setxattr(fd, key, os.getxattr(src, key))
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENODATA):
                    raise
        os.chmod(fd, stat.S_IMODE(st.st_mode))
    finally:
        os.close(fd)


def _times(e: Entry) -> tuple[int, int]:
    """(atime, mtime) in ns; PAX times keep their fraction; atime is never before mtime."""
    mtime = e.mtime_ns
    atime = e.atime_ns
    if atime is None or atime < mtime:
        atime = mtime
    return _clamp(atime), _clamp(mtime)


def _clamp(ns: int) -> int:
    return max(-_I64_MAX, min(_I64_MAX, ns))


# -- header checks -------------------------------------------------------------------------


def _check_entry(e: Entry) -> None:
    """Refuse header values the system calls cannot take, in words (before any of them runs).

    Python's os functions would refuse them too, but with Python's words ("Python int too
    large to convert to C int", "embedded null byte"), which name neither the entry nor the field.
    """
    for what, value in (("name", e.name), ("link target", e.linkname)):
        if "\0" in value:
            raise InvalidArgument(f"tar entry {e.name!r}: its {what} contains a NUL byte")
    if e.type in (CHAR, BLOCKDEV):
        check_device_number(e.devmajor, e.devminor, f"tar entry {e.name!r}", InvalidArgument)
    for what, ident in (("uid", e.uid), ("gid", e.gid)):
        if not 0 <= ident <= _ID_MAX:
            raise InvalidArgument(f"tar entry {e.name!r}: {what} {ident} is out of range (0-{_ID_MAX})")
    for key in e.xattrs:
        if not key or "\0" in key:
            raise InvalidArgument(f"tar entry {e.name!r}: invalid xattr name {key!r}")


def _unexpected(what: str, e: Exception) -> DockyardError:
    """A Python-level error out of applying: a domain error in words, the details in the log."""
    log.debug("%s: %s: %s", what, type(e).__name__, e)
    if isinstance(e, MemoryError):
        return ResourceExhausted(f"{what}: out of memory")
    if isinstance(e, UnicodeError):
        return InvalidArgument(f"{what}: a name or value is not valid text")
    if isinstance(e, OverflowError | struct.error | ArithmeticError):
        return InvalidArgument(f"{what}: a number in the header is out of range")
    if isinstance(e, ValueError):  # NUL bytes were refused by name in `_check_entry`
        return InvalidArgument(f"{what}: a header value is invalid")
    log.exception("%s: unexpected error", what)
    return Internal(f"{what}: unexpected error while applying the layer")


# -- filesystem helpers ------------------------------------------------------------------


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove_at(dir_fd: int, name: str) -> None:
    """Remove `name` (a whole tree if a directory) without following any symlink."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        # rmtree with dir_fd uses the fd-based walk that never follows symlinks.
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _os_error(what: str, exc: OSError) -> DockyardError:
    return from_os_error(what, exc)  # one errno table for every module acting on a caller's paths

