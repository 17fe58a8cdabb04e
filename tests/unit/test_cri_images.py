"""The CRI image view's pure parts: request auth, image IDs, references, and record names."""

from __future__ import annotations

import base64

import pytest

from dockyard_common.credentials import Credentials
from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Descriptor
from supervisor.cri.images import CriImage, PullAuth, _add_names, is_image_id, reference_of
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
