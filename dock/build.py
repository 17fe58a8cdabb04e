"""Building images in the SDK: the daemon's dockyard.build.v1.Builder service.

    async with Client(address) as c:
        builds = BuildAPI(c)
        options = BuildOptions(dockerfile=Path("app/Dockerfile").read_bytes(), tags=["app:1"])
        async for event in builds.build(directory_context(Path("app")), options):
            print(event)                      # ContextSent, ContextReceived, BuildEvent ..., BuildResult
        result = await builds.build_image(directory_context(Path("app")), options)

The context is an uncompressed tar, given as bytes, a path, a binary file or an (async)
iterable of bytes and sent in pieces (never whole); `directory_context` makes one of a
directory with `.dockerignore` applied, as the docker CLI does. `synced_context` names a
directory instead: the daemon keeps a copy of it between builds and only what changed since the
last build of that directory is sent (a manifest of the whole first, see the service's proto).
Errors are the daemon's kinds (`dockyard_common.errors`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import stat
import tarfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from dock.tarfiles import Unkept
from dock.upload import CHUNK, Sent, Source, Upload, local_error
from dockyard_api.dockyard.build.v1 import build_pb2 as pb
from dockyard_api.dockyard.build.v1 import build_pb2_grpc as pb_grpc
from dockyard_common.aio import piped
from dockyard_common.codes import error_from_status
from dockyard_common.dockerignore import Matcher, go_clean, read_patterns, walk_context
from dockyard_common.errors import InvalidArgument, error_text

MAX_DOCKERFILE = 8 << 20  # a Dockerfile (or .dockerignore) read into memory

if TYPE_CHECKING:
    from dock.client import Client

NETWORK_MODES = ("default", "none", "host")


@dataclass
class BuildOptions:
    dockerfile: bytes
    tags: list[str] = field(default_factory=list)
    build_args: list[tuple[str, str]] = field(default_factory=list)  # in order; a later key wins
    target: str = ""  # a stage name or index; "" the last stage
    no_cache: bool = False
    pull: bool = False
    platform: str = ""  # "os/arch[/variant]"; "" the daemon host's
    labels: list[tuple[str, str]] = field(default_factory=list)
    network: str = "default"  # for RUN steps: one of NETWORK_MODES


@dataclass
class ContextSent:
    """Context bytes this client has sent so far."""

    sent: int


@dataclass
class ContextReceived:
    """The daemon has the whole context, extracted."""

    bytes: int
    entries: int
    reused: int = 0  # a synced context: entries the daemon kept from the last build (not sent)


@dataclass
class BuildEvent:
    """A step starts ("step"), came from the cache ("cached"), wrote output ("output": `data`
    from `stream`), finished ("done"), or a "warning"; see the service's proto."""

    kind: str
    step: int = 0
    total: int = 0
    stage: str = ""
    text: str = ""
    data: bytes = b""
    stream: str = ""


@dataclass
class BuildResult:
    manifest_digest: str
    config_digest: str
    tags: list[str] = field(default_factory=list)


Event = ContextSent | ContextReceived | BuildEvent | BuildResult
MANIFEST_BATCH = 20_000  # entries per ContextManifest message (~1 MB)


@dataclass(frozen=True)
class SyncedContext:
    """A directory sent as a synced context (see the module docstring); `key` names its kept copy."""

    root: Path
    dockerfile: Path | None = None
    key: str = ""


@dataclass
class PruneResult:
    """Build cache records removed (keys, least recently used first) and the bytes of layers
    nothing else holds now: the next collection (`dock gc`) frees them."""

    removed: list[str]
    reclaimed_bytes: int


@dataclass
class CacheRecord:
    """One thing the daemon's build cache keeps: a step's result (`regular`, its layer blob's
    size) or a RUN --mount=type=cache directory (`exec.cachemount`, its disk usage)."""

    id: str
    type: str
    size: int
    created_at: datetime | None
    last_used: datetime | None
    in_use: bool
    shared: bool  # its layer is an image's or another record's too
    description: str


