"""dock build's reading of a Dockerfile and of stdin: never for ever, never all of /dev/zero."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from dock.commands import build
from dockyard_common.errors import InvalidArgument


class _Endless(io.RawIOBase):
    """/dev/zero as a file object: counts what was asked of it."""

    def __init__(self) -> None:
        self.given = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray) -> int:  # type: ignore[override]
        n = len(b)
        b[:] = bytes(n)
        self.given += n
        return n


def test_capped_read_refuses_an_endless_dockerfile() -> None:
    f = _Endless()
    with pytest.raises(InvalidArgument, match="larger than 8 MiB"):
        build._read_capped(io.BufferedReader(f), "on stdin")  # type: ignore[type-var]
    assert f.given <= build.MAX_DOCKERFILE + (1 << 20)


def test_capped_read_keeps_the_head() -> None:
    assert build._read_capped(io.BytesIO(b"RUN true\n"), "x", b"FROM busybox\n") == b"FROM busybox\nRUN true\n"


def test_dockerfile_from_dev_zero_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="/dev/zero is larger than 8 MiB"):
        build._read_dockerfile("/dev/zero")


def test_missing_dockerfile_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read the Dockerfile"):
        build._read_dockerfile(str(tmp_path / "nope"))


def _tar_head() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        data = b"FROM busybox\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()[:tarfile.BLOCKSIZE]


@pytest.mark.parametrize(("head", "tar"), [
    (b"", False), (bytes(512), False), (b"FROM busybox\nRUN echo hi\n", False), (b"\xff" * 512, False),
    (b"\x1f\x8b\x08\x00", True), (b"BZh91AY", True), (b"\xfd7zXZ\x00\x00", True),
])
def test_looks_like_tar(head: bytes, tar: bool) -> None:
    assert build._looks_like_tar(head) is tar


def test_a_real_tar_header_is_a_tar() -> None:
    assert build._looks_like_tar(_tar_head())
