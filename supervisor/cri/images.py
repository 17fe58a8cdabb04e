"""The CRI's view of the image store: one CRI image per image config, named by its records.

kubelet knows an image by its ID (the config digest, as containerd's CRI has it) and by the
names the records in the CRI namespace give it: `repo:tag` records are its RepoTags, and
`repo@digest` (a digest record, or a tag record's repository with its target digest) its
RepoDigests. Records that cannot be read (a missing blob, another platform) are left out of
the CRI's view rather than failing a listing.

    cri = CriImages(stores, "k8s.io", "overlayfs", snapshots_root)
    for image in await cri.list(): image.id, image.repo_tags
    image_id = await cri.pull("busybox:1.36", PullAuth("me", "secret"))
    await cri.remove("sha256:…")          # every record naming that image
"""

from __future__ import annotations

import asyncio
import base64
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path

from dockyard_common.credentials import Credentials
from dockyard_common.errors import DockyardError, InvalidArgument, NotFound
from dockyard_common.imagespec import Descriptor, Matcher
from dockyard_common.reference import InvalidReference, Reference, normalize_reference, parse
from supervisor.images.inspect import Inspector
from supervisor.metadata.images import Image, ImageStore
from supervisor.remote.pull import PullDone, PullOptions
from supervisor.remote.registry import Registry
from supervisor.snapshotter.tree import disk_usage

ID_PREFIX = "sha256:"
# containerd's CRI namespace: kubelet's images and containers live apart from `dock`'s default.
CRI_NAMESPACE = "k8s.io"
_HEX = frozenset("0123456789abcdef")


@dataclass
class CriImage:
    id: str  # the config digest
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0  # manifest + config + layers as stored
    user: str = ""  # the config's User ("uid[:gid]" or a name)
    config_json: bytes = b""
    records: list[str] = field(default_factory=list)  # the record names that make up this image


@dataclass(frozen=True)
class _Summary:
    """An image target as the CRI lists it: its config's digest (the image ID), size, user."""

    image_id: str
    size: int
    user: str
    config_json: bytes


@dataclass(frozen=True)
class PullAuth:
    """The request's AuthConfig, as the CRI gives it."""

    username: str = ""
    password: str = ""
    auth: str = ""  # base64 "user:password"
    identity_token: str = ""
    registry_token: str = ""

    def credentials(self) -> Credentials | None:
        if self.auth:
            try:
                user, colon, secret = base64.b64decode(self.auth, validate=True).decode().partition(":")
            except ValueError:  # binascii.Error, UnicodeDecodeError, and a non-ASCII str's own ValueError
                raise InvalidArgument("pull: auth is not base64 of user:password") from None
            if not colon:
                raise InvalidArgument("pull: auth is not base64 of user:password")
            return Credentials(user, secret)
        if self.username or self.password:
            return Credentials(self.username, self.password)
        # An identity token is a refresh token for the token server, used with an empty user.
        if self.identity_token or self.registry_token:
            return Credentials("", self.identity_token or self.registry_token)
        return None


@dataclass(frozen=True)
class FsUsage:
    mountpoint: str
    used_bytes: int
    inodes_used: int
    timestamp_ns: int


def is_image_id(text: str) -> bool:
    """A full config digest, or its 64 hex digits alone."""
    hexpart = text.removeprefix(ID_PREFIX)
    return len(hexpart) == 64 and set(hexpart) <= _HEX


def reference_of(text: str) -> Reference:
    """An image reference as kubelet writes it (`busybox`, `r.io/a/b:1`, `…@sha256:…`), normalised."""
    if not text:
        raise InvalidArgument("image reference must not be empty")
    try:
        return normalize_reference(text)
    except InvalidReference as e:
        raise InvalidArgument(f"image reference {text!r}: {e.reason}") from None


