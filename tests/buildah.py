"""Debian's buildah as a peer builder, and OCI/Docker images read back as a filesystem model, for
the build differential (tests/integration/test_build_vs_buildah.py) and bench/build.py.

    with Buildah.private() as b:                     # its own --root/--runroot in a temp dir
        b.load_oci_archive(Path("busybox.tar"))      # named as the archive says
        b.bud(ctx, "-t", "app:1")                    # runc, --network none, docker format
        image = b.export("app:1")                    # Image(files, config)
    diff_files(ours.files, image.files)              # ["/etc/x: mode 0o644 != 0o600", ...]

buildah never gets a network namespace set up by CNI (`--network none`), and its storage (vfs:
no overlay-on-overlay questions) lives and dies in a temp dir, mounts included.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILDAH = shutil.which("buildah")
# The build flags every buildah build of ours gets: runc (crun refuses this host's hybrid
# cgroups), no network (by default its RUN steps put a CNI bridge and firewall rules into the
# host's namespace), the Docker config format (OCI's has no Healthcheck, OnBuild or Shell), no
# io.buildah.version label, the cache on (as `dock build`'s), never a registry.
BUD_FLAGS = ("--runtime", "runc", "--network", "none", "--isolation", "oci", "--format", "docker",
             "--identity-label=false", "--layers", "--pull=never")


@dataclass(frozen=True)
class Entry:
    """One path of an image's filesystem, without times."""

    kind: str  # dir, file, symlink, char, block, fifo
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str = ""
    link: str = ""  # a symlink's target; a device's major:minor


@dataclass
class Image:
    files: dict[str, Entry]
    config: dict[str, Any]  # the image config's "config" object
    manifest: dict[str, Any]


