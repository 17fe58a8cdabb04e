"""Which names an image may be stored under: what a reference grammar reads, nothing else.

containerd's store takes any non-empty name; Dockyard refuses the ones no client could parse
back (`..`, absolute paths, `%2f`, blanks, control characters, uppercase repositories, names
longer than any reference) with InvalidArgument naming the name, wherever a name is stored.
"""

from __future__ import annotations

import time

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Descriptor
from dockyard_common.reference import REFERENCE_LENGTH_MAX, check_image_name, image_name_problem
from supervisor.metadata.images import Image, validate

D = "sha256:" + "a" * 64

GOOD = [
    "busybox", "busybox:copy", "img", "x", "docker.io/library/busybox:latest", "localhost:5000/bb:latest",
    "127.0.0.1:5000/me/bb", "[::1]:5000/a/b:1", "example.com/c:1", f"sha256:{'b' * 64}",  # CRI's image ids
    f"docker.io/library/busybox@{D}", f"registry.local:5000/team/app:v1@{D}", "import-2026-01-01:latest",
    "a_b", "a__b", "a-b", "a--b", "a.b", "Example.COM/x/y:TAG_1",  # an uppercase domain is a domain
    "a" * 255, "a" * 255 + ":" + "t" * 128 + "@sha512:" + "c" * 128,
]

BAD = [
    ("", "must not be empty"),
    ("..", "invalid reference format"),
    ("a/../b", "invalid reference format"),
    ("../../etc/passwd", "invalid reference format"),
    ("/abs/path", "invalid reference format"),
    ("/", "invalid reference format"),
    ("a%2fb", "invalid reference format"),
    ("a%2F..%2Fb", "invalid reference format"),
    ("a b", "invalid reference format"),
    ("a\nb", "control characters"),
    ("a\x00b", "control characters"),
    ("a\tb:1", "control characters"),
    ("a\x7fb", "control characters"),
    ("MyApp:1", "must be lowercase"),
    ("library/Busybox", "must be lowercase"),
    ("a//b", "invalid reference format"),
    ("a/", "at least one component"),
    (":tag", "invalid reference format"),
    ("a:b:c", "invalid reference format"),
    ("a@sha256:abc", "invalid reference format"),
    (f"a@sha256:{'g' * 64}", "invalid reference format"),
    ("a:" + "t" * 129, "tag must not be more than 128 characters"),
    ("a" * 256, "must not be more than 255 characters"),
    ("x" * 5000, "longer than a reference can be"),
    ("é", "invalid reference format"),
    ("a\\b", "invalid reference format"),
]


@pytest.mark.parametrize("name", GOOD)
def test_names_references_read_are_accepted(name: str) -> None:
    assert image_name_problem(name) is None
    assert check_image_name(name) == name
    validate(Image(name, Descriptor("application/vnd.oci.image.manifest.v1+json", D, 1)))


@pytest.mark.parametrize(("name", "reason"), BAD)
def test_names_no_reference_reads_are_refused_naming_them(name: str, reason: str) -> None:
    problem = image_name_problem(name)
    assert problem is not None and reason in problem
    with pytest.raises(InvalidArgument) as info:
        validate(Image(name, Descriptor("application/vnd.oci.image.manifest.v1+json", D, 1)))
    message = str(info.value)
    assert reason in message and message.endswith(": invalid argument")
    if name:
        assert message.startswith("image name \"") and len(message) < 400  # quoted, never the whole of it


def test_the_longest_reference_fits_the_limit() -> None:
    longest = "a" * 255 + ":" + "t" * 128 + "@sha512:" + "c" * 128
    assert len(longest) == REFERENCE_LENGTH_MAX


@pytest.mark.parametrize("name", ["a-" * 50_000 + "!", "a" + "._" * 30_000 + "/", "a" * 1_000_000])
def test_huge_hostile_names_are_refused_at_once(name: str) -> None:
    started = time.monotonic()
    assert image_name_problem(name) is not None
    assert time.monotonic() - started < 1
