"""The overlayfs snapshotter: each snapshot stores only its changes (upper dir).

Mounts, as containerd's `snapshots/overlay` returns them:

    no parent           bind <id>/fs [rw, rbind]              (view: [ro, rbind])
    view, one parent    bind <parent>/fs [ro, rbind]
    view, parents       overlay "overlay" [index=off, lowerdir=p1:p2:...]
    active, parents     overlay "overlay" [index=off, workdir=<id>/work, upperdir=<id>/fs,
                                           lowerdir=p1:p2:...]            (nearest parent first)

An active snapshot prepared with containerd 2's labels containerd.io/snapshot/uidmapping and
gidmapping (a container in its own user namespace) also gets `uidmap=`/`gidmap=` options, and
its upper dir belongs to the container's root on the host (dockyard_common/idmap.py).

Long chains. mount(2) copies at most one page (4096 bytes) of options, and
every lowerdir is an absolute path under the root: 128 layers under
/var/lib/dockyard/snapshots/overlayfs already need ~7 KiB. containerd works
around this in its mounter (chdir into the root, relative paths); our mounts are
plain descriptions any mounter must be able to use, so instead, when the
options would not fit in a page, every path goes through one short symlink,
`/run/dy/<hash of root>` -> `<root>/snapshots` (overlay resolves paths once, at
mount time). That costs ~24 bytes per layer whatever the root's length: about
160 layers fit (the kernel's own limit is 500); 128 under a 480-byte root is tested. Chains longer than that are
refused by prepare/view with ResourceExhausted rather than failing at mount
time. The link lives on tmpfs (recreated on demand after a reboot) and is
removed by close().
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable

from dockyard_common import idmap
from dockyard_common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, error_text
from dockyard_common.types import Kind, Mount

from .directory import DirectorySnapshotter
from .storage import Record
from .tree import remove_tree

log = logging.getLogger(__name__)

SHORT_LINK_DIR = "/run/dy"
_IDMAP_FILE = "idmap"  # beside fs/ and work/: the uidmap=/gidmap= options of a remapped snapshot

# What mount(2) copies from user space: the options must fit, NUL included.
_OPTIONS_LIMIT = os.sysconf("SC_PAGESIZE")


def _index_option() -> list[str]:
    # index=off keeps hard-link/NFS indexing off, so a layer mounted by two
    # overlays at once is not tied to the first one's upper (containerd does the same).
    return ["index=off"] if os.path.exists("/sys/module/overlay/parameters/index") else []


def _mount_cmd(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False)


def overlay_problem(root: str) -> str | None:
    """Why overlayfs cannot be used with upper dirs under `root`, or None if it works.

    Mounts a real two-layer overlay in a temporary directory under `root`, writes
    through it and checks the write landed in the upper dir. Blocking.
    """
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount(8) and umount(8) are required"
    os.makedirs(root, mode=0o700, exist_ok=True)
    check = tempfile.mkdtemp(prefix=".overlay-check-", dir=root)
    try:
        d = {n: os.path.join(check, n) for n in ("lower1", "lower2", "upper", "work", "merged")}
        for path in d.values():
            os.mkdir(path)
        opts = [*_index_option(), f"lowerdir={d['lower2']}:{d['lower1']}", f"upperdir={d['upper']}",
                f"workdir={d['work']}"]
        res = _mount_cmd(["mount", "-t", "overlay", "-o", ",".join(opts), "overlay", d["merged"]])
        if res.returncode != 0:
            return f"overlay mount failed: {res.stderr.strip() or res.returncode}"
        try:
            with open(os.path.join(d["merged"], "probe"), "w") as f:
                f.write("ok")
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # The overlay mounted; a full disk is no reason to do without overlayfs.
            log.warning("overlay check at %s: the disk is full, so the write through it is not checked", root)
            return None
        finally:
            res = _mount_cmd(["umount", d["merged"]])
            if res.returncode != 0:
                log.warning("failed to unmount overlay check %s: %s", d["merged"], res.stderr.strip())
        if not os.path.exists(os.path.join(d["upper"], "probe")):
            return "a write through the overlay did not reach the upper dir"
        return None
    except OSError as e:
        return f"overlay check failed: {error_text(e)}"
    finally:
        try:
            remove_tree(check)
        except OSError as e:
            log.warning("failed to remove overlay check dir %s: %s", check, e)


def overlay_supported(root: str) -> bool:
    """True when overlayfs works with upper dirs on the filesystem of `root`. Blocking."""
    return overlay_problem(root) is None


class OverlaySnapshotter(DirectorySnapshotter):
    name = "overlayfs"

    def __init__(self, root: str | os.PathLike[str], *, short_link_dir: str = SHORT_LINK_DIR,
                 on_full: Callable[[str], bool] | None = None) -> None:
        """Open the snapshotter at `root`; FailedPrecondition if overlayfs does not work there."""
        path = os.path.abspath(os.fspath(root))
        # These characters separate or escape overlay options and lowerdir lists.
        if any(c in path for c in ",:\\"):
            raise InvalidArgument(f"overlay snapshotter root {path!r} must not contain ',', ':' or '\\'")
        problem = overlay_problem(path)
        if problem is not None:
            raise FailedPrecondition(f"overlayfs is not usable at {path}: {problem}")
        super().__init__(path, on_full=on_full)
        self._index = _index_option()
        tag = hashlib.sha256(self._snapshots_dir.encode()).hexdigest()[:8]
        self.short_link = os.path.join(short_link_dir, tag)

    def _populate(self, staged: str, kind: Kind, parent_ids: tuple[int, ...], labels: dict[str, str]) -> None:
        mapped = _id_mapping(labels) if kind == Kind.ACTIVE and parent_ids else None
        if kind == Kind.ACTIVE:
            os.mkdir(os.path.join(staged, "work"), 0o711)
        if mapped is not None:
            # A container in a user namespace: its layers are mounted ID-mapped, and the upper
            # dir (the merged root, which cannot be) belongs to the container's root on the host.
            uids, gids = mapped
            uid, gid = idmap.host_id_of(uids), idmap.host_id_of(gids)
            if uid is None or gid is None:
                raise InvalidArgument(f"snapshot labels {idmap.UID_LABEL}, {idmap.GID_LABEL}: container id 0 "
                                      "must be mapped")
            os.lchown(os.path.join(staged, "fs"), uid, gid)
            with open(os.path.join(staged, _IDMAP_FILE), "w") as f:
                f.write(f"{idmap.UID_OPTION}{idmap.format_maps(uids)}\n{idmap.GID_OPTION}{idmap.format_maps(gids)}\n")
        elif parent_ids:
            # The new upper dir becomes the merged root: give it the parent's owner.
            st = os.stat(self._fs(parent_ids[0]))
            os.lchown(os.path.join(staged, "fs"), st.st_uid, st.st_gid)

    def _mounts_for(self, rec: Record) -> list[Mount]:
        view = rec.kind == Kind.VIEW
        if not rec.parent_ids:
            return [Mount(type="bind", source=self._fs(rec.id), options=["ro" if view else "rw", "rbind"])]
        if view and len(rec.parent_ids) == 1:
            return [Mount(type="bind", source=self._fs(rec.parent_ids[0]), options=["ro", "rbind"])]
        mapped = self._id_map_options(rec)
        options = self._overlay_options(rec, self._snapshots_dir) + mapped
        if _fits(options):
            return [Mount(type="overlay", source="overlay", options=options)]
        options = self._overlay_options(rec, self.short_link) + mapped
        if not _fits(options):
            raise ResourceExhausted(
                f"a chain of {len(rec.parent_ids)} layers does not fit in the kernel's "
                f"{_OPTIONS_LIMIT}-byte overlay mount options"
            )
        self._ensure_short_link()
        return [Mount(type="overlay", source="overlay", options=options)]

    def _overlay_options(self, rec: Record, base: str) -> list[str]:
        options = list(self._index)
        if rec.kind == Kind.ACTIVE:
            options += [f"workdir={base}/{rec.id}/work", f"upperdir={base}/{rec.id}/fs"]
        options.append("lowerdir=" + ":".join(f"{base}/{pid}/fs" for pid in rec.parent_ids))
        return options

    def _id_map_options(self, rec: Record) -> list[str]:
        """uidmap=/gidmap= of a snapshot prepared for a user namespace (see `_populate`)."""
        if rec.kind != Kind.ACTIVE:
            return []
        try:
            with open(os.path.join(self._dir(rec.id), _IDMAP_FILE)) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def _ensure_short_link(self) -> None:
        try:
            if os.readlink(self.short_link) == self._snapshots_dir:
                return
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.EINVAL):
                raise
        tmp = f"{self.short_link}.{secrets.token_hex(4)}"
        for attempt in range(3):
            os.makedirs(os.path.dirname(self.short_link), mode=0o755, exist_ok=True)
            try:
                os.symlink(self._snapshots_dir, tmp)
                break
            except FileNotFoundError:
                # Another snapshotter's close() removed the emptied directory: retry.
                if attempt == 2:
                    raise
        # Replace atomically: a concurrent reader sees the old link or the new one.
        os.replace(tmp, self.short_link)

    def _release(self) -> None:
        try:
            if os.readlink(self.short_link) == self._snapshots_dir:
                os.unlink(self.short_link)
            os.rmdir(os.path.dirname(self.short_link))  # only when no other link is left
        except OSError:
            pass


def _id_mapping(labels: dict[str, str]) -> tuple[tuple[idmap.IDMap, ...], tuple[idmap.IDMap, ...]] | None:
    """The container's id mappings the labels ask for (containerd 2's), None for none."""
    uid_text, gid_text = labels.get(idmap.UID_LABEL), labels.get(idmap.GID_LABEL)
    if uid_text is None and gid_text is None:
        return None
    if uid_text is None or gid_text is None:
        raise InvalidArgument(f"snapshot labels: {idmap.UID_LABEL} and {idmap.GID_LABEL} go together")
    return idmap.parse(uid_text, f"label {idmap.UID_LABEL}"), idmap.parse(gid_text, f"label {idmap.GID_LABEL}")


def _fits(options: list[str]) -> bool:
    return len(",".join(options)) + 1 <= _OPTIONS_LIMIT
