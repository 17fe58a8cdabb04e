"""Registry transfers in the SDK: `client.registry` (Dockyard's Registry service).

    async with Client(address) as c:
        result = await c.registry.pull("127.0.0.1:5000/team/app:1", plain_http=True)
        result.name, result.target.digest, result.chain_id
        async for event in c.registry.pull_stream("busybox", platform="linux/arm64"):
            ...                                # Resolved, BlobProgress, LayerProgress, UnpackResult, TransferDone
        await c.registry.push("127.0.0.1:5000/team/app:1", plain_http=True)
        await c.registry.tag("busybox", "127.0.0.1:5000/team/busybox:1")
        await c.registry.login("127.0.0.1:5000", "alice", "s3cret", plain_http=True)   # checks only

Credentials travel with each call (`username`/`secret`); without them the daemon uses its
own credential file. `credentials_for(ref)` reads this user's Docker credential file, as
`dock pull` does. Errors are the daemon's kinds (`dockyard_common.errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dock.transfer import LayerProgress, UnpackResult, _unpack_event
from dockyard_api.containerd.types import descriptor_pb2
from dockyard_api.dockyard.registry.v1 import registry_pb2 as pb
from dockyard_api.dockyard.registry.v1 import registry_pb2_grpc as pb_grpc
from dockyard_common import credentials as credfile
from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Descriptor
from dockyard_common.reference import normalize_reference

if TYPE_CHECKING:
    from dock.client import Client


@dataclass
class Resolved:
    name: str
    target: Descriptor
    host: str


@dataclass
class BlobProgress:
    ref: str
    descriptor: Descriptor
    state: str  # pull: waiting downloading resuming exists done; push: waiting uploading exists mounted done
    offset: int
    total: int


@dataclass
class TransferDone:
    name: str
    target: Descriptor
    created: bool
    bytes_transferred: int
    chain_id: str = ""
    snapshotter: str = ""


@dataclass
class Tagged:
    name: str
    target: Descriptor
    created: bool


RegistryEvent = Resolved | BlobProgress | LayerProgress | UnpackResult | TransferDone


def _desc(d: descriptor_pb2.Descriptor) -> Descriptor:
    return Descriptor(d.media_type, d.digest, d.size, dict(d.annotations))


def _event(m: pb.Progress) -> RegistryEvent:
    kind = m.WhichOneof("progress")
    if kind == "blob":
        b = m.blob
        return BlobProgress(b.ref, _desc(b.descriptor), b.state, b.offset, b.total)
    if kind == "resolved":
        return Resolved(m.resolved.name, _desc(m.resolved.target), m.resolved.host)
    if kind == "unpack":
        return _unpack_event(m.unpack)
    if kind == "done":
        d = m.done
        return TransferDone(d.name, _desc(d.target), d.created, d.bytes_transferred, d.chain_id, d.snapshotter)
    raise InvalidArgument(f"registry: unexpected progress message {m!r}")


def credentials_for(ref: str) -> credfile.Credentials | None:
    """This user's stored credentials for the registry of `ref` (Docker's config.json)."""
    return credfile.load(normalize_reference(ref).domain)


def _remote(plain_http: bool, skip_verify: bool, username: str, secret: str, timeout: float = 0) -> pb.RemoteOptions:
    creds = pb.Credentials(username=username, secret=secret) if (username or secret) else None
    return pb.RemoteOptions(plain_http=plain_http, skip_verify=skip_verify, credentials=creds,
                            timeout_seconds=int(timeout))


class RegistryAPI:
    def __init__(self, client: Client) -> None:
        self._client = client
        self._stub = pb_grpc.RegistryStub(client.channel)

    async def pull_stream(self, ref: str, *, platform: str = "", all_platforms: bool = False, unpack: bool = True,
                          snapshotter: str = "", plain_http: bool = False, skip_verify: bool = False,
                          username: str = "", secret: str = "", labels: dict[str, str] | None = None,
                          max_concurrent_downloads: int = 0, timeout: float = 0) -> AsyncIterator[RegistryEvent]:
        req = pb.PullRequest(ref=ref, platform=platform, all_platforms=all_platforms, unpack=unpack,
                             snapshotter=snapshotter,
                             remote=_remote(plain_http, skip_verify, username, secret, timeout),
                             labels=labels or {}, max_concurrent_downloads=max_concurrent_downloads)
        async for m in self._client.stream(self._stub.Pull, req):
            yield _event(m)

    async def pull(self, ref: str, **options: object) -> TransferDone:
        """Pull and wait; options as for `pull_stream`."""
        return await _last(self.pull_stream(ref, **options), "pull")  # type: ignore[arg-type]

    async def push_stream(self, ref: str, *, local: str = "", platform: str = "", plain_http: bool = False,
                          skip_verify: bool = False, username: str = "", secret: str = "", chunk_size: int = 0,
                          max_concurrent_uploads: int = 0, timeout: float = 0) -> AsyncIterator[RegistryEvent]:
        req = pb.PushRequest(ref=ref, local=local, platform=platform,
                             remote=_remote(plain_http, skip_verify, username, secret, timeout), chunk_size=chunk_size,
                             max_concurrent_uploads=max_concurrent_uploads)
        async for m in self._client.stream(self._stub.Push, req):
            yield _event(m)

    async def push(self, ref: str, **options: object) -> TransferDone:
        return await _last(self.push_stream(ref, **options), "push")  # type: ignore[arg-type]

    async def tag(self, source: str, target: str, *, force: bool = False) -> Tagged:
        r = await self._client.call(self._stub.Tag, pb.TagRequest(source=source, target=target, force=force))
        return Tagged(r.name, _desc(r.target), r.created)

    async def login(self, server: str, username: str, secret: str, *, plain_http: bool = False,
                    skip_verify: bool = False, timeout: float = 0) -> str:
        """Check the credentials against the registry; returns its key ("docker.io" for Hub)."""
        req = pb.LoginRequest(server=server, remote=_remote(plain_http, skip_verify, username, secret, timeout))
        return (await self._client.call(self._stub.Login, req)).server


async def _last(events: AsyncIterator[RegistryEvent], what: str) -> TransferDone:
    done = None
    async for event in events:
        if isinstance(event, TransferDone):
            done = event
    if done is None:
        raise InvalidArgument(f"{what}: the daemon ended the stream without a result")
    return done