@dataclass
class CacheUsage:
    records: list[CacheRecord]
    size: int  # bytes the cache alone holds
    reclaimable: int  # what pruning all of it frees


def _when(msg: pb.CacheRecord, name: str) -> datetime | None:
    return getattr(msg, name).ToDatetime(tzinfo=UTC) if msg.HasField(name) else None


def _options_pb(o: BuildOptions) -> pb.BuildOptions:
    return pb.BuildOptions(dockerfile=o.dockerfile, tags=o.tags,
                           build_args=[pb.KeyValue(key=k, value=v) for k, v in o.build_args],
                           target=o.target, no_cache=o.no_cache, pull=o.pull, platform=o.platform,
                           labels=[pb.KeyValue(key=k, value=v) for k, v in o.labels], network=o.network)


def _event(m: pb.BuildResponse) -> Event:
    kind = m.WhichOneof("response")
    if kind == "event":
        e = m.event
        return BuildEvent(e.kind, e.step, e.total, e.stage, e.text, e.data, e.stream)
    if kind == "context":
        return ContextReceived(m.context.bytes, m.context.entries, m.context.reused)
    if kind == "result":
        r = m.result
        return BuildResult(r.manifest_digest, r.config_digest, list(r.tags))
    if kind == "error":
        raise error_from_status(m.error.code, m.error.message)
    raise InvalidArgument(f"build: unexpected message from the daemon {m!r}")


class BuildAPI:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = pb_grpc.BuilderStub(client.channel)

    async def build(self, context: Source | SyncedContext, options: BuildOptions) -> AsyncIterator[Event]:
        """Send the options and the context tar; yield progress as it comes, ending with one
        BuildResult. Leaving the iteration early cancels the build."""
        if isinstance(context, SyncedContext):
            async for event in self._build_synced(context, options):
                yield event
            return
        upload = Upload(self._stub.Build, pb.BuildRequest(options=_options_pb(options)),
                        lambda data: pb.BuildRequest(chunk=data))
        async for message in upload.run(self._client, context):
            yield ContextSent(message.sent) if isinstance(message, Sent) else _event(message)

    async def _build_synced(self, context: SyncedContext, options: BuildOptions) -> AsyncIterator[Event]:
        """The options, the manifest; then the tar of what the daemon's answer asks for."""
        root = context.root
        paths, entries = await asyncio.to_thread(_scan_context, root, context.dockerfile)
        first = _options_pb(options)
        first.context_key = context.key or context_key(root)
        manifest = [pb.BuildRequest(manifest=pb.ContextManifest(entries=entries[i:i + MANIFEST_BATCH],
                                                                last=i + MANIFEST_BATCH >= len(entries)))
                    for i in range(0, max(len(entries), 1), MANIFEST_BATCH)]
        wanted: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        indexes: list[int] = []

        async def changes() -> AsyncIterator[bytes]:
            chosen = [paths[i] for i in await wanted]
            async for piece in piped(lambda out: write_context(root, chosen, out), pipe_size=CHUNK,
                                     error=_context_error):
                yield piece

        upload = Upload(self._stub.Build, pb.BuildRequest(options=first), lambda data: pb.BuildRequest(chunk=data),
                        more=manifest)
        async for message in upload.run(self._client, changes()):
            if isinstance(message, Sent):
                yield ContextSent(message.sent)
            elif message.WhichOneof("response") == "wanted":
                for i in message.wanted.indexes:
                    if i >= len(paths):
                        raise InvalidArgument(f"build: the daemon asked for entry {i} of {len(paths)}")
                    indexes.append(i)
                if message.wanted.last and not wanted.done():
                    wanted.set_result(indexes)
            else:
                yield _event(message)

    async def prune(self, *, all: bool = False, unused_for_seconds: int = 0, keep_storage: int = 0) -> PruneResult:
        """Remove build cache records: with `all` every one, else those holding no image's layer;
        only those unused for `unused_for_seconds`; keeping `keep_storage` bytes of cache."""
        resp = await self._client.call(self._stub.Prune, pb.PruneRequest(
            all=all, unused_for_seconds=unused_for_seconds, keep_storage=keep_storage))
        return PruneResult(list(resp.removed), resp.reclaimed_bytes)

    async def list_cache(self) -> CacheUsage:
        """The namespace's build cache: records, cache directories, and the bytes they hold."""
        resp = await self._client.call(self._stub.ListCache, pb.ListCacheRequest())
        records = [CacheRecord(m.id, m.type, m.size, _when(m, "created_at"), _when(m, "last_used_at"), m.in_use,
                               m.shared, m.description) for m in resp.records]
        return CacheUsage(records, resp.size, resp.reclaimable)

    async def build_image(self, context: Source, options: BuildOptions) -> BuildResult:
        """Build and wait for the result."""
        result = None
        async for event in self.build(context, options):
            if isinstance(event, BuildResult):
                result = event
        if result is None:
            raise InvalidArgument("build: the daemon ended the stream without a result")
        return result


