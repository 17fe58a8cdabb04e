"""On-disk ingest directories: `<root>/ingest/<sha256(ref)>/{data,ref,startedat,updatedat,total,expected}`.

Everything here blocks; the store calls it from worker threads. The layout follows
containerd's local store so an ingest can be read by either (timestamps are ISO 8601).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dockyard_common.errors import ResourceExhausted, Unavailable
from supervisor.content.store import Status

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_error(exc: OSError, what: str) -> Exception:
    """ResourceExhausted for a full disk or quota, else the OSError itself (to re-raise)."""
    if exc.errno in _DISK_FULL:
        return ResourceExhausted(f"{what}: {os.strerror(exc.errno or 0).lower()}")
    return exc


def ref_key(ref: str) -> str:
    # A digest of the ref keeps ingest paths short and free of '/' whatever the ref holds.
    return hashlib.sha256(ref.encode()).hexdigest()


def quote(ref: str) -> str:
    """Go's %q for the refs in our messages (containerd writes `ingest ref "x"`)."""
    return '"' + ref.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class IngestPaths:
    dir: Path

    @classmethod
    def of(cls, ingest_root: Path, ref: str) -> IngestPaths:
        return cls(ingest_root / ref_key(ref))

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def meta(self, name: str) -> Path:
        return self.dir / name


def write_small_file(path: Path, text: str) -> None:
    """Stage, fsync, rename: a reader sees the old text or the new one, never a torn one."""
    tmp = path.with_name(f"{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(text.encode())
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC)


@dataclass(frozen=True, slots=True)
class IngestMeta:
    ref: str
    total: int
    expected: str
    started_at: datetime
    updated_at: datetime


def read_meta(paths: IngestPaths) -> IngestMeta | None:
    """The recorded metadata, or None when the ingest is missing, half-made or corrupt."""
    ref = read_text(paths.meta("ref"))
    started = parse_time(read_text(paths.meta("startedat")))
    if ref is None or started is None:
        return None
    updated = parse_time(read_text(paths.meta("updatedat"))) or started
    total_text = read_text(paths.meta("total"))
    try:
        total = int(total_text) if total_text else 0
    except ValueError:
        total = 0  # a corrupt total only loses the hint, as in containerd
    expected = (read_text(paths.meta("expected")) or "").strip()
    return IngestMeta(ref, max(total, 0), expected, started, updated)


def read_status(paths: IngestPaths) -> Status | None:
    """The status of the ingest at `paths` as stored on disk, or None if it is not one."""
    try:
        st = os.stat(paths.data)
    except (FileNotFoundError, NotADirectoryError):
        return None
    meta = read_meta(paths)
    if meta is None:
        return None
    # updatedat is only rewritten on close; the data file's mtime is fresher while writing.
    updated = max(meta.updated_at, mtime(st))
    return Status(meta.ref, st.st_size, meta.total, meta.expected, meta.started_at, updated)


def write_meta(paths: IngestPaths, ref: str, total: int, expected: str, started: datetime) -> None:
    """Record a fresh ingest's metadata; the ref file goes last since it marks the ingest valid."""
    for name, value in (("total", total), ("expected", expected)):
        if value:
            write_small_file(paths.meta(name), str(value))
        else:
            _unlink_quiet(paths.meta(name))
    stamp = format_time(started)
    write_small_file(paths.meta("startedat"), stamp)
    write_small_file(paths.meta("updatedat"), stamp)
    write_small_file(paths.meta("ref"), ref)


def open_locked(paths: IngestPaths, ref: str) -> int:
    """Create (if needed) and open the ingest's data file holding an exclusive flock on it.

    flock rather than an in-memory table: the kernel drops it when the holder dies (kill -9
    included) or closes the fd, and it also excludes other processes on the same root.
    """
    for _ in range(5):
        try:
            os.makedirs(paths.dir, exist_ok=True)
            fd = os.open(paths.data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            continue  # the dir was removed (commit/abort) between makedirs and open
        except OSError as exc:
            raise disk_error(exc, f"ingest ref {quote(ref)}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Unavailable(f"ref {ref} locked") from None
        # The path must still name the inode we locked: a writer that committed or an abort
        # may have moved it away between our open and our flock.
        fst = os.fstat(fd)
        try:
            st = os.stat(paths.data)
        except FileNotFoundError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino):
            if fst.st_nlink == 1:
                return fd
            # Also linked as a blob, yet unlocked: a commit died between publishing and
            # removing its ingest. That ingest is finished; drop the name, never the blob.
            _unlink_quiet(paths.data)
        os.close(fd)
    raise Unavailable(f"ref {ref} locked: the ingest kept changing while opening it")


def still_ours(paths: IngestPaths, fd: int) -> bool:
    """Whether the data path still names the file behind `fd` (false once aborted)."""
    try:
        st = os.stat(paths.data)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def remove_dir(path: Path) -> bool:
    """Rename to a hidden name, then remove (habit 4); False if `path` did not exist.

    After the rename the ingest no longer exists for anyone, even if removal is cut short;
    a leftover hidden directory is swept by `sweep_hidden` on the next start.
    """
    hidden = path.with_name(f".{path.name}.removing-{secrets.token_hex(4)}")
    try:
        os.rename(path, hidden)
    except FileNotFoundError:
        return False
    shutil.rmtree(hidden, ignore_errors=True)
    return True


def sweep_hidden(directory: Path) -> None:
    """Remove leftovers of interrupted deletes (dot-names) from `directory`."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if not name.startswith("."):
            continue
        p = directory / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            _unlink_quiet(p)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quiet(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
