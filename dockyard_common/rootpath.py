"""Resolving paths inside a root directory as if that directory were `/`: one walker for all.

Users: the daemon applying an untrusted layer tar (`RootDir.resolve_dir`: its names, its symlinks
and those lower layers left may all point outside the target) and the shim placing mounts and
devices in a container's rootfs (`secure_join`). Every lookup walks one component at a time from
a file descriptor of the root, opening each component with O_NOFOLLOW and expanding symlinks by
hand, so that:

- an absolute symlink target restarts the walk at the root (chroot semantics: `/etc` inside the
  root means `<root>/etc`);
- `..` pops back to the directory we came from and never touches the real parent of the root:
  at the root it is the root for a layer (as containerd resolves layer paths, so images with
  such links unpack), and an error for a mount destination (`secure_join`: a spec asking for a
  path above the container's root is refused, never clamped);
- the caller gets a file descriptor or a path whose every component was checked, and operates
  on it with `*at` calls or through `opened_in_root`, so nothing can follow a symlink out of the
  root.

We do not rely on openat2(RESOLVE_IN_ROOT) because both users must also *create* missing
components while walking; one resolver for every case keeps the safety argument in one place and
works on every kernel.

Words: *parts* are the cleaned components of a name (`clean_name`); the *canonical* path of a
directory is the tuple of real directory names from the root down to it, with every symlink
already expanded (two names that reach the same directory have the same canonical path).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dockyard_common.errors import InvalidArgument

# Linux's own limit on symlink expansions in one lookup (MAXSYMLINKS).
MAX_SYMLINKS = 40

_OPEN_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
_OPEN_NOFOLLOW = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_UNOPENED = -1

Canonical = tuple[str, ...]
Create = Literal["dir", "file"]

# Called right after the walker created a missing directory: (parent fd, name, canonical path
# of the new directory). The applier uses it to give implicit parents their attributes.
CreateHook = Callable[[int, str, Canonical], None]

# Asked for a component missing from the root: the target of the symlink the lower layers
# show at that canonical path, or None. Overlay upperdirs only hold what a layer changed.
LowerLinkHook = Callable[[Canonical], "str | None"]


def clean_name(name: str, *, what: str = "tar entry",
               escapes: str = ": path escapes the layer root") -> tuple[str, ...]:
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
                raise InvalidArgument(f"{what} {name!r}{escapes}")
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


@dataclass(frozen=True)
class _Walked:
    """Where a walk ended: an open O_PATH `fd` (owned by the caller) at `canonical`, or, when
    a component is missing (and nothing was to be created), fd -1, the canonical path of the
    last directory reached and the components `rest` from the missing one on."""

    fd: int
    canonical: Canonical
    rest: tuple[str, ...] = ()


class RootDir:
    """A directory that plays `/` for every lookup made through it.

    `label` names it in errors ("the container root /run/.../rootfs")."""

    def __init__(self, path: Path | str, label: str = "") -> None:
        self.path = path
        self.label = label or f"the root {path}"
        # The root itself is trusted (a snapshot or a bundle's rootfs), so it may be reached
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

        `..` at the root stays at the root. With `create`, missing components are made as
        directories (mode 0755, then `on_create`); without it a missing component returns None.
        `lower_link` lets a missing component be a symlink that only lower layers hold (overlay
        upperdirs): its target is followed, inside this root, as if the symlink were here. A
        component that is a file, device, ... raises `NotADirectory`; a symlink loop or an empty
        symlink raises InvalidArgument. The returned descriptor is a new one, owned by the caller.

        `base`, a directory resolved earlier (and still valid), makes `parts` relative to
        it: the walk starts there instead of at the root, as if it had come through its
        canonical path.
        """
        walked = self._walk(parts, create="dir" if create else None, clamp=True, leaf=False,
                            on_create=on_create, lower_link=lower_link, base=base)
        if walked.fd < 0:
            return None
        return ResolvedDir(walked.fd, walked.canonical)

    def _walk(
        self,
        parts: Sequence[str],
        *,
        create: Create | None,
        clamp: bool,
        leaf: bool,
        on_create: CreateHook | None = None,
        lower_link: LowerLinkHook | None = None,
        base: ResolvedDir | None = None,
    ) -> _Walked:
        """The one walk. `clamp`: `..` at the root stays there (else InvalidArgument). `leaf`:
        the last component may be a file, device, ... (else NotADirectory). `create`: make
        missing components, directories on the way and the last one a `create` ("dir" or an
        empty "file")."""
        # stack[i] = (fd, name); stack[0] is the root, whose fd we do not own. _UNOPENED
        # stands for the ancestors of `base`, passed through without opening them.
        stack: list[tuple[int, str]] = [(self.fd, "")]
        if base is not None and base.canonical:
            stack += [(_UNOPENED, name) for name in base.canonical[:-1]]
            stack.append((os.dup(base.fd), base.canonical[-1]))
        pending = [p for p in reversed(parts) if p not in ("", ".")]  # pop() = next component
        expansions = 0
        try:
            while pending:
                comp = pending.pop()
                if comp == "..":
                    # Pop to the directory we came through; at the root `..` is the root.
                    if len(stack) == 1:
                        if not clamp:
                            raise InvalidArgument(f"path {'/'.join(parts)!r}: escapes {self.label}")
                        continue
                    os.close(stack.pop()[0])
                    if stack[-1][0] == _UNOPENED:
                        # Back into the ancestors of `base`: walk to it again from the root
                        # (canonical names are real directories, so this is the same walk).
                        pending.extend(reversed(_names(stack)))
                        del stack[1:]
                    continue
                last = not pending
                cur_fd = stack[-1][0]
                target: str | None = None
                try:
                    fd = os.open(comp, _OPEN_NOFOLLOW, dir_fd=cur_fd)
                except FileNotFoundError:
                    canonical = (*_names(stack), comp)
                    target = lower_link(canonical) if lower_link is not None else None
                    if target is None:
                        if create is None:
                            return _Walked(-1, _names(stack), (comp, *reversed(pending)))
                        if last and create == "file":
                            _mkfile(cur_fd, comp)
                        else:
                            _mkdir(cur_fd, comp, canonical, on_create)
                        fd = os.open(comp, _OPEN_NOFOLLOW, dir_fd=cur_fd)
                if target is None:
                    st = os.fstat(fd)
                    if stat.S_ISDIR(st.st_mode):
                        stack.append((fd, comp))
                        continue
                    if not stat.S_ISLNK(st.st_mode):
                        if last and leaf:
                            return _Walked(fd, (*_names(stack), comp))
                        os.close(fd)
                        raise NotADirectory((*_names(stack), comp))
                    os.close(fd)
                    target = os.readlink(comp, dir_fd=cur_fd)
                expansions += 1
                if expansions > MAX_SYMLINKS:
                    raise InvalidArgument(f"path {'/'.join(parts)!r}: too many levels of symbolic links")
                if not target:
                    raise InvalidArgument(f"path {'/'.join(parts)!r}: empty symlink {comp!r}")
                if target.startswith("/"):
                    # Absolute: restart at the root we play, not the host's.
                    while len(stack) > 1:
                        fd = stack.pop()[0]
                        if fd != _UNOPENED:
                            os.close(fd)
                pending.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
            if len(stack) == 1:
                return _Walked(os.open(".", _OPEN_DIR, dir_fd=self.fd), ())
            fd, name = stack.pop()
            return _Walked(fd, (*_names(stack), name))
        finally:
            for fd, _name in stack[1:]:
                if fd != _UNOPENED:
                    os.close(fd)

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