class CriImages:
    def __init__(self, images: ImageStore, inspector: Inspector, registry: Registry, namespace: str,
                 snapshotter: str, snapshotter_root: Path) -> None:
        self.images = images
        self.inspector = inspector
        self.registry = registry
        self.namespace = namespace
        self.snapshotter = snapshotter
        self.snapshotter_root = snapshotter_root
        # What `list` needs of a record's target, by the target's digest: content-addressed, so
        # it never goes stale; without it every CreateContainer and ImageStatus resolved every
        # image of the namespace (manifests, configs) to find one. Only targets still named by
        # a record are kept.
        self._summaries: dict[str, _Summary] = {}

    async def list(self) -> list[CriImage]:
        """Every image of the namespace, one per config digest, in the order of their IDs."""
        by_id: dict[str, CriImage] = {}
        records = await self.images.list(self.namespace)
        for record in records:
            summary = await self._summary(record)
            if summary is None:  # unreadable or for another platform: not an image kubelet can run
                continue
            image = by_id.get(summary.image_id)
            if image is None:
                image = by_id[summary.image_id] = CriImage(summary.image_id, size=summary.size, user=summary.user,
                                                           config_json=summary.config_json)
            image.records.append(record.name)
            _add_names(image, record)
        named = {r.target.digest for r in records}
        for digest in [d for d in self._summaries if d not in named]:
            del self._summaries[digest]
        for image in by_id.values():
            image.repo_tags.sort()
            image.repo_digests.sort()
        return [by_id[k] for k in sorted(by_id)]

    async def _summary(self, record: Image) -> _Summary | None:
        summary = self._summaries.get(record.target.digest)
        if summary is not None:
            return summary
        try:
            found = await self.inspector.inspect(self.namespace, record.name, Matcher.default())
        except DockyardError:
            return None  # not kept: the content may still be arriving
        summary = _Summary(found.config_descriptor.digest, found.size,
                           str(found.config.config.get("User", "") or ""), found.config_json)
        # Keyed by the target inspected, which is the record's now (it may have moved since listing).
        self._summaries[found.target.digest] = summary
        return summary

    async def find(self, text: str) -> CriImage | None:
        """The image `text` names (an ID, a tag or a digest reference), or None."""
        images = await self.list()
        if is_image_id(text):
            want = ID_PREFIX + text.removeprefix(ID_PREFIX)
            return next((i for i in images if i.id == want), None)
        name = str(reference_of(text))
        return next((i for i in images if name in i.repo_tags or name in i.repo_digests or name in i.records),
                    None)

    async def pull(self, text: str, auth: PullAuth) -> str:
        """Pull and unpack `text` into the namespace as `dock pull` does; returns the image ID."""
        ref = reference_of(text)
        opts = PullOptions(credentials=auth.credentials(), snapshotter=self.snapshotter)
        done: PullDone | None = None
        async with aclosing(self.registry.pull(self.namespace, str(ref), opts)) as events:
            async for event in events:
                if isinstance(event, PullDone):
                    done = event
        if done is None:
            raise NotFound(f"pull {text!r}: the registry gave no image")
        found = await self.inspector.inspect(self.namespace, done.name, Matcher.default())
        if ref.digest:
            return found.config_descriptor.digest
        # A digest record too, as containerd's CRI keeps one: the image stays findable by its
        # repo digest when the tag moves on.
        digest_name = f"{ref.name}@{done.target.digest}"
        await self._ensure_record(digest_name, done.target)
        return found.config_descriptor.digest

    async def _ensure_record(self, name: str, target: Descriptor) -> None:
        try:
            existing = await self.images.get(self.namespace, name)
        except NotFound:
            await self.images.create(self.namespace, Image(name, target))
            return
        if existing.target.digest != target.digest:
            await self.images.update(self.namespace, Image(name, target))

    async def remove(self, text: str) -> bool:
        """Remove every record of the image `text` names; False when there is none (idempotent)."""
        image = await self.find(text)
        if image is None:
            return False
        for name in image.records:
            try:
                await self.images.delete(self.namespace, name)
            except NotFound:  # removed meanwhile by another caller: the outcome is the same
                pass
        return True

    async def fs_usage(self) -> FsUsage:
        """The default snapshotter's disk usage, as containerd's CRI reports its image filesystem."""
        root = self.snapshotter_root
        usage = await asyncio.to_thread(disk_usage, str(root))
        return FsUsage(str(root), usage.size, usage.inodes, time.time_ns())


def _add_names(image: CriImage, record: Image) -> None:
    """The RepoTags and RepoDigests one record gives its image (an ID record gives none)."""
    if is_image_id(record.name):
        return
    try:
        ref = parse(record.name)
    except InvalidReference:
        return
    if not ref.domain:  # a short name a `ctr` user stored: kubelet cannot ask for it by reference
        return
    digest = ref.digest or record.target.digest
    repo_digest = f"{ref.name}@{digest}"
    if repo_digest not in image.repo_digests:
        image.repo_digests.append(repo_digest)
    if ref.tag and not ref.digest and record.name not in image.repo_tags:
        image.repo_tags.append(record.name)
