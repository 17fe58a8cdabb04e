"""Build cache keys: when a step may be reused instead of run.

    key = step_key(parent="sha256:<chain id>", instruction="COPY --chown=1:1 src/ /app/",
                   sources=hash_sources(sources))

A step's key (docs/design-notes.md, "Build cache keys") is the sha256 of a canonical JSON
document of:
- `parent`: what the step starts from: the chain ID of the layers below it plus the digest of
  the config so far (a base image's manifest digest at the FROM);
- `instruction`: the instruction as it runs, after ARG/ENV expansion (for RUN: its words and
  the environment it runs with, so a changed `--build-arg` re-runs it);
- `sources`: for COPY/ADD, `hash_sources` of exactly the files the step copies (after
  wildcards); for `COPY --from` the digest of the source stage's result is part of it too,
  through the sources' content;
- `platform`, and anything else the executor names in `extra`.

`hash_sources` walks every source (directories recursively, in name order, symlinks not
followed below the top) and digests, per entry: its path relative to the source, type,
permission bits, uid/gid, modification time (ns), size, the sha256 of a file's bytes and a
symlink's target (and device numbers). Owner and mtime are in because COPY keeps them in the
layer: a key without them could hand back a layer that differs from what the step would make.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .copy import Source

_CHUNK = 1 << 20


def step_key(*, parent: str, instruction: str, sources: str | None = None, platform: str = "",
             extra: Mapping[str, Any] | None = None) -> str:
    doc = {"v": 1, "parent": parent, "instruction": instruction, "sources": sources, "platform": platform,
           "extra": dict(extra or {})}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def hash_sources(sources: Sequence[Source], *, owners: bool = True) -> str:
    """`sha256:<hex>` over the resolved sources of one COPY/ADD, in order. `owners=False` for
    sources whose uid/gid the copy does not keep (the build context: files land as 0:0)."""
    h = hashlib.sha256()
    for index, src in enumerate(sources):
        h.update(f"source {index} {src.name}\0".encode())
        st = os.stat(src.path)  # the top is followed, as the copy follows it
        _entry(h, ".", src.path, st, owners)
        if stat.S_ISDIR(st.st_mode):
            for rel, path, est in _walk(src.path, ""):
                _entry(h, rel, path, est, owners)
    return "sha256:" + h.hexdigest()


def _walk(directory: Path, prefix: str) -> Iterable[tuple[str, Path, os.stat_result]]:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        st = e.stat(follow_symlinks=False)
        rel = f"{prefix}{e.name}"
        yield rel, Path(e.path), st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(Path(e.path), rel + "/")


def _entry(h: Any, rel: str, path: Path, st: os.stat_result, owners: bool) -> None:
    kind = stat.S_IFMT(st.st_mode)
    ids = [str(st.st_uid), str(st.st_gid)] if owners else ["-", "-"]
    fields = [rel, oct(kind), oct(stat.S_IMODE(st.st_mode)), *ids, str(st.st_mtime_ns)]
    if stat.S_ISREG(st.st_mode):
        fields += [str(st.st_size), _file_digest(path)]
    elif stat.S_ISLNK(st.st_mode):
        fields.append(os.readlink(path))
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        fields.append(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    h.update(("\0".join(fields) + "\n").encode("utf-8", "surrogateescape"))


def _file_digest(path: Path) -> str:
    d = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            d.update(chunk)
    return d.hexdigest()
