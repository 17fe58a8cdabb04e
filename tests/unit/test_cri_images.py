"""The CRI image view's pure parts: request auth, image IDs, references, and record names."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dockyard_common.credentials import Credentials
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.imagespec import Descriptor
from supervisor.cri.images import CriImage, CriImages, PullAuth, _add_names, is_image_id, reference_of
from supervisor.metadata.images import Image

DIGEST = "sha256:" + "ab" * 32


def test_auth_from_the_request() -> None:
    assert PullAuth().credentials() is None
    assert PullAuth("u", "p").credentials() == Credentials("u", "p")
    auth = base64.b64encode(b"alice:pa:ss").decode()
    assert PullAuth(auth=auth).credentials() == Credentials("alice", "pa:ss")  # the first ":" splits
    assert PullAuth(identity_token="tok").credentials() == Credentials("", "tok")
    for bad in ["%%%", base64.b64encode(b"no-colon").decode()]:
        with pytest.raises(InvalidArgument, match="base64 of user:password"):
            PullAuth(auth=bad).credentials()


def test_ids_and_references() -> None:
    assert is_image_id(DIGEST) and is_image_id(DIGEST.removeprefix("sha256:"))
    assert not is_image_id("sha256:abc") and not is_image_id("busybox")
    assert str(reference_of("busybox")) == "docker.io/library/busybox:latest"
    assert str(reference_of(f"r.io/a@{DIGEST}")) == f"r.io/a@{DIGEST}"
    for bad in ["", "a/UPPER", "busybox:-x"]:
        with pytest.raises(InvalidArgument):
            reference_of(bad)


def test_record_names_give_tags_and_digests() -> None:
    image = CriImage("sha256:" + "cd" * 32)
    target = Descriptor(media_type="application/vnd.oci.image.manifest.v1+json", digest=DIGEST, size=1)
    for name in ["docker.io/library/busybox:1", f"docker.io/library/busybox@{DIGEST}", DIGEST, "short:1"]:
        _add_names(image, Image(name, target))
    assert image.repo_tags == ["docker.io/library/busybox:1"]
    assert image.repo_digests == [f"docker.io/library/busybox@{DIGEST}"]


class _Found:
    def __init__(self, target: Descriptor, config_digest: str) -> None:
        self.target = target
        self.config_descriptor = Descriptor(media_type="application/vnd.oci.image.config.v1+json",
                                            digest=config_digest, size=2)
        self.size = 10
        self.config = type("Config", (), {"config": {"User": "7"}})()
        self.config_json = b"{}"


class _Stores:
    """An image store and an inspector: records by name, a config digest per target digest."""

    def __init__(self) -> None:
        self.records: dict[str, Image] = {}
        self.configs: dict[str, str] = {}
        self.inspected: list[str] = []

    async def list(self, namespace: str) -> list[Image]:
        return list(self.records.values())

    async def inspect(self, namespace: str, name: str, matcher: object) -> _Found:
        target = self.records[name].target
        self.inspected.append(target.digest)
        if target.digest not in self.configs:
            raise NotFound(f"content {target.digest}")
        return _Found(target, self.configs[target.digest])


def _target(n: int) -> Descriptor:
    return Descriptor(media_type="application/vnd.oci.image.manifest.v1+json", digest=f"sha256:{n:064x}", size=1)


async def test_listing_resolves_each_target_once() -> None:
    """ListImages, ImageStatus and CreateContainer's lookup list the namespace: a target already
    resolved is not resolved again (content-addressed); a moved tag is; a failed one is retried."""
    st = _Stores()
    cri = CriImages(st, st, None, "k8s.io", "overlayfs", Path("/nowhere"))  # type: ignore[arg-type]
    st.records["docker.io/library/a:1"] = Image("docker.io/library/a:1", _target(1))
    st.records["docker.io/library/b:1"] = Image("docker.io/library/b:1", _target(2))
    st.configs = {_target(1).digest: "sha256:" + "c1" * 32}  # b's content is not all there yet
    assert [i.repo_tags for i in await cri.list()] == [["docker.io/library/a:1"]]
    assert [i.repo_tags for i in await cri.list()] == [["docker.io/library/a:1"]]
    assert st.inspected == [_target(1).digest, _target(2).digest, _target(2).digest]  # b asked again
    st.configs[_target(2).digest] = "sha256:" + "c2" * 32
    found = await cri.find("docker.io/library/b:1")
    assert found is not None and found.id == "sha256:" + "c2" * 32 and found.user == "7"
    # The tag moves to another target: resolved anew, and the old target is forgotten.
    st.records["docker.io/library/a:1"] = Image("docker.io/library/a:1", _target(3))
    st.configs[_target(3).digest] = "sha256:" + "c3" * 32
    st.inspected.clear()
    assert {i.id for i in await cri.list()} == {"sha256:" + "c2" * 32, "sha256:" + "c3" * 32}
    assert st.inspected == [_target(3).digest]
    assert set(cri._summaries) == {_target(2).digest, _target(3).digest}
