"""The daemon's registry operations in one object: pull, push, tag, login.

    reg = Registry(content, images, leases, unpacker, Hosts(config_dir), "overlayfs", collector.schedule)
    async for event in reg.pull(ns, "busybox", PullOptions()): ...
    async for event in reg.push(ns, "127.0.0.1:5000/me/busybox:1", PushOptions(local="busybox")): ...
    await reg.tag(ns, "busybox", "127.0.0.1:5000/me/busybox:1")
    host = await reg.login("127.0.0.1:5000", Credentials("me", "pw"), RemoteOptions(plain_http=True))

Credentials: a request's own, else the daemon's view — Docker's credential file of the user
the daemon runs as (`credentials.load`, honoring the daemon's DOCKER_CONFIG, running the
credential helper it names from the daemon's PATH). Bearer tokens
are cached daemon-wide (per realm, service, scope and user) until they expire.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from dockyard_common import credentials as credfile
from dockyard_common.credentials import Credentials
from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound
from dockyard_common.reference import InvalidReference, normalize
from supervisor.images.unpack import Unpacker
from supervisor.metadata import images as records
from supervisor.metadata import leases
from supervisor.metadata.content import NamespacedContentStore
from supervisor.remote.auth import TokenCache
from supervisor.remote.client import RegistrySession, Timeouts, status_error
from supervisor.remote.hosts import Hosts
from supervisor.remote.pull import Puller, PullEvent, PullOptions, RemoteOptions
from supervisor.remote.push import PushEngine, PushEvent, PushOptions


class Registry:
    def __init__(self, content: NamespacedContentStore, images: records.ImageStore, lease_store: leases.LeaseStore,
                 unpacker: Unpacker, hosts: Hosts, default_snapshotter: str,
                 on_release: Callable[[], None] = lambda: None, *,
                 credentials: Callable[[str], Credentials | None] = credfile.load,
                 timeouts: Timeouts | None = None) -> None:
        self.images = images
        self.hosts = hosts
        self.timeouts = timeouts or Timeouts()
        self.tokens = TokenCache()
        self.default_snapshotter = default_snapshotter
        self.puller = Puller(content, images, lease_store, unpacker, hosts, default_snapshotter, credentials,
                             self.tokens, self.timeouts, on_release)
        self.pusher = PushEngine(content, images, hosts, credentials, self.tokens, self.timeouts)

    def pull(self, ns: str, ref: str, opts: PullOptions) -> AsyncGenerator[PullEvent, None]:
        return self.puller.pull(ns, ref, opts)

    def push(self, ns: str, ref: str, opts: PushOptions) -> AsyncGenerator[PushEvent, None]:
        return self.pusher.push(ns, ref, opts)

    async def tag(self, ns: str, source: str, target: str, force: bool = False) -> tuple[records.Image, bool]:
        """Name `target` (normalized) the image `source` (as given, else normalized) points at.
        Returns the record and whether it was created (False: an existing name was moved, `force`)."""
        src = await self.pusher._image(ns, source)
        try:
            name = normalize(target)
        except InvalidReference as exc:
            raise InvalidArgument(str(exc.message)) from None
        record = records.Image(name, src.target, dict(src.labels))
        try:
            return await self.images.create(ns, record), True
        except AlreadyExists:
            if not force:
                raise
        return await self.images.update(ns, record, ["target"]), False

    async def login(self, server: str, creds: Credentials, opts: RemoteOptions) -> str:
        """Check `creds` against the registry (GET /v2/, answering its challenge with them).
        Returns the registry host as credential files key it. RegistryAuthError when refused."""
        domain = credfile.registry_host(server)
        hosts = [h for h in self.hosts.lookup(domain, plain_http=opts.plain_http, skip_verify=opts.skip_verify)
                 if not h.mirror]
        host = hosts[-1]
        what = f"login to {domain}"
        # A private token cache: a login must really ask the token server.
        async with RegistrySession(creds, TokenCache(), opts.timeouts(self.timeouts)) as session:
            async with session.request("GET", host, "/", what=what) as resp:
                if resp.status != 200:
                    raise await status_error(resp, what, host)
        return domain


__all__ = ["Credentials", "NotFound", "PullOptions", "PushOptions", "Registry", "RemoteOptions"]
