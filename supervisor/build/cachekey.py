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
The top of a directory source is only its kind: the copy takes its contents, not the directory
itself (a context's root, made when the context arrived, has no stable time).

`digests`, a `DigestCache`, saves reading files hashed before: a file's digest is reused while
its inode, size, mtime and ctime are those it was hashed with (as git's index does). The build
context a daemon keeps between builds (contextstore.py) is what it is for; a file changed within
`RACY` seconds before it was hashed is not cached (a write in the same clock tick would not
show in its times). `memo`, a `SourceMemo` of a kept context, saves even the walk: a source's
digest is kept until the context's sync names a change at, above or below it.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .copy import Source

_CHUNK = 1 << 20
RACY = 2.0  # seconds


class DigestCache:
    """File digests by (dev, ino, size, mtime, ctime), least recently used dropped past `size`."""

    def __init__(self, size: int = 100_000) -> None:  # ~25 MB at most
        self.size = size
        self._digests: collections.OrderedDict[tuple[int, ...], str] = collections.OrderedDict()
        self._lock = threading.Lock()

    def digest(self, path: Path, st: os.stat_result) -> str:
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            found = self._digests.get(key)
            if found is not None:
                self._digests.move_to_end(key)
                return found
        digest = _file_digest(path)
        if max(st.st_mtime_ns, st.st_ctime_ns) < (time.time() - RACY) * 1e9:
            with self._lock:
                self._digests[key] = digest
                while len(self._digests) > self.size:
                    self._digests.popitem(last=False)
        return digest


def step_key(*, parent: str, instruction: str, sources: str | None = None, platform: str = "",
             extra: Mapping[str, Any] | None = None) -> str:
    doc = {"v": 1, "parent": parent, "instruction": instruction, "sources": sources, "platform": platform,
           "extra": dict(extra or {})}
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


class SourceMemo:
    """Source digests in one tree that only known writes change (a kept build context): a
    digest stays valid until `invalidate` names a path at, above or below its source."""

    def __init__(self) -> None:
        self._digests: dict[tuple[str, bool], str] = {}

    def get(self, rel: str, owners: bool) -> str | None:
        return self._digests.get((rel, owners))

    def put(self, rel: str, owners: bool, digest: str) -> None:
        self._digests[(rel, owners)] = digest

    def invalidate(self, changed: Iterable[str]) -> None:
        """`changed`: relative paths written or removed in the tree."""
        changed = set(changed)
        if not changed or not self._digests:
            return
        above = {""}  # every directory holding a changed path: its digest covers that path
        for path in changed:
            parts = path.split("/")
            above.update("/".join(parts[:i]) for i in range(1, len(parts)))
        for rel, owners in list(self._digests):
            parts = rel.split("/") if rel else []
            # at or above a change, or below one (a parent replaced: what it resolves to moved)
            if rel in above or rel in changed or any("/".join(parts[:i]) in changed for i in range(1, len(parts))):
                del self._digests[(rel, owners)]


def hash_sources(sources: Sequence[Source], *, owners: bool = True, digests: DigestCache | None = None,
                 memo: SourceMemo | None = None, root: Path | None = None) -> str:
    """`sha256:<hex>` over the resolved sources of one COPY/ADD, in order. `owners=False` for
    sources whose uid/gid the copy does not keep (the build context: files land as 0:0). With
    `memo`, a source inside `root` (the tree the memo is of) is hashed once until it changes."""
    h = hashlib.sha256()
    for index, src in enumerate(sources):
        rel = _inside(src.path, root) if memo is not None and root is not None else None
        digest = memo.get(rel, owners) if memo is not None and rel is not None else None
        if digest is None:
            digest = _hash_source(src.path, owners, digests)
            if memo is not None and rel is not None:
                memo.put(rel, owners, digest)
        h.update(f"source {index} {src.name}\0{digest}\n".encode())
    return "sha256:" + h.hexdigest()


def _hash_source(path: Path, owners: bool, digests: DigestCache | None) -> str:
    h = hashlib.sha256()
    st = os.stat(path)  # the top is followed, as the copy follows it
    if stat.S_ISDIR(st.st_mode):
        h.update(b".\0dir\n")  # its contents are copied, not the directory (see above)
        for rel, sub, est in _walk(path, ""):
            _entry(h, rel, sub, est, owners, digests)
    else:
        _entry(h, ".", path, st, owners, digests)
    return h.hexdigest()


def _inside(path: Path, root: Path) -> str | None:
    """`path` relative to `root` ("" for the root itself), None when it is not below it."""
    rel = os.path.relpath(path, root)
    if rel == ".":
        return ""
    return None if rel == ".." or rel.startswith("../") else rel


def _walk(directory: Path, prefix: str) -> Iterable[tuple[str, Path, os.stat_result]]:
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        st = e.stat(follow_symlinks=False)
        rel = f"{prefix}{e.name}"
        yield rel, Path(e.path), st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(Path(e.path), rel + "/")


def _entry(h: Any, rel: str, path: Path, st: os.stat_result, owners: bool, digests: DigestCache | None) -> None:
    kind = stat.S_IFMT(st.st_mode)
    ids = [str(st.st_uid), str(st.st_gid)] if owners else ["-", "-"]
    fields = [rel, oct(kind), oct(stat.S_IMODE(st.st_mode)), *ids, str(st.st_mtime_ns)]
    if stat.S_ISREG(st.st_mode):
        fields += [str(st.st_size), digests.digest(path, st) if digests is not None else _file_digest(path)]
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