_KINDS = {tarfile.DIRTYPE: "dir", tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.SYMTYPE: "symlink",
          tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo"}
_OPAQUE = ".wh..wh..opq"


def _path(name: str) -> str:
    return "/" + name.strip("/").removeprefix("./").strip("/") if name.strip("/.") else "/"


def _drop(files: dict[str, Entry], path: str, *, keep_self: bool = False) -> None:
    prefix = path.rstrip("/") + "/"
    for p in [p for p in files if p.startswith(prefix)]:
        del files[p]
    if not keep_self:
        files.pop(path, None)


def decompress(blob: bytes) -> bytes:
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def apply_layer(files: dict[str, Entry], layer: bytes) -> None:
    """Apply one (uncompressed) layer tar to `files` as an unpacker would: its whiteouts and
    opaque markers first (they hide what the layers below have, never what this one adds),
    then its entries; a hard link becomes a copy of its target's entry."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tf:
        members = tf.getmembers()
        for m in members:
            path = _path(m.name)
            parent, _, base = path.rpartition("/")
            if base == _OPAQUE:
                _drop(files, parent or "/", keep_self=True)
            elif base.startswith(".wh."):
                _drop(files, f"{parent}/{base[4:]}")
        for m in members:
            path = _path(m.name)
            if path.rpartition("/")[2].startswith(".wh.") or path == "/":
                continue
            if m.islnk():
                files[path] = files[_path(m.linkname)]
                continue
            kind = _KINDS[m.type]
            old = files.get(path)
            if old is not None and old.kind == "dir" and kind != "dir":
                _drop(files, path)
            entry = Entry(kind, m.mode & 0o7777, m.uid, m.gid)
            if kind == "file":
                f = tf.extractfile(m)
                assert f is not None
                data = f.read()
                entry = Entry(kind, entry.mode, m.uid, m.gid, len(data), hashlib.sha256(data).hexdigest())
            elif kind == "symlink":
                entry = Entry(kind, entry.mode, m.uid, m.gid, link=m.linkname)
            elif kind in ("char", "block"):
                entry = Entry(kind, entry.mode, m.uid, m.gid, link=f"{m.devmajor}:{m.devminor}")
            files[path] = entry


def read_image(manifest: dict[str, Any], blob: Callable[[str], bytes]) -> Image:
    """The filesystem and config of the image `manifest` describes, its blobs read by `blob(digest)`."""
    files: dict[str, Entry] = {}
    for layer in manifest["layers"]:
        apply_layer(files, decompress(blob(layer["digest"])))
    config = json.loads(blob(manifest["config"]["digest"]))
    return Image(files, config.get("config") or {}, manifest)


def diff_files(ours: dict[str, Entry], theirs: dict[str, Entry]) -> list[str]:
    """One line per difference: a path only one side has, or a field that differs."""
    out = []
    for path in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(path), theirs.get(path)
        if a is None:
            out.append(f"{path}: only buildah's ({b})")
        elif b is None:
            out.append(f"{path}: only ours ({a})")
        elif a != b:
            for name in ("kind", "mode", "uid", "gid", "size", "sha256", "link"):
                x, y = getattr(a, name), getattr(b, name)
                if x != y:
                    out.append(f"{path}: {name} {oct(x) if name == 'mode' else x!r} != "
                               f"{oct(y) if name == 'mode' else y!r}")
    return out


CONFIG_FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes",
                 "StopSignal", "Healthcheck", "OnBuild", "Shell")


def diff_configs(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """One line per differing field of CONFIG_FIELDS. An empty value and an absent one are the
    same (buildah writes `"Entrypoint": []` and `"Volumes": {}` where docker leaves them out)."""
    out = []
    for name in CONFIG_FIELDS:
        a, b = ours.get(name) or None, theirs.get(name) or None
        if a != b:
            out.append(f"{name}: {json.dumps(a)} != {json.dumps(b)}")
    return out


class Buildah:
    """buildah with storage of its own under `base` (vfs unless `driver` says otherwise), removed
    with its mounts by `close`."""

    def __init__(self, base: Path, driver: str = "vfs") -> None:
        assert BUILDAH is not None, "buildah is not installed (scripts/install installs it)"
        self.base = base
        self.root = base / "root"
        self.runroot = base / "run"
        self.driver = driver

    @classmethod
    @contextlib.contextmanager
    def private(cls, prefix: str = "dy-buildah-", driver: str = "vfs") -> Iterator[Buildah]:
        b = cls(Path(tempfile.mkdtemp(prefix=prefix)), driver)
        try:
            yield b
        finally:
            b.close()

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        assert BUILDAH is not None
        res = subprocess.run([BUILDAH, "--root", str(self.root), "--runroot", str(self.runroot),
                              "--storage-driver", self.driver, *args], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise AssertionError(f"buildah {' '.join(args)}: rc {res.returncode}\n{res.stdout[-3000:]}\n"
                                 f"{res.stderr[-3000:]}")
        return res

    def load_oci_archive(self, archive: Path) -> str:
        """Pull an OCI archive into the private store (named by its io.containerd.image.name); its id."""
        return self.run("pull", "-q", f"oci-archive:{archive}").stdout.strip()

    def bud(self, ctx: Path, *args: str) -> str:
        """`buildah bud` of `ctx` with BUD_FLAGS and `args`; the new image's id."""
        iid = self.base / "iid"
        self.run("bud", *BUD_FLAGS, "--iidfile", str(iid), *args, str(ctx))
        return iid.read_text().strip().removeprefix("sha256:")

    def export(self, image: str) -> Image:
        """The image as buildah pushes it (`dir:`, Docker v2s2: the config as built)."""
        out = Path(tempfile.mkdtemp(prefix="export-", dir=self.base))
        try:
            self.run("push", "-q", "--format", "v2s2", image, f"dir:{out}")
            manifest = json.loads((out / "manifest.json").read_bytes())
            return read_image(manifest, lambda digest: (out / digest.split(":", 1)[1]).read_bytes())
        finally:
            shutil.rmtree(out, ignore_errors=True)

    def close(self) -> None:
        """Remove its containers and images, unmount whatever is left under `base`, remove `base`."""
        if self.root.exists():
            self.run("rm", "-a", check=False)
            self.run("rmi", "-a", "-f", check=False)
        unmount_below(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


def unmount_below(base: Path) -> None:
    """Unmount every mount point under `base`, deepest first."""
    prefix = str(base) + "/"
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for point in sorted((p for p in points if p.startswith(prefix) or p == str(base)), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def write_tree(root: Path, files: dict[str, bytes | str], mode: int = 0o644) -> None:
    """Files under `root` with explicit modes (the umask must not matter); parents 0755."""
    for name, data in files.items():
        path = root / name
        for parent in reversed(path.relative_to(root).parents):
            d = root / parent
            if not d.is_dir():
                d.mkdir()
                os.chmod(d, 0o755)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(path, mode)
