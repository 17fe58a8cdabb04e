"""RUN --mount: what a step mounts for itself, and the daemon's cache-mount directories.

    m = parse_mount("type=cache,target=/root/.cache,sharing=locked", expand=str, workdir="/")
    async with cache_dirs.use("default", m) as host_dir: ...   # bound at m.target for the step

As the Dockerfile reference (and buildkit's parser) has it: `--mount` takes comma-separated
`key=value` fields (CSV quoting allowed), values expanded with the stage's ARG/ENV:
- `type=bind` (the default): `source` (default "/") of `from` (a stage name or index, an image;
  default the build context) at `target`, read-only. `rw` is not supported yet.
- `type=cache`: a directory the daemon keeps across builds at `target`, named by `id` (default
  the target), created with `mode` (0755), `uid`/`gid` (0); `sharing` = `shared` (default:
  concurrent steps use it together), `locked` (one step at a time, others wait), `private` (a
  step that finds it in use gets a fresh directory, discarded after). `from`/`source` of a cache
  are not supported yet.
- `type=tmpfs`: an empty tmpfs at `target` (`size` in bytes, or with k, m, g).
- `type=secret` and `type=ssh` are not supported yet (Unimplemented).
A relative `target` is below the working directory. Nothing mounted reaches the layer: the
step's mount points that the image lacked are removed after (runstep.py).

Cache directories: `<root>/<namespace>/<sha256(id)>/{data,lock}`; a step holds a `flock` on
`lock` while it uses `data` (shared or exclusive, per `sharing`), and touches `lock`, whose
mtime then says when it was last used. `prune` removes those not in use (`dock builder prune`).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import hashlib
import os
import posixpath
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dockyard_common.containerlog import parse_size
from dockyard_common.errors import InvalidArgument, Unimplemented
from supervisor.build.cacheprune import CacheEntry

MOUNT_TYPES = ("bind", "cache", "tmpfs", "secret", "ssh")
SHARING = ("shared", "private", "locked")
_BOOL_KEYS = {"readonly": True, "ro": True, "readwrite": False, "rw": False}


@dataclass(frozen=True)
class RunMount:
    type: str
    target: str
    source: str = ""
    from_: str = ""
    readonly: bool = True
    id: str = ""
    sharing: str = "shared"
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    size: int = 0  # tmpfs; 0: the kernel's default

    def key(self) -> dict[str, object]:
        """What of the mount a step's cache key depends on (the contents of a bind's source
        are added by the builder; a cache's contents never are, as buildkit's)."""
        return {"type": self.type, "target": self.target, "source": self.source, "from": self.from_,
                "readonly": self.readonly, "id": self.id, "sharing": self.sharing, "mode": self.mode,
                "uid": self.uid, "gid": self.gid, "size": self.size}


def parse_mount(text: str, expand: Callable[[str], str], workdir: str) -> RunMount:
    """One `--mount` value; InvalidArgument for a malformed one, Unimplemented for what we lack."""
    try:
        fields = next(csv.reader([text]))
    except (csv.Error, StopIteration):
        raise InvalidArgument(f"RUN --mount={text}: not comma-separated key=value fields") from None
    values: dict[str, str] = {}
    flags: dict[str, bool] = {}
    for field in fields:
        key, eq, value = field.partition("=")
        key = key.strip().lower()
        if key in _BOOL_KEYS:
            on = True if not eq else _bool(text, key, expand(value))
            flags["readonly"] = on if _BOOL_KEYS[key] else not on
            continue
        if key in ("src",):
            key = "source"
        elif key in ("dst", "destination"):
            key = "target"
        if key not in ("type", "from", "source", "target", "id", "sharing", "mode", "uid", "gid", "size",
                       "required", "env"):
            raise InvalidArgument(f"RUN --mount={text}: unexpected key {key!r}")
        if not eq:
            raise InvalidArgument(f"RUN --mount={text}: {key} needs a value ({key}=...)")
        values[key] = expand(value) if key != "type" else value.lower()
    kind = values.get("type", "bind")
    if kind not in MOUNT_TYPES:
        raise InvalidArgument(f"RUN --mount={text}: unknown type {kind!r} (want {', '.join(MOUNT_TYPES)})")
    if kind in ("secret", "ssh"):
        raise Unimplemented(f"RUN --mount=type={kind} is not supported yet")
    target = values.get("target", "")
    if not target:
        raise InvalidArgument(f"RUN --mount={text}: a target is required")
    target = posixpath.normpath(posixpath.join("/", workdir, target))
    readonly = flags.get("readonly", kind == "bind")
    if kind == "bind" and not readonly:
        raise Unimplemented("RUN --mount=type=bind,rw is not supported yet")
    if kind == "cache" and ("from" in values or "source" in values):
        raise Unimplemented("RUN --mount=type=cache with from or source is not supported yet")
    sharing = values.get("sharing", "shared")
    if sharing not in SHARING:
        raise InvalidArgument(f"RUN --mount={text}: sharing {sharing!r}: want shared, private or locked")
    return RunMount(kind, target, values.get("source", "/" if kind == "bind" else ""), values.get("from", ""),
                    readonly, values.get("id", target) if kind == "cache" else "", sharing,
                    _number(text, values, "mode", 8, 0o755), _number(text, values, "uid", 10, 0),
                    _number(text, values, "gid", 10, 0), _size(text, values.get("size", "")))


def mount_from_values(texts: list[str]) -> list[str]:
    """The `from=` values of RUN --mount flags as written (the plan's stage dependencies);
    malformed flags are left for `parse_mount` to refuse."""
    out: list[str] = []
    for text in texts:
        with contextlib.suppress(csv.Error, StopIteration):
            for field in next(csv.reader([text])):
                key, eq, value = field.partition("=")
                if key.strip().lower() == "from" and eq:
                    out.append(value)
    return out


def tmpfs_mount(m: RunMount) -> dict[str, object]:
    options = ["nosuid", "nodev"] + ([f"size={m.size}"] if m.size else [])
    return {"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": options}


def bind_mount(source: str, m: RunMount) -> dict[str, object]:
    return {"destination": m.target, "type": "bind", "source": source,
            "options": ["rbind", "ro" if m.readonly else "rw"]}


class CacheDirs:
    """The daemon's cache-mount directories under `root` (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, ns: str, cache_id: str) -> Path:
        return self.root / ns / hashlib.sha256(cache_id.encode()).hexdigest()

    @contextlib.asynccontextmanager
    async def use(self, ns: str, m: RunMount, scratch: Path) -> AsyncIterator[Path]:
        """The host directory of cache mount `m`, held per its sharing mode for the block
        (`scratch`: where a private mount's fresh directory goes when the cache is in use)."""
        base = self.path(ns, m.id)
        fd = await asyncio.to_thread(self._open, base, m)
        try:
            exclusive = m.sharing != "shared"
            if m.sharing == "private":
                if not await asyncio.to_thread(_try_lock, fd, fcntl.LOCK_EX):
                    fresh = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="build-cache-", dir=scratch))
                    try:
                        await asyncio.to_thread(_prepare, fresh, m)
                        yield fresh
                    finally:
                        await asyncio.shield(asyncio.to_thread(shutil.rmtree, fresh, True))
                    return
            else:
                await _lock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield base / "data"
        finally:
            os.close(fd)  # releases the lock

    def _open(self, base: Path, m: RunMount) -> int:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = base / "data"
        if not data.exists():
            staging = Path(tempfile.mkdtemp(prefix="new-", dir=base))
            _prepare(staging, m)
            with contextlib.suppress(OSError):  # made meanwhile by another step: use that one
                staging.rename(data)
            shutil.rmtree(staging, ignore_errors=True)
        fd = os.open(base / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        os.utime(fd)  # last used
        return fd

    def usage(self, ns: str) -> list[CacheEntry]:
        """The namespace's cache directories as build cache entries (blocking). In use is probed
        with a non-blocking exclusive lock, let go at once: a step that asks for it in that
        instant waits a poll (locked) or gets a fresh directory (private), as if another step
        held it."""
        found: list[CacheEntry] = []
        top = self.root / ns
        if not top.is_dir():
            return found
        for base in sorted(top.iterdir()):
            try:
                fd = os.open(base / "lock", os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                used = datetime.fromtimestamp(os.fstat(fd).st_mtime, UTC)
                created = datetime.fromtimestamp(os.stat(base).st_ctime, UTC)
                free = _try_lock(fd, fcntl.LOCK_EX)
            finally:
                os.close(fd)  # releases the probe's lock
            found.append(CacheEntry(f"cachemount:{base.name}", "exec.cachemount", _disk_usage(base / "data"),
                                    created, used, in_use=not free))
        return found

    def prune(self, ns: str, unused_for: timedelta, at: datetime) -> tuple[list[str], int]:
        """Remove the namespace's cache directories not in use (and unused for `unused_for`);
        their names and the bytes freed."""
        removed: list[str] = []
        freed = 0
        top = self.root / ns
        if not top.is_dir():
            return removed, freed
        for base in sorted(top.iterdir()):
            lock = base / "lock"
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                if unused_for and datetime.fromtimestamp(os.fstat(fd).st_mtime, at.tzinfo) > at - unused_for:
                    continue
                if not _try_lock(fd, fcntl.LOCK_EX):
                    continue  # a step uses it
                size = _disk_usage(base / "data")
                shutil.rmtree(base / "data", ignore_errors=True)
                lock.unlink(missing_ok=True)
                shutil.rmtree(base, ignore_errors=True)
                removed.append(f"cachemount:{base.name}")
                freed += size
            finally:
                os.close(fd)
        return removed, freed


def _prepare(path: Path, m: RunMount) -> None:
    path.mkdir(exist_ok=True)
    os.chmod(path, m.mode)
    os.chown(path, m.uid, m.gid)


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


async def _lock(fd: int, kind: int) -> None:
    """Wait for the lock without holding a thread: poll (a locked cache waits for another step)."""
    delay = 0.01
    while not await asyncio.to_thread(_try_lock, fd, kind):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


def _disk_usage(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _bool(text: str, key: str, value: str) -> bool:
    if value.lower() in ("true", "1", ""):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise InvalidArgument(f"RUN --mount={text}: {key}={value!r}: want true or false")


def _number(text: str, values: dict[str, str], key: str, base: int, default: int) -> int:
    if key not in values:
        return default
    try:
        n = int(values[key], base)
    except ValueError:
        n = -1
    if n < 0 or (key == "mode" and n > 0o7777):
        raise InvalidArgument(f"RUN --mount={text}: {key}={values[key]!r} is not a valid {key}")
    return n


def _size(text: str, value: str) -> int:
    if not value:
        return 0
    try:
        return parse_size(value)
    except InvalidArgument:
        raise InvalidArgument(f"RUN --mount={text}: size={value!r}: want bytes, or with k, m or g") from None
