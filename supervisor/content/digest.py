"""Digest strings (`sha256:<64 hex>`): parsing, validation and file hashing.

The grammar is the OCI image-spec one (`algorithm ":" encoded`); of the algorithms it
allows, this store accepts only sha256, which is what every image we handle uses.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from pathlib import Path

from dockyard_common.errors import FailedPrecondition, InvalidArgument

ALGORITHM = "sha256"
_ALGORITHM_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*")
_ENCODED_RE = re.compile(r"[a-zA-Z0-9=_-]+")
_SHA256_HEX_RE = re.compile(r"[a-f0-9]{64}")
_CHUNK = 1 << 20


def parse_digest(s: object) -> tuple[str, str]:
    """Split `s` into (algorithm, hex), raising InvalidArgument unless it is a sha256 digest."""
    if not isinstance(s, str):
        raise InvalidArgument(f"invalid digest {s!r}: must be a string")
    if not s:
        raise InvalidArgument("invalid digest: empty")
    algo, sep, encoded = s.partition(":")
    if not sep or not _ALGORITHM_RE.fullmatch(algo) or not _ENCODED_RE.fullmatch(encoded):
        raise InvalidArgument(f"invalid digest {s!r}: want <algorithm>:<hex>")
    if algo != ALGORITHM:
        raise InvalidArgument(f"invalid digest {s!r}: unsupported digest algorithm {algo!r} (only sha256)")
    if not _SHA256_HEX_RE.fullmatch(encoded):
        raise InvalidArgument(f"invalid digest {s!r}: sha256 wants 64 lowercase hex characters")
    return algo, encoded


def format_digest(hexdigest: str) -> str:
    return f"{ALGORITHM}:{hexdigest}"


def digest_bytes(data: bytes) -> str:
    return format_digest(hashlib.sha256(data).hexdigest())


def digest_file(path: Path | str) -> str:
    """The sha256 digest of a file's bytes (blocking: call it from a worker thread)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return format_digest(h.hexdigest())


def hash_fd(fd: int, h: hashlib._Hash) -> int:
    """Feed the whole file behind `fd` into `h` with pread; returns the byte count (blocking)."""
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return offset


async def verify_digest(data_path: Path | str, expected: str) -> str:
    """Re-hash the file at `data_path` and raise FailedPrecondition unless it has `expected`.

    Returns the digest. InvalidArgument for a malformed `expected`; NotFound-style OSErrors
    (a missing file) propagate as they are, since the caller knows what the path means.
    """
    parse_digest(expected)
    actual = await asyncio.to_thread(digest_file, data_path)
    if actual != expected:
        raise FailedPrecondition(f"unexpected digest {actual} for {data_path}, expected {expected}")
    return actual