# -- the context of a directory --------------------------------------------------------------


def context_matcher(root: Path, dockerfile: Path | None = None) -> Matcher:
    """What of `root` to leave out: `<dockerfile>.dockerignore` when there is one next to the
    Dockerfile (as BuildKit reads it), else `root/.dockerignore`; the Dockerfile and the
    .dockerignore are always sent when inside the context (as the docker CLI does)."""
    ignore = root / ".dockerignore"
    if dockerfile is not None and Path(f"{dockerfile}.dockerignore").is_file():
        ignore = Path(f"{dockerfile}.dockerignore")
    try:
        text = ignore.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise _context_error(exc) from None
    patterns = read_patterns(text)
    return Matcher(patterns)


def context_paths(root: Path, matcher: Matcher) -> list[str]:
    """The relative paths of `root` a build context holds, parents first (see walk_context)."""
    return list(walk_context(root, matcher))


def _context_paths_of(root: Path, dockerfile: Path | None) -> list[str]:
    if not root.is_dir():
        raise InvalidArgument(f"build context {str(root)!r}: not a directory")
    try:
        return context_paths(root, context_matcher(root, dockerfile))
    except OSError as exc:  # a directory we may not read
        raise _context_error(exc) from None


def context_key(root: Path) -> str:
    """The name a synced context's kept copy goes by: this host and the directory."""
    where = f"{socket.gethostname()}\0{os.path.realpath(root)}"
    return "dir:" + hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()


def _scan_context(root: Path, dockerfile: Path | None) -> tuple[list[str], list[pb.ContextEntry]]:
    """The context's paths and their descriptions (see the service's ContextEntry); sockets are
    left out, as the tar leaves them out."""
    paths: list[str] = []
    entries: list[pb.ContextEntry] = []
    inodes: dict[tuple[int, int], str] = {}
    try:
        for rel in _context_paths_of(root, dockerfile):
            st = os.lstat(os.path.join(root, rel))
            kind = stat.S_IFMT(st.st_mode)
            if kind == stat.S_IFSOCK:
                continue
            entry = pb.ContextEntry(path=rel, mode=st.st_mode, mtime_ns=st.st_mtime_ns)
            if kind == stat.S_IFREG:
                entry.size = st.st_size
                if st.st_nlink > 1:
                    entry.link_group = inodes.setdefault((st.st_ino, st.st_dev), rel)
            elif kind == stat.S_IFLNK:
                entry.linkname = os.readlink(os.path.join(root, rel))
            paths.append(rel)
            entries.append(entry)
    except OSError as exc:
        raise _context_error(exc) from None
    return paths, entries


