"""Named volumes: directories the daemon keeps for containers, per namespace.

Layout: `<root>/volumes/<namespace>/<name>/_data` (what containers mount) and, beside it,
`volume.json` ({"name", "labels", "created_at"}). Per namespace rather than engine-wide as
Docker's: a namespace is containerd's tenant boundary (each has its own containers, images and
snapshots), so one tenant must not see, use or remove another's data, and two tenants may
each have a volume `data`.

A volume is in use while a container of its namespace names it in the label
`dockyard.volume/mounts` (dockyard_common/volumelabels.py), which `dock run -v NAME:/path` sets:
users are found by one read of the namespace's container records, never by opening specs.

Writes follow the project's habit: a volume is staged under a hidden name (`.new-*`) and renamed
into place, so a crash never leaves half a volume under a real name; a removed volume is first
renamed to a hidden name (`.del-*`) and deleted after, and the hidden leftovers of a crash are
removed by the next `VolumeStore` start. A seed that fails (a full disk: ResourceExhausted)
empties the volume again, and one cut short by a crash is emptied at the next start (a marker,
`seeding`, lies beside `_data` while it copies): a half-seeded volume never passes for a seeded
one, and the next use seeds it whole. Calls on one volume are serialised by a lock per name.

    store = VolumeStore(root / "volumes", containers, snapshots, root / "tmp")
    vol, created = await store.create("default", "data", {"team": "a"})
    await store.seed("default", "data", "overlayfs", "web", "/var/lib/app")   # copy-up from a rootfs
    await store.delete("default", "data")     # FailedPrecondition while a container uses it
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from dockyard_common import volumelabels
from dockyard_common.errors import (
    AlreadyExists,
    DockyardError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    from_os_error,
)
from dockyard_common.jsonutil import json_object
from dockyard_common.mounts import mounted
from dockyard_common.rootpath import NotADirectory, RootDir, clean_name
from dockyard_common.types import Container, Mount
from supervisor import filters, labels
from supervisor.snapshotter.tree import disk_usage, empty
from supervisor.treecopy import copy_tree, is_empty

log = logging.getLogger("dockyard.volumes")
DATA = "_data"
META = "volume.json"
SEEDING = "seeding"  # beside _data while a seed copies into it
SIZE_WALKS = 4  # volume trees measured at once
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Containers(Protocol):
    async def list(self, ns: str, filter_texts: builtins.list[str] | None = None) -> builtins.list[Container]: ...


class Snapshots(Protocol):
    async def mounts(self, ns: str, sn: str, key: str) -> builtins.list[Mount]: ...


@dataclass(frozen=True)
class Volume:
    namespace: str
    name: str
    mountpoint: Path
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0  # seconds since the epoch


@dataclass(frozen=True)
class Seeded:
    seeded: bool
    entries: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Pruned:
    removed: builtins.list[str]
    space_reclaimed: int


@dataclass(frozen=True)
class LabelFilter:
    """A value of Docker's `label` / `label!` prune filters: KEY (the volume carries the key) or
    KEY=VALUE (carries it with that value)."""

    key: str
    value: str | None = None

    @classmethod
    def parse(cls, text: str, what: str = "label") -> LabelFilter:
        key, eq, value = text.partition("=")
        if not key:
            raise InvalidArgument(f"invalid {what} filter {text!r}: want KEY or KEY=VALUE")
        return cls(key, value if eq else None)

    def matches(self, found: Mapping[str, str]) -> bool:
        return self.key in found and (self.value is None or found[self.key] == self.value)


def adaptor(v: Volume) -> filters.Adaptor:
    return filters.adaptor_from({"name": v.name, "labels": v.labels})


class VolumeStore:
    def __init__(self, root: Path, containers: Containers, snapshots: Snapshots, tmp_root: Path) -> None:
        self.root = root
        self.containers = containers
        self.snapshots = snapshots
        self.tmp_root = tmp_root  # where a rootfs is mounted read-only to seed from
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._holders: dict[tuple[str, str], int] = {}
        self.cleanup()

    # -- paths and records ------------------------------------------------------------------------

    def _dir(self, ns: str, name: str) -> Path:
        return self.root / ns / volumelabels.check_name(name)

    def _read(self, ns: str, name: str) -> Volume:
        """The volume's record (blocking); NotFound when there is none."""
        vdir = self._dir(ns, name)
        try:
            raw = (vdir / META).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"volume {name!r}") from None
        doc = json_object(raw, f"volume {name!r}: {vdir / META}", Internal)
        found, created = doc.get("labels") or {}, doc.get("created_at") or 0.0
        if not isinstance(found, dict) or not isinstance(created, (int, float)):
            raise Internal(f"volume {name!r}: {vdir / META}: want labels (an object) and created_at (a number)")
        return Volume(ns, name, vdir / DATA, {str(k): str(v) for k, v in found.items()}, float(created))

    def _write_new(self, ns: str, name: str, wanted: Mapping[str, str]) -> Volume:
        """Stage the volume under a hidden name, then rename it into place (blocking)."""
        parent = self.root / ns
        parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        stage = parent / f".new-{name}-{secrets.token_hex(4)}"
        stage.mkdir(mode=0o711)
        try:
            (stage / DATA).mkdir(mode=0o755)
            os.chmod(stage / DATA, 0o755)  # beat the umask: containers of any user reach their volume
            created = time.time()
            meta = json.dumps({"name": name, "labels": dict(wanted), "created_at": created}).encode()
            with open(stage / META, "wb") as f:
                f.write(meta)
                f.flush()
                os.fsync(f.fileno())
            os.rename(stage, parent / name)  # ENOTEMPTY/EEXIST: the name is taken
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        _fsync_dir(parent)
        return Volume(ns, name, parent / name / DATA, dict(wanted), created)

    @contextlib.asynccontextmanager
    async def _locked(self, ns: str, name: str) -> AsyncIterator[None]:
        key = (ns, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._holders[key] = self._holders.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._holders[key] -= 1
            if not self._holders[key]:
                del self._holders[key], self._locks[key]

    # -- the calls ----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Remove what a crash left of staged and removed volumes (hidden entries), and empty
        again a volume whose seeding was cut short (its `SEEDING` marker is still there: half
        its copy would otherwise pass for the whole, and a volume with anything in it is never
        seeded again). Blocking: the constructor runs it at the daemon's start, before any call
        is served."""
        with contextlib.suppress(FileNotFoundError):
            for ns_dir in self.root.iterdir():
                if ns_dir.is_dir():
                    for entry in ns_dir.iterdir():
                        if entry.name.startswith((".new-", ".del-")):
                            shutil.rmtree(entry, ignore_errors=True)
                        elif (entry / SEEDING).exists():
                            self._unseed(entry)

    @staticmethod
    def _unseed(vdir: Path) -> None:
        try:
            fd = os.open(vdir / DATA, _DIR)
            try:
                empty(fd, str(vdir / DATA))
            finally:
                os.close(fd)
            (vdir / SEEDING).unlink()
        except (OSError, DockyardError) as exc:
            log.error("volume %s: emptying what a seeding cut short left: %s", vdir, exc)
            return
        log.warning("volume %s: its seeding was cut short; emptied, the next use seeds it again", vdir)

    async def create(self, ns: str, name: str, wanted: Mapping[str, str] | None = None) -> tuple[Volume, bool]:
        """The volume `name`, made now (True) or already there with the same labels (False).
        AlreadyExists when it exists with other labels."""
        volumelabels.check_name(name)
        wanted = dict(wanted or {})
        labels.validate(wanted, "volume labels")
        async with self._locked(ns, name):
            try:
                return await asyncio.to_thread(self._write_new, ns, name, wanted), True
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise _os_error(f"volume {name!r}", exc) from None
            existing = await asyncio.to_thread(self._read, ns, name)
            if existing.labels != wanted:
                raise AlreadyExists(f"volume {name!r} exists with other labels ({_labels_text(existing.labels)})")
            return existing, False

    async def get(self, ns: str, name: str) -> Volume:
        return await asyncio.to_thread(self._read, ns, name)

    async def list(self, ns: str, filter_texts: Iterable[str] = ()) -> builtins.list[Volume]:
        """The namespace's volumes matching any of the filters, by name."""
        match = filters.parse_all(filter_texts)

        def scan() -> builtins.list[Volume]:
            try:
                names = sorted(e.name for e in os.scandir(self.root / ns) if not e.name.startswith("."))
            except FileNotFoundError:
                return []
            found = []
            for name in names:
                try:
                    found.append(self._read(ns, name))
                except (NotFound, InvalidArgument):  # removed meanwhile; not a volume
                    continue
                except Internal as exc:  # one broken record must not hide the others
                    log.warning("volumes of %s: %s", ns, exc)
            return found

        return [v for v in await asyncio.to_thread(scan) if match.match(adaptor(v))]

    async def sizes(self, volumes: Iterable[Volume]) -> dict[str, int]:
        """Volume name -> bytes on disk under its mountpoint (a volume removed meanwhile: 0).
        A few trees are walked at once: each walk is a thread's stat calls."""
        gate = asyncio.Semaphore(SIZE_WALKS)

        def walk(vol: Volume) -> int:
            try:
                return disk_usage(str(vol.mountpoint)).size
            except FileNotFoundError:
                return 0

        async def one(vol: Volume) -> tuple[str, int]:
            async with gate:
                return vol.name, await asyncio.to_thread(walk, vol)

        return dict(await asyncio.gather(*(one(v) for v in volumes)))

    async def users(self, ns: str) -> dict[str, builtins.list[str]]:
        """Volume name -> ids of the containers of `ns` whose label names it."""
        found: dict[str, builtins.list[str]] = {}
        for c in await self.containers.list(ns, [f'labels."{volumelabels.MOUNTS}"']):
            for name in volumelabels.names_in(c.labels):
                found.setdefault(name, []).append(c.id)
        return found

    async def delete(self, ns: str, name: str) -> None:
        async with self._locked(ns, name):
            await self._delete(ns, name)

    async def _delete(self, ns: str, name: str) -> int:
        """Remove the volume (lock held); the bytes it held."""
        vdir = self._dir(ns, name)
        await self.get(ns, name)  # NotFound first
        users = (await self.users(ns)).get(name)
        if users:
            shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
            raise FailedPrecondition(f"volume {name!r} is in use by container {shown}: remove the container first")

        def remove() -> int:
            size = disk_usage(str(vdir)).size
            hidden = vdir.with_name(f".del-{name}-{secrets.token_hex(4)}")
            os.rename(vdir, hidden)  # gone under its name at once; the bytes go next
            shutil.rmtree(hidden, ignore_errors=True)
            return size

        try:
            return await asyncio.to_thread(remove)
        except FileNotFoundError:
            raise NotFound(f"volume {name!r}") from None
        except OSError as exc:
            raise _os_error(f"removing volume {name!r}", exc) from None

    async def prune(self, ns: str, filter_texts: Iterable[str] = (), *, named: bool = True,
                    carrying: Iterable[LabelFilter] = (), not_carrying: Iterable[LabelFilter] = ()) -> Pruned:
        """Remove every volume of `ns` that no container uses and the filters match (any of
        `filter_texts`, every one of `carrying`, none of `not_carrying`); anonymous ones only
        unless `named`."""
        carrying, not_carrying = tuple(carrying), tuple(not_carrying)
        removed, space = [], 0
        for vol in await self.list(ns, filter_texts):
            if not named and vol.labels.get(volumelabels.ANONYMOUS) != "true":
                continue
            if not all(f.matches(vol.labels) for f in carrying) or any(f.matches(vol.labels) for f in not_carrying):
                continue
            async with self._locked(ns, vol.name):
                with contextlib.suppress(NotFound, FailedPrecondition):  # gone, or used meanwhile: keep it
                    space += await self._delete(ns, vol.name)
                    removed.append(vol.name)
        return Pruned(removed, space)

    async def seed(self, ns: str, name: str, snapshotter: str, key: str, path: str) -> Seeded:
        """Docker's copy-up: fill the empty volume with what snapshot `key` holds at `path`."""
        if not path.startswith("/"):
            raise InvalidArgument(f"seed path {path!r} must be absolute in the container")
        if not snapshotter or not key:
            raise InvalidArgument("seeding a volume needs the snapshotter and key of a container's root filesystem")
        parts = clean_name(path, what="volume path")  # `..` above the root is refused
        async with self._locked(ns, name):
            vol = await self.get(ns, name)
            try:
                if not await asyncio.to_thread(_empty_dir, vol.mountpoint):
                    return Seeded(False)
                rootfs = await self.snapshots.mounts(ns, snapshotter, key)
                return await asyncio.to_thread(self._seed, rootfs, parts, vol)
            except OSError as exc:
                raise _os_error(f"seeding volume {name!r} from {path}", exc) from None

    def _seed(self, rootfs: builtins.list[Mount], parts: tuple[str, ...], vol: Volume) -> Seeded:
        with mounted(rootfs, self.tmp_root, readonly=True) as top, RootDir(top, "the container's root") as root:
            try:
                found = root.resolve_dir(parts)  # symlinks followed as the container sees them
            except NotADirectory:
                return Seeded(False)  # a file there: nothing a directory mount could show
            if found is None:
                return Seeded(False)  # the image has nothing there
            try:
                src = os.open(".", _DIR, dir_fd=found.fd)
            finally:
                os.close(found.fd)
            try:
                dst = os.open(vol.mountpoint, _DIR)
                try:
                    if not is_empty(dst):  # filled meanwhile by a container using it
                        return Seeded(False)
                    marker = vol.mountpoint.parent / SEEDING
                    marker.touch(mode=0o600)  # before the first byte: a crash mid-copy is known at start
                    _fsync_dir(marker.parent)
                    try:
                        stats = copy_tree(src, dst)
                    except BaseException:
                        empty(dst)  # as it was: the next start seeds again (failing, the marker stays)
                        marker.unlink(missing_ok=True)
                        raise
                    marker.unlink()
                finally:
                    os.close(dst)
            finally:
                os.close(src)
        return Seeded(True, stats.entries, stats.bytes)


def _os_error(what: str, exc: OSError) -> DockyardError:
    """A failure in the daemon's own volume directories: a full disk (or quota) is
    ResourceExhausted, as everywhere (dockyard_common.errors.from_os_error); anything else there
    is the daemon's problem, Internal."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return from_os_error(what, exc)
    return Internal(f"{what}: {exc.strerror or exc}")


def _empty_dir(path: Path) -> bool:
    fd = os.open(path, _DIR)
    try:
        return is_empty(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _labels_text(found: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(found.items())) or "none"
