"""Digest parsing and verification helpers of the content store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from dockyard_common.errors import FailedPrecondition, InvalidArgument
from supervisor.content.digest import digest_bytes, digest_file, format_digest, parse_digest, verify_digest

HEX = hashlib.sha256(b"x").hexdigest()


def test_parse_valid() -> None:
    assert parse_digest(f"sha256:{HEX}") == ("sha256", HEX)
    assert format_digest(HEX) == f"sha256:{HEX}"
    assert digest_bytes(b"x") == f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "empty"),
        (HEX, "<algorithm>:<hex>"),
        ("sha256:", "<algorithm>:<hex>"),
        (":" + HEX, "<algorithm>:<hex>"),
        (f"SHA256:{HEX}", "<algorithm>:<hex>"),
        (f"sha256:{HEX[:-1]}", "64 lowercase hex"),
        (f"sha256:{HEX}0", "64 lowercase hex"),
        (f"sha256:{HEX.upper()}", "64 lowercase hex"),
        (f"sha256:{HEX[:-1]}z", "64 lowercase hex"),
        (f"sha256:{HEX}\n", "<algorithm>:<hex>"),
        (f"sha256:{HEX[:32]}/{HEX[33:]}", "<algorithm>:<hex>"),
        ("sha512:" + "a" * 128, "unsupported digest algorithm 'sha512'"),
        ("blake3:" + "a" * 64, "unsupported digest algorithm 'blake3'"),
        ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", "unsupported"),
    ],
)
def test_parse_invalid(bad: str, why: str) -> None:
    with pytest.raises(InvalidArgument) as ei:
        parse_digest(bad)
    msg = str(ei.value)
    assert why in msg and msg.endswith(": invalid argument")


def test_parse_non_string() -> None:
    with pytest.raises(InvalidArgument, match="string"):
        parse_digest(b"sha256:" + HEX.encode())
    with pytest.raises(InvalidArgument):
        parse_digest(None)


async def test_verify_digest(tmp_path: Path) -> None:
    p = tmp_path / "blob"
    data = b"verify me" * 300000  # several read chunks
    p.write_bytes(data)
    good = digest_bytes(data)
    assert digest_file(p) == good
    assert await verify_digest(p, good) == good
    wrong = digest_bytes(b"other")
    with pytest.raises(FailedPrecondition) as ei:
        await verify_digest(p, wrong)
    assert good in str(ei.value) and wrong in str(ei.value)
    with pytest.raises(InvalidArgument):
        await verify_digest(p, "sha256:nope")
    with pytest.raises(FileNotFoundError):
        await verify_digest(tmp_path / "missing", good)
