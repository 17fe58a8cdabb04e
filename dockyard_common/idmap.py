"""ID-mapped layers: a container in its own user namespace sees the image's root-owned files as
its own root's, without a copy or a chown of the image.

The convention is containerd 2's. A snapshot prepared with the labels `UID_LABEL`/`GID_LABEL`
("<container id>:<host id>:<size>[,...]") has an upper dir owned by the host ids of the
container's root, and its overlay mount carries the options `uidmap=`/`gidmap=` with the same
text. Whoever mounts it (`mounts.mount_rootfs`, in the shim) makes an ID-mapped clone of every
lower dir (open_tree + mount_setattr(MOUNT_ATTR_IDMAP), Linux 5.19 for overlayfs layers) and
mounts the overlay over those clones.

The upper dir cannot be ID-mapped: overlayfs makes its work dirs with the mounter's
credentials, host root, which the mapping does not cover. So what a container writes is stored
under the host ids its processes run as, as with containerd.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument, error_text

UID_LABEL = "containerd.io/snapshot/uidmapping"
GID_LABEL = "containerd.io/snapshot/gidmapping"
UID_OPTION = "uidmap="
GID_OPTION = "gidmap="
_ID_LIMIT = 1 << 32  # ids are 32-bit; (uid_t)-1 itself is never mapped
_MAX_LINES = 340  # the kernel's limit on the lines of a uid_map


@dataclass(frozen=True)
class IDMap:
    container_id: int
    host_id: int
    size: int


def parse(text: str, what: str = "id mapping") -> tuple[IDMap, ...]:
    """"0:1000:65536[,...]" as mappings; InvalidArgument naming `what` for anything else."""
    out = []
    for part in text.split(","):
        fields = part.split(":")
        digits = len(fields) == 3 and all(f.isascii() and f.isdigit() for f in fields)
        c, h, n = (int(f) for f in fields) if digits else (-1, -1, -1)
        if min(c, h) < 0 or n < 1 or c + n >= _ID_LIMIT or h + n >= _ID_LIMIT:
            raise InvalidArgument(f"{what} {part!r}: want <container id>:<host id>:<size>, within 32-bit ids")
        out.append(IDMap(c, h, n))
    check(out, what)
    return tuple(out)


def check(maps: Sequence[IDMap], what: str = "id mapping") -> None:
    """What the kernel would refuse in a uid_map, refused first with a clear message."""
    if not maps or len(maps) > _MAX_LINES:
        raise InvalidArgument(f"{what}: want 1 to {_MAX_LINES} ranges, got {len(maps)}")
    for side in ("container_id", "host_id"):
        spans = sorted((getattr(m, side), getattr(m, side) + m.size) for m in maps)
        if any(a[1] > b[0] for a, b in itertools.pairwise(spans)):
            raise InvalidArgument(f"{what}: the {side.replace('_', ' ')} ranges overlap")


def format_maps(maps: Sequence[IDMap]) -> str:
    return ",".join(f"{m.container_id}:{m.host_id}:{m.size}" for m in maps)


def host_id_of(maps: Sequence[IDMap], container_id: int = 0) -> int | None:
    """The host id `container_id` maps to, None if it is not mapped."""
    for m in maps:
        if m.container_id <= container_id < m.container_id + m.size:
            return m.host_id + container_id - m.container_id
    return None


def _proc_text(maps: Sequence[IDMap]) -> str:
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)


@contextlib.contextmanager
def user_namespace(uids: Sequence[IDMap], gids: Sequence[IDMap]) -> Iterator[int]:
    """An fd of a fresh user namespace with these mappings, held by a child that exits after.

    The child is util-linux's unshare(1) running a shell that waits on its stdin: spawned, not
    forked from Python, so any process may call this (a Python fork of a process forked from a
    threaded one can abort on locks other threads held). Needs root in the caller's user namespace.
    """
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    proc = subprocess.Popen([unshare, "--user", "--", "/bin/sh", "-c", "echo ready; read _"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None
    fd = -1
    try:
        if proc.stdout.readline() != b"ready\n":
            raise OSError(f"could not make a user namespace for an ID-mapped mount ({unshare} exited "
                          f"{proc.wait()})")
        for name, maps in (("uid_map", uids), ("gid_map", gids)):
            with open(f"/proc/{proc.pid}/{name}", "w") as f:
                f.write(_proc_text(maps))
        fd = os.open(f"/proc/{proc.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        yield fd
    finally:
        if fd >= 0:
            os.close(fd)
        proc.stdin.close()  # the shell's read returns: it exits
        proc.stdout.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def mapped_clone(path: str, userns_fd: int) -> int:
    """A detached, ID-mapped clone of the mount at `path` (its fd): what lies under `path` seen
    through `userns_fd`'s mappings."""
    fd = L.open_tree(path, L.OPEN_TREE_CLONE)
    try:
        L.mount_setattr(fd, "", L.AT_EMPTY_PATH, L.MOUNT_ATTR_IDMAP, 0, userns_fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def split_options(options: Sequence[str]) -> tuple[list[str], tuple[IDMap, ...], tuple[IDMap, ...]]:
    """(the other options, uid maps, gid maps) of a mount's options; both maps or neither."""
    rest: list[str] = []
    uids: tuple[IDMap, ...] = ()
    gids: tuple[IDMap, ...] = ()
    for opt in options:
        if opt.startswith(UID_OPTION):
            uids = parse(opt.removeprefix(UID_OPTION), "mount option uidmap")
        elif opt.startswith(GID_OPTION):
            gids = parse(opt.removeprefix(GID_OPTION), "mount option gidmap")
        else:
            rest.append(opt)
    if bool(uids) != bool(gids):
        raise InvalidArgument("mount options: uidmap and gidmap go together")
    return rest, uids, gids


@contextlib.contextmanager
def mapped_lowers(options: Sequence[str], uids: Sequence[IDMap], gids: Sequence[IDMap]) -> Iterator[list[str]]:
    """Overlay `options` whose lowerdirs are ID-mapped clones (`/proc/self/fd/N`, valid while the
    block runs: the overlay keeps its own references once mounted)."""
    fds: list[int] = []
    try:
        with user_namespace(uids, gids) as ns:
            out = []
            for opt in options:
                if opt.startswith("lowerdir="):
                    lowers = []
                    for d in opt.removeprefix("lowerdir=").split(":"):
                        fds.append(mapped_clone(d, ns))
                        lowers.append(f"/proc/self/fd/{fds[-1]}")
                    opt = "lowerdir=" + ":".join(lowers)
                out.append(opt)
        yield out
    finally:
        for fd in fds:
            os.close(fd)


# ----- can this host do it? ------------------------------------------------------------------------


def problem(path: str) -> str | None:
    """Why ID-mapped overlay layers cannot be made under `path` here, or None. Moves this process
    into a mount namespace of its own (unshare needs one thread): the daemon asks
    `problem_in_subprocess` instead."""
    maps = (IDMap(0, 100000, 65536),)
    work = tempfile.mkdtemp(prefix=".idmap-check-", dir=path)
    try:
        for d in ("lower", "upper", "work", "merged"):
            os.mkdir(os.path.join(work, d))
        options = [f"lowerdir={work}/lower", f"upperdir={work}/upper", f"workdir={work}/work"]
        L.unshare(L.CLONE_NEWNS)  # the probe's own mount namespace: its mounts never reach the host's
        L.mount(None, "/", None, L.MS_REC | L.MS_PRIVATE)
        with mapped_lowers(options, maps, maps) as mapped:
            L.mount("overlay", f"{work}/merged", "overlay", 0, ",".join(mapped))
        L.umount2(f"{work}/merged")
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def problem_in_subprocess(path: str, timeout: float = 20.0) -> str | None:
    """`problem(path)` asked of a child Python, so the caller may have threads."""
    try:
        done = subprocess.run([sys.executable, "-m", "dockyard_common.idmap", path], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the check did not run: {error_text(exc)}"
    if done.returncode != 0:
        return done.stdout.strip() or done.stderr.strip()[-300:] or f"the check exited {done.returncode}"
    return None


if __name__ == "__main__":  # pragma: no cover - run by problem_in_subprocess
    found = problem(sys.argv[1])
    print(found or "ok")
    sys.exit(1 if found else 0)
