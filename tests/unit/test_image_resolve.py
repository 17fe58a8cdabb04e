"""Walking from an image target to its manifest for a platform (supervisor/images/resolve.py).

The content here is a dict that does not check digests, so documents can claim any digest:
that is how a cycle of indexes (impossible to store honestly) is built to test the guard.
"""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.imagespec import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Matcher,
    Platform,
)
from supervisor.images.resolve import Resolver
from supervisor.metadata.content import NamespacedContentStore


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    async def read_at(self, offset: int, size: int) -> bytes:
        return self.data[offset:offset + size]

    async def close(self) -> None:
        pass


class FakeContent:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def put(self, digest: str, doc: Any) -> Descriptor:
        data = json.dumps(doc).encode()
        self.blobs[digest] = data
        kind = MEDIA_TYPE_OCI_INDEX if "manifests" in doc else MEDIA_TYPE_OCI_MANIFEST if "layers" in doc \
            else MEDIA_TYPE_OCI_CONFIG
        return Descriptor(kind, digest, len(data))

    async def reader(self, ns: str, digest: str) -> _Reader:
        if digest not in self.blobs:
            raise NotFound(f"content digest {digest}")
        return _Reader(self.blobs[digest])


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def image(content: FakeContent, n: int, arch: str) -> Descriptor:
    config = content.put(d(n), {"os": "linux", "architecture": arch,
                                "rootfs": {"type": "layers", "diff_ids": [d(n + 1)]}})
    return content.put(d(n + 2), {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                                  "config": config.to_json(),
                                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d(n + 1),
                                              "size": 5}]})


def resolver(content: FakeContent) -> Resolver:
    return Resolver(cast(NamespacedContentStore, content))


async def test_resolve_picks_the_platform() -> None:
    c = FakeContent()
    amd, arm = image(c, 10, "amd64"), image(c, 20, "arm64")
    amd.platform, arm.platform = Platform("linux", "amd64"), Platform("linux", "arm64")
    top = c.put(d(1), {"schemaVersion": 2, "manifests": [arm.to_json(), amd.to_json()]})
    r = resolver(c)
    assert (await r.resolve("ns", top, Matcher.only(Platform("linux", "amd64")))).manifest_desc.digest == amd.digest
    found = await r.resolve("ns", top, Matcher.only(Platform("linux", "arm64")))
    assert found.manifest_desc.digest == arm.digest and found.chain_id == d(21)
    assert await r.platforms("ns", top) == [Platform("linux", "arm64"), Platform("linux", "amd64")]
    with pytest.raises(NotFound, match="no manifest for platform linux/s390x"):
        await r.resolve("ns", top, Matcher.only(Platform("linux", "s390x")))


async def test_platformless_manifest_is_judged_by_its_config() -> None:
    c = FakeContent()
    arm = image(c, 10, "arm64")
    r = resolver(c)
    assert await r.manifests("ns", arm, Matcher.only(Platform("linux", "amd64"))) == []
    assert [m.digest for m in await r.manifests("ns", arm, Matcher.all())] == [arm.digest]


async def test_index_cycle_is_refused() -> None:
    c = FakeContent()
    a = b = Descriptor(MEDIA_TYPE_OCI_INDEX, d(1), 100)
    for _ in range(3):  # a lists b and b lists a, until the sizes they state settle
        b = c.put(d(2), {"schemaVersion": 2, "manifests": [a.to_json()]})
        a = c.put(d(1), {"schemaVersion": 2, "manifests": [b.to_json()]})
    r = resolver(c)
    with pytest.raises(InvalidArgument, match="refers to itself"):
        await r.resolve("ns", a, Matcher.all())
    # walking visits each blob once, so the cycle just ends there
    assert [x.digest for x in await r.walk("ns", a, Matcher.all())] == [d(1), d(2)]


async def test_missing_and_wrong_sized_blobs() -> None:
    c = FakeContent()
    m = image(c, 10, "amd64")
    r = resolver(c)
    with pytest.raises(NotFound, match="content digest"):
        await r.resolve("ns", Descriptor(MEDIA_TYPE_OCI_MANIFEST, d(99), 3), Matcher.all())
    with pytest.raises(InvalidArgument, match="its descriptor says"):
        await r.manifest("ns", Descriptor(m.media_type, m.digest, m.size + 1))
    walked = await r.walk("ns", m, Matcher.all())
    assert [x.digest for x in walked] == [m.digest, d(10), d(11)]
