"""Resolve layer paths inside a root directory as if that directory were `/`.

A layer tar is untrusted input: its names, its symlinks and the symlinks lower layers left
in the target may all try to point outside the target. Every lookup here walks one
component at a time from a file descriptor of the root, opening each component with
O_NOFOLLOW and expanding symlinks by hand, so that:

- an absolute symlink target restarts the walk at the root (chroot semantics: `/etc`
  inside the layer means `<root>/etc`);
- `..` pops back to the directory we came from and stops at the root, never touching the
  real parent of the root;
- the caller gets a directory file descriptor and operates on the final component with
  the `*at` calls, so nothing it does can follow a symlink out of the root.

We do not rely on openat2(RESOLVE_IN_ROOT) because the apply path must also *create*
missing parent directories while walking; one resolver for both cases keeps the safety
argument in one place and works on every kernel.

Words: *parts* are the cleaned components of a tar name (`clean_name`); the *canonical*
path of a directory is the tuple of real directory names from the root down to it, with
every symlink already expanded (two names that reach the same directory have the same
canonical path).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dockyard_common.errors import InvalidArgument

# Linux's own limit on symlink expansions in one lookup (MAXSYMLINKS).
MAX_SYMLINKS = 40

_OPEN_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_UNOPENED = -1

Canonical = tuple[str, ...]

# Called right after the walker created a missing directory: (parent fd, name, canonical path
# of the new directory). The applier uses it to give implicit parents their attributes.
CreateHook = Callable[[int, str, Canonical], None]

# Asked for a component missing from the root: the target of the symlink the lower layers
# show at that canonical path, or None. Overlay upperdirs only hold what a layer changed.
LowerLinkHook = Callable[[Canonical], "str | None"]


def clean_name(name: str, *, what: str = "tar entry") -> tuple[str, ...]:
    """Normalise a tar name to components relative to the layer root.

    A leading `/` is dropped (Docker and containerd treat `/etc/passwd` as `etc/passwd`),
    `.` and empty components vanish and `..` removes the previous component. A `..` that
    would climb above the root is an error, not something to clamp: such a name can only
    come from a broken or hostile archive. Returns `()` for the root itself.
    """
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise InvalidArgument(f"{what} {name!r}: path escapes the layer root")
            parts.pop()
            continue
        parts.append(comp)
    return tuple(parts)


class NotADirectory(Exception):
    """A path component exists but is neither a directory nor a symlink to one."""

    def __init__(self, canonical: Canonical) -> None:
        super().__init__("/".join(canonical))
        self.canonical = canonical


@dataclass(frozen=True)
class ResolvedDir:
    """An open O_PATH descriptor of a directory inside the root, and its canonical path.

    The caller owns `fd` and must close it (see `RootDir.resolve_dir`).
    """

    fd: int
    canonical: Canonical


class RootDir:
    """A directory that plays `/` for every lookup made through it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The root itself is trusted (it is our snapshot directory), so it may be reached
        # through symlinks of the host; everything below it is not.
        self.fd = os.open(path, _OPEN_DIR)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> RootDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def resolve_dir(
        self,
        parts: Sequence[str],
        *,
        create: bool = False,
        on_create: CreateHook | None = None,
        lower_link: LowerLinkHook | None = None,
        base: ResolvedDir | None = None,
    ) -> ResolvedDir | None:
        """Open the directory `parts` names, following symlinks as if the root were `/`.

        With `create`, missing components are made as directories (mode 0755, then
        `on_create`); without it a missing component returns None. `lower_link` lets a
        missing component be a symlink that only lower layers hold (overlay upperdirs):
        its target is followed, inside this root, as if the symlink were here. A component
        that is a file, device, ... raises `NotADirectory`; a symlink loop raises
        InvalidArgument. The returned descriptor is a new one, owned by the caller.

        `base`, a directory resolved earlier (and still valid), makes `parts` relative to
        it: the walk starts there instead of at the root, as if it had come through its
        canonical path.
        """
        # stack[i] = (fd, name); stack[0] is the root, whose fd we do not own. _UNOPENED
        # stands for the ancestors of `base`, passed through without opening them.
        stack: list[tuple[int, str]] = [(self.fd, "")]
        if base is not None and base.canonical:
            stack += [(_UNOPENED, name) for name in base.canonical[:-1]]
            stack.append((os.dup(base.fd), base.canonical[-1]))
        pending = list(reversed(parts))  # pop() from the end = next component
        expansions = 0
        try:
            while pending:
                comp = pending.pop()
                if comp in ("", "."):
                    continue
                if comp == "..":
                    # Pop to the directory we came through; at the root `..` is the root.
                    if len(stack) > 1:
                        os.close(stack.pop()[0])
                    if stack[-1][0] == _UNOPENED:
                        # Back into the ancestors of `base`: walk to it again from the root
                        # (canonical names are real directories, so this is the same walk).
                        pending.extend(reversed(_names(stack)))
                        del stack[1:]
                    continue
                cur_fd = stack[-1][0]
                target: str | None = None
                try:
                    fd = os.open(comp, _OPEN_NOFOLLOW, dir_fd=cur_fd)
                except FileNotFoundError:
                    canonical = (*_names(stack), comp)
                    target = lower_link(canonical) if lower_link is not None else None
                    if target is None:
                        if not create:
                            return None
                        self._mkdir(cur_fd, comp, canonical, on_create)
                        fd = os.open(comp, _OPEN_NOFOLLOW, dir_fd=cur_fd)
                if target is None:
                    st = os.fstat(fd)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append((fd, comp))
                        continue
                    os.close(fd)
                    if not stat.S_ISLNK(st.st_mode):
                        raise NotADirectory((*_names(stack), comp))
                    target = os.readlink(comp, dir_fd=cur_fd)
                expansions += 1
                if expansions > MAX_SYMLINKS:
                    raise InvalidArgument(f"path {'/'.join(parts)!r}: too many levels of symbolic links")
                if not target:
                    raise InvalidArgument(f"path {'/'.join(parts)!r}: empty symlink {comp!r}")
                if target.startswith("/"):
                    # Absolute: restart at the root of the layer, not of the host.
                    while len(stack) > 1:
                        fd = stack.pop()[0]
                        if fd != _UNOPENED:
                            os.close(fd)
                pending.extend(reversed(target.split("/")))
            if len(stack) == 1:
                return ResolvedDir(os.open(".", _OPEN_DIR, dir_fd=self.fd), ())
            fd, name = stack.pop()
            return ResolvedDir(fd, (*_names(stack), name))
        finally:
            for fd, _name in stack[1:]:
                if fd != _UNOPENED:
                    os.close(fd)

    @staticmethod
    def _mkdir(dir_fd: int, name: str, canonical: Canonical, on_create: CreateHook | None) -> None:
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            return  # made meanwhile (by us): the caller opens and checks what is there
        _chmod_new_dir(dir_fd, name, 0o755)  # beat the umask
        if on_create is not None:
            on_create(dir_fd, name, canonical)

    def open_canonical_dir(self, canonical: Canonical, flags: int = os.O_RDONLY) -> int | None:
        """Open a directory by canonical path without following any symlink.

        Returns None when the path no longer leads to a directory (it was removed or
        replaced after we recorded it). `flags` are OR-ed with O_DIRECTORY|O_NOFOLLOW.
        """
        fd = os.open(".", _OPEN_DIR, dir_fd=self.fd)
        try:
            for comp in canonical:
                try:
                    nxt = os.open(comp, _OPEN_DIR | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        return None
                    raise
                os.close(fd)
                fd = nxt
            final = os.open(".", flags | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            return final
        finally:
            os.close(fd)


def _names(stack: list[tuple[int, str]]) -> Canonical:
    return tuple(name for _fd, name in stack[1:])


def _chmod_new_dir(dir_fd: int, name: str, mode: int) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