def write_context(root: Path, paths: Sequence[str], out: IO[bytes]) -> None:
    """Write the tar of `paths` under `root` to `out`, as the docker CLI makes it: owners 0:0
    (no names), modes and whole-second mtimes kept, hard links kept, sockets left out."""
    inodes: dict[tuple[int, int], str] = {}
    with Unkept.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in paths:
            full = os.path.join(root, rel)
            info = _tarinfo(full, rel, inodes)
            if info is None:
                continue
            if info.isreg():
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def _tarinfo(full: str, rel: str, inodes: dict[tuple[int, int], str]) -> tarfile.TarInfo | None:
    """The header of one context entry; None for a socket or another type a tar cannot hold.
    (tarfile's gettarinfo would also look the owners up by name: a cost per file for names
    the context does not carry.)"""
    st = os.lstat(full)
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        key = (st.st_ino, st.st_dev)
        if st.st_nlink > 1 and key in inodes:
            info.type, info.linkname = tarfile.LNKTYPE, inodes[key]
        else:
            info.type, info.size = tarfile.REGTYPE, st.st_size
            inodes[key] = rel
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(full)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return None
    return info


async def directory_context(root: Path, dockerfile: Path | None = None) -> AsyncIterator[bytes]:
    """The build context of the directory `root` as tar pieces, .dockerignore applied."""
    paths = await asyncio.to_thread(_context_paths_of, root, dockerfile)
    async for piece in piped(lambda out: write_context(root, paths, out), pipe_size=CHUNK, error=_context_error):
        yield piece


def read_tar_context(f: IO[bytes], dockerfile: str = "Dockerfile") -> tuple[bytes, Matcher] | None:
    """A tar build context (plain, gzip, bzip2 or xz) in the seekable `f`: the bytes of its
    Dockerfile (`dockerfile`, a path inside it) and what its .dockerignore leaves out; None
    when `f` is not a tar (then it is a Dockerfile and the context is empty, as docker takes
    `docker build - < Dockerfile`)."""
    want = go_clean(dockerfile.lstrip("/"))
    found: bytes | None = None
    ignore = ""
    try:
        with Unkept.open(fileobj=f, mode="r:*") as tar:
            for member in tar:
                name = go_clean(member.name.lstrip("/"))
                if name not in (want, ".dockerignore"):
                    continue
                if not member.isreg():
                    raise InvalidArgument(f"build context: {member.name!r} is not a regular file")
                if member.size > MAX_DOCKERFILE:
                    raise InvalidArgument(f"build context: {member.name!r} is larger than {MAX_DOCKERFILE >> 20} MiB")
                data = tar.extractfile(member)
                content = data.read() if data is not None else b""
                if name == want:
                    found = content
                if name == ".dockerignore":
                    ignore = content.decode("utf-8", errors="replace")
    except tarfile.ReadError:
        f.seek(0)
        return None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArgument(f"build context: not a valid tar: {error_text(exc)}") from None
    finally:
        f.seek(0)
    if found is None:
        raise InvalidArgument(f"build context: no Dockerfile {dockerfile!r} in the archive")
    return found, Matcher(read_patterns(ignore))


async def tar_context(f: IO[bytes], matcher: Matcher) -> AsyncIterator[bytes]:
    """The tar context in `f` (see read_tar_context) as uncompressed tar pieces without what
    `matcher` leaves out; `f` is closed at the end."""
    with f:
        async for piece in piped(lambda out: filter_tar(f, matcher, out), pipe_size=CHUNK, error=_context_error):
            yield piece


def filter_tar(f: IO[bytes], matcher: Matcher, out: IO[bytes]) -> None:
    try:
        with Unkept.open(fileobj=f, mode="r:*") as src, \
                Unkept.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
            for member in src:
                name = go_clean(member.name.lstrip("/"))
                if name != "." and matcher.excluded(name):
                    continue
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArgument(f"build context: not a valid tar: {error_text(exc)}") from None


def _context_error(exc: BaseException) -> BaseException:
    return local_error(exc, "build context: ")