def secure_join(root: str, unsafe: str, *, create: Create | None = None) -> str:
    """The host path of container path `unsafe` under `root` (a real, absolute path).

    Symlinks are followed as the container would see them (absolute ones from `root`). Climbing
    above `root` (`..`, through a symlink or not) raises InvalidArgument, as do symlink loops and
    a file in the middle of the path. `create` ("dir" or "file") makes missing components:
    directories on the way, and the last one as a directory or an empty file. Without it, the
    path below a missing component is finished lexically (nothing below it can be a symlink).
    The result is checked again when used (`opened_in_root`): this only chooses the path.
    """
    parts = unsafe.split("/")
    with RootDir(root, f"the container root {root}") as rd:
        try:
            walked = rd._walk(parts, create=create, clamp=False, leaf=True)
        except NotADirectory as exc:
            raise InvalidArgument(f"path {unsafe!r}: /{'/'.join(exc.canonical)} is not a directory") from None
    if walked.fd >= 0:
        os.close(walked.fd)
        return os.path.join(root, *walked.canonical)
    out = list(walked.canonical)
    for comp in walked.rest:
        if comp != "..":
            out.append(comp)
        elif out:
            out.pop()
        else:
            raise InvalidArgument(f"path {unsafe!r}: escapes the container root {root}")
    return os.path.join(root, *out)


@contextlib.contextmanager
def opened_in_root(root: str, host_path: str) -> Iterator[str]:
    """Yield a /proc/self/fd path for `host_path`, verified to lie inside `root`."""
    fd = os.open(host_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise InvalidArgument(f"mount target {host_path!r}: is a symbolic link")
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real != root and not real.startswith(root.rstrip("/") + "/"):
            raise InvalidArgument(f"mount target {host_path!r}: resolves to {real!r}, outside {root}")
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def _names(stack: list[tuple[int, str]]) -> Canonical:
    return tuple(name for _fd, name in stack[1:])


def _mkdir(dir_fd: int, name: str, canonical: Canonical, on_create: CreateHook | None) -> None:
    try:
        os.mkdir(name, 0o755, dir_fd=dir_fd)
    except FileExistsError:
        return  # made meanwhile: the caller opens and checks what is there
    _chmod_new_dir(dir_fd, name, 0o755)  # beat the umask
    if on_create is not None:
        on_create(dir_fd, name, canonical)


def _mkfile(dir_fd: int, name: str) -> None:
    try:
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    except FileExistsError:
        return  # made meanwhile: the caller opens and checks what is there
    os.close(fd)


def _chmod_new_dir(dir_fd: int, name: str, mode: int) -> None:
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
