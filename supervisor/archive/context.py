"""A build context received as a tar, extracted safely into a private directory.

    stats = extract_context(Path("ctx.tar"), Path("ctx"), limits=ContextLimits(), cancel=event)

A context is files a client chose to send, not a layer: it is checked entry by entry before
anything is written, then extracted by the layer applier (`apply.apply_layer`, "delete" mode
into the empty `target`), which resolves every path as if `target` were `/`.

Refused, as InvalidArgument naming the entry (nothing is written then):
- a malformed or truncated tar, or one that holds no end of archive where it stops;
- a name with `..` climbing out of the context, or a NUL;
- character and block devices (a context carries files; FIFOs are allowed, as in docker's);
- an entry below a symlink of the archive (`link -> /etc` then `link/passwd`), and a hard link
  whose target is reached through one: those would be written or read through the link;
- names starting with `.wh.`: the applier would read them as whiteouts;
- more than `limits.max_entries` entries. The tar's size is bounded by the receiver
  (`limits.max_bytes`), its extended headers by `tarread`.
A set `cancel` event stops the extraction (Cancelled); the caller removes `target`.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dockyard_common.errors import Cancelled, InvalidArgument
from dockyard_common.rootpath import clean_name
from supervisor.archive.apply import WHITEOUT_PREFIX, apply_layer
from supervisor.archive.tarread import (
    BLOCKDEV,
    CHAR,
    DIRECTORY,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    Entry,
    TarFormatError,
    TarReader,
)

# The tar types an entry of each kind (stat.S_IFMT) may come as: a file may be a hard link.
_TYPES = {stat.S_IFREG: (REGULAR, HARDLINK), stat.S_IFDIR: (DIRECTORY,), stat.S_IFLNK: (SYMLINK,),
          stat.S_IFIFO: (FIFO,)}


@dataclass(frozen=True)
class ContextLimits:
    max_bytes: int = 64 << 30  # of tar received
    max_entries: int = 4_000_000


@dataclass(frozen=True)
class ContextStats:
    bytes: int  # of tar read
    entries: int


def extract_context(tar_path: Path, target: Path, *, limits: ContextLimits = ContextLimits(),
                    cancel: threading.Event | None = None) -> ContextStats:
    """Check the context tar at `tar_path`, then extract it into the empty directory `target`."""
    entries = check_context(tar_path, limits, cancel)
    with open(tar_path, "rb") as stream:
        result = apply_layer(stream, target, whiteout_mode="delete", cancel=cancel)
    return ContextStats(result.size, entries)


def check_context(tar_path: Path, limits: ContextLimits, cancel: threading.Event | None = None,
                  expect: Mapping[tuple[str, ...], int] | None = None) -> int:
    """Read the headers of the context tar and refuse what may not be extracted (see the
    module docstring); returns the number of entries. With `expect` (path parts -> st_mode
    kind), the tar must hold exactly those entries, each of its kind (a synced context's
    changes: build/contextstore.py)."""
    checker = ContextChecker(limits, expect)
    with open(tar_path, "rb") as f:
        reader = TarReader(f.read)
        try:
            while (entry := reader.next()) is not None:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("build context extraction")
                checker(entry)
        except TarFormatError as e:
            raise InvalidArgument(f"build context: not a valid tar: {e}") from None
    return checker.finish()


class ContextChecker:
    """The checks of `check_context`, an entry at a time: call it with each entry before it is
    written (apply_layer's `check`), then `finish()` for the count (and what `expect` missed)."""

    def __init__(self, limits: ContextLimits, expect: Mapping[tuple[str, ...], int] | None = None) -> None:
        self.limits = limits
        self.expect = expect
        self.count = 0
        self._symlinks: set[tuple[str, ...]] = set()
        self._seen: set[tuple[str, ...]] = set()

    def __call__(self, entry: Entry) -> None:
        symlinks = self._symlinks
        self.count += 1
        if self.count > self.limits.max_entries:
            raise InvalidArgument(f"build context: more than {self.limits.max_entries} entries")
        parts = _parts(entry.name)
        if entry.type in (CHAR, BLOCKDEV):
            raise InvalidArgument(f"build context: entry {entry.name!r} is a device")
        if any(p.startswith(WHITEOUT_PREFIX) for p in parts):
            raise InvalidArgument(f"build context: entry {entry.name!r}: names starting with "
                                  f"{WHITEOUT_PREFIX!r} are not supported")
        _not_below_symlink(entry.name, parts, symlinks)
        if self.expect is not None:
            _expected(entry.name, entry.type, parts, self.expect, self._seen)
        if entry.type == HARDLINK:
            target = _parts(entry.linkname, of=f"hard link {entry.name!r} to")
            _not_below_symlink(entry.name, target, symlinks)
        if entry.type == SYMLINK:
            symlinks.add(parts)
        elif entry.type == DIRECTORY or parts in symlinks:
            symlinks.discard(parts)  # replaced: later entries below it go into a directory

    def finish(self) -> int:
        if self.expect is not None and len(self._seen) != len(self.expect):
            missing = sorted("/".join(p) for p in self.expect.keys() - self._seen)
            raise InvalidArgument(f"build context: {len(missing)} changed entries were not sent, "
                                  f"e.g. {missing[0]!r}")
        return self.count


def _expected(name: str, kind: str, parts: tuple[str, ...], expect: Mapping[tuple[str, ...], int],
              seen: set[tuple[str, ...]]) -> None:
    want = expect.get(parts)
    if want is None:
        raise InvalidArgument(f"build context: entry {name!r} was not asked for")
    if kind not in _TYPES.get(want, ()):
        raise InvalidArgument(f"build context: entry {name!r} is not of the kind its description says")
    if parts in seen:
        raise InvalidArgument(f"build context: entry {name!r} sent twice")
    seen.add(parts)


def _parts(name: str, of: str = "entry") -> tuple[str, ...]:
    if "\0" in name:
        raise InvalidArgument(f"build context: {of} {name!r} contains a NUL byte")
    return clean_name(name, what=f"build context: {of}", escapes=" leaves the context")


def _not_below_symlink(name: str, parts: tuple[str, ...], symlinks: set[tuple[str, ...]]) -> None:
    if not symlinks:
        return
    for i in range(1, len(parts)):
        if parts[:i] in symlinks:
            raise InvalidArgument(f"build context: entry {name!r} is below the symlink {'/'.join(parts[:i])!r}")
