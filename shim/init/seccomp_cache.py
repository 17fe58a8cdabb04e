"""A cache of libseccomp's BPF programs, so a repeated seccomp profile is not generated again.

libseccomp takes ~15 ms of CPU to turn a profile like Docker's default into its ~960-instruction
BPF program; loading a built program takes ~1 ms. The program is a pure function of the compiled
profile (`seccomp.Program`), libseccomp's version, the native architecture and the kernel (which
actions libseccomp accepts), so those, with FORMAT, hashed, are the entry's key.

Where: one cache per runtime state dir, next to the shim zygote's socket:
<runtime dir>/.dockyard-shim/seccomp/<key>.bpf for a bundle at <runtime dir>/<namespace>/<id>
(see dockyard_common.shimlaunch). It is used only when that .dockyard-shim dir already exists and is ours, so a
bundle laid out otherwise (a test's temp dir) gets no cache and leaves nothing behind; the
seccomp dir must be ours and 0700, its entries are opened relative to it without following links.

An entry: a header (magic, FORMAT, the seccomp(2) flags, the program's length, the key, and a
sha256 over those and the program) and the program (`struct sock_filter[]`). Written to a temp name (0600) and
renamed into place; read back only when every header field checks, else ignored (and rewritten by
the caller). At most MAX_ENTRIES entries: a write beyond evicts the least recently used (a hit
touches its entry); a write also removes the temp files a crashed writer left. Every failure
here is logged at debug and treated as a miss: the cache never fails a container.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dockyard_common import linux as L
from dockyard_common.shimlaunch import ZYGOTE_DIR

# Python's own SHA-256, not hashlib's: hashlib loads OpenSSL's libcrypto, whose relocated pages
# would be every shim's own (the shim speaks no TLS and maps no OpenSSL of its own).
try:
    from _sha2 import sha256  # Python 3.12+
except ImportError:
    from _sha256 import sha256

if TYPE_CHECKING:
    from shim.init.seccomp import Program

log = logging.getLogger("dockyard.shim.seccomp")

FORMAT = 1
SUBDIR = "seccomp"
SUFFIX = ".bpf"
MAX_ENTRIES = 64
# A temp file (`.<name>.<pid>.tmp`) older than this, or whose writer is gone, was left by a
# crash: eviction removes it. A live writer renames its own within milliseconds.
STALE_TEMP_SECONDS = 60
_MAGIC = b"DYSCBPF\0"
# magic, FORMAT, flags, program length, key; then the sha256 of those and the program
_FIELDS = struct.Struct("<8sIII32s")
_HEADER = struct.Struct(_FIELDS.format + "32s")
_MAX_PROGRAM = L.BPF_MAXINSNS * L.SOCK_FILTER_SIZE


@dataclass(frozen=True)
class Compiled:
    """A loadable program: `struct sock_filter[]` bytes and the seccomp(2) flags to load it with."""

    program: bytes
    flags: int


def cache_dir(bundle: str) -> str | None:
    """The cache for the runtime state dir of `bundle`; None when there is none to use."""
    root = os.path.dirname(os.path.dirname(os.path.realpath(bundle)))
    if root == "/":
        return None
    marker = os.path.join(root, ZYGOTE_DIR)
    try:
        st = os.lstat(marker)
    except OSError:
        return None
    if not (stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()):
        return None
    return os.path.join(marker, SUBDIR)


def key(program: Program) -> str:
    """The hex sha256 naming `program`'s entry: the program and all else libseccomp's output depends on."""
    described = [
        FORMAT,
        L.libseccomp_identity(),
        os.uname().release,
        program.default_action,
        list(program.architectures),
        [[r.action, list(r.names), [list(a) for a in r.args]] for r in program.rules],
    ]
    return sha256(json.dumps(described, separators=(",", ":")).encode()).hexdigest()


def _open_dir(path: str, create: bool) -> int | None:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        os.close(fd)
        log.debug("seccomp cache %s: not ours or not private (uid %d, mode %o): unused", path, st.st_uid,
                  st.st_mode & 0o777)
        return None
    return fd


def read(directory: str, entry_key: str) -> Compiled | None:
    """The entry for `entry_key`, or None (absent, unreadable, corrupt or another key's)."""
    name = entry_key + SUFFIX
    try:
        dfd = _open_dir(directory, create=False)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.debug("seccomp cache %s: %s", directory, e)
        return None
    if dfd is None:
        return None
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return None
        try:
            data = os.read(fd, _HEADER.size + _MAX_PROGRAM + 1)
            # Touched on a hit: eviction drops the least recently used entry.
            os.utime(fd)
        finally:
            os.close(fd)
        entry = _decode(data, entry_key)
        if entry is None:
            log.debug("seccomp cache %s/%s: corrupt or mismatching entry: ignored", directory, name)
        return entry
    except OSError as e:
        log.debug("seccomp cache %s/%s: %s", directory, name, e)
        return None
    finally:
        os.close(dfd)


def _decode(data: bytes, entry_key: str) -> Compiled | None:
    if len(data) < _HEADER.size:
        return None
    magic, fmt, flags, length, digest, checksum = _HEADER.unpack_from(data)
    program = data[_HEADER.size:]
    if (magic != _MAGIC or fmt != FORMAT or digest != bytes.fromhex(entry_key) or length != len(program)
            or not 0 < length <= _MAX_PROGRAM or length % L.SOCK_FILTER_SIZE
            or sha256(data[:_FIELDS.size] + program).digest() != checksum):
        return None
    return Compiled(program, flags)


def encode(entry_key: str, entry: Compiled) -> bytes:
    """An entry's file content (the header, then the program)."""
    fields = _FIELDS.pack(_MAGIC, FORMAT, entry.flags, len(entry.program), bytes.fromhex(entry_key))
    return fields + sha256(fields + entry.program).digest() + entry.program


def write(directory: str, entry_key: str, entry: Compiled) -> None:
    """Store `entry` under `entry_key` (best effort: a failure is logged at debug)."""
    if not 0 < len(entry.program) <= _MAX_PROGRAM:
        log.debug("seccomp cache: a program of %d bytes is not cached", len(entry.program))
        return
    name = entry_key + SUFFIX
    temp = f".{name}.{os.getpid()}.tmp"
    try:
        dfd = _open_dir(directory, create=True)
        if dfd is None:
            return
    except OSError as e:
        log.debug("seccomp cache %s: %s", directory, e)
        return
    try:
        _evict(dfd, directory)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            os.write(fd, encode(entry_key, entry))
        finally:
            os.close(fd)
        # A reader sees the old entry, no entry or the whole new one; a torn one after a crash
        # fails its checksum.
        os.rename(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        log.debug("seccomp cache %s/%s: stored (%d instructions)", directory, name,
                  len(entry.program) // L.SOCK_FILTER_SIZE)
    except OSError as e:
        log.debug("seccomp cache %s/%s: not stored: %s", directory, name, e)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dfd)
    finally:
        os.close(dfd)


def _writer_gone(temp: str) -> bool:
    """Whether the process named in the temp file `temp` no longer exists."""
    try:
        pid = int(temp.rsplit(".", 2)[-2])
    except (IndexError, ValueError):
        return True  # not a name `write` makes: nobody will rename it
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _evict(dfd: int, directory: str) -> None:
    entries: list[tuple[int, str]] = []
    stale_before = time.time_ns() - STALE_TEMP_SECONDS * 1_000_000_000
    with os.scandir(dfd) as it:
        for e in it:
            try:
                mtime = e.stat(follow_symlinks=False).st_mtime_ns
            except OSError:
                continue
            if e.name.endswith(SUFFIX) and not e.name.startswith("."):
                entries.append((mtime, e.name))
            elif e.name.startswith(".") and e.name.endswith(".tmp") and (
                    mtime < stale_before or _writer_gone(e.name)):
                with contextlib.suppress(OSError):
                    os.unlink(e.name, dir_fd=dfd)
                    log.debug("seccomp cache %s/%s: stale temp file removed", directory, e.name)
    entries.sort()
    for _, name in entries[: max(0, len(entries) - MAX_ENTRIES + 1)]:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dfd)
            log.debug("seccomp cache %s/%s: evicted", directory, name)
