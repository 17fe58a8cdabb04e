"""`ctr snapshots diff` through containerd and through dockyardd: the same change, the same layer.

Each case of tests/diff_cases.py is made on both daemons through `ctr` (prepare, mount the
printed mounts, write the base, commit, prepare on top, write the change), with the same
modes, owners and mtimes, then diffed by both. The uncompressed layers must be equal byte for
byte (so the digests, the diff IDs, are equal), and so must the gzip and zstd layers (the
blob digests; dockyardd compresses through dockyard-compress, containerd's own encoders, which
scripts/install builds). containerd stamps whiteouts with the time the
diff ran, so the two diffs run side by side and are repeated when they straddle a second.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from dockyard_common.types import Mount
from tests.conformance.mounts import mount_all, mounts_under, unmount
from tests.containerd import containerd
from tests.ctr import CTR, ok
from tests.ctr import ctr as run_ctr
from tests.daemon import remove_base, start_daemon
from tests.diff_cases import BASE_TIME, CASES, CHANGE_TIME, DiffCase, settle

pytestmark = [pytest.mark.compat, pytest.mark.root]

UNCOMPRESSED = "application/vnd.oci.image.layer.v1.tar"
GZIP = UNCOMPRESSED + "+gzip"
ZSTD = UNCOMPRESSED + "+zstd"
SNAPSHOTTERS = ["overlayfs", "native"]
_ATTEMPTS = 5


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, str]]:
    """The socket of a private containerd and of a private dockyardd, by name."""
    with containerd() as containerd_socket:
        d = start_daemon()
        try:
            yield {"containerd": containerd_socket, "dockyardd": d.address}
        finally:
            code = d.stop()
            log = d.log()
            remove_base(d)
            assert code == 0, f"dockyardd exited with {code}:\n{log}"


@pytest.fixture
def target() -> Iterator[Path]:
    path = tempfile.mkdtemp(prefix="dy-diff-mnt-")
    try:
        yield Path(path)
    finally:
        unmount(path)
        assert mounts_under(path) == []
        os.rmdir(path)


class _Side:
    """One daemon, one snapshotter, one namespace of this test."""

    def __init__(self, address: str, snapshotter: str, namespace: str) -> None:
        self.address, self.snapshotter, self.namespace = address, snapshotter, namespace

    def snapshots(self, *args: str) -> str:
        return ok(run_ctr(self.address, "snapshots", "--snapshotter", self.snapshotter, *args,
                          namespace=self.namespace))

    def write(self, target: Path, key: str, parent: str, fill: DiffCase, when: int, step: str) -> None:
        """Prepare `key` on `parent`, mount it as ctr prints it, make `step` of the case, unmount."""
        printed = json.loads(self.snapshots("prepare", "--mounts", key, *([parent] if parent else [])))
        mount_all([Mount(m["Type"], m["Source"], options=m["Options"] or []) for m in printed], str(target))
        try:
            getattr(fill, step)(target)
            settle(target, when)
            if step == "change" and self.snapshotter == "native":
                _stamp_directories(target, when)
        finally:
            unmount(str(target))

    def diff_command(self, key: str, media_type: str) -> list[str]:
        assert CTR is not None
        return [CTR, "--address", self.address, "--namespace", self.namespace, "snapshots", "--snapshotter",
                self.snapshotter, "diff", "--media-type", media_type, key]

    def remove(self, *keys: str) -> None:
        for key in keys:
            self.snapshots("rm", key)


def _stamp_directories(root: Path, when: int) -> None:
    """Give every directory the mtime `when`.

    containerd's native snapshotter copies the parent with continuity's CopyDir, which sets a
    directory's times before filling it: every copied directory has the copy's time. Ours keeps
    the parent's. The trees differ there, not the diff, so the test makes them equal."""
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            os.utime(os.path.join(dirpath, name), ns=(when * 10**9, when * 10**9))


def _make(side: _Side, case: DiffCase, target: Path) -> None:
    side.write(target, "base-a", "", case, BASE_TIME, "base")
    side.snapshots("commit", "base", "base-a")
    side.write(target, "work", "base", case, CHANGE_TIME, "change")


def _diff_side_by_side(sides: dict[str, _Side], media_type: str) -> dict[str, bytes]:
    """Both daemons' `ctr snapshots diff work`, started together (whiteouts carry the time)."""
    procs = {name: subprocess.Popen(side.diff_command("work", media_type), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE) for name, side in sides.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: {stderr.decode(errors='replace')}"
        out[name] = stdout
    return out


def _decompress(blob: bytes, media_type: str) -> bytes:
    if media_type == GZIP:
        return gzip.decompress(blob)
    if media_type == ZSTD:
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def _whiteout_mtimes(tar: bytes) -> set[int]:
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        return {int(m.mtime) for m in tf if m.name.rpartition("/")[2].startswith(".wh.")}


def _same_time_diffs(sides: dict[str, _Side], media_type: str) -> dict[str, bytes]:
    """Diffs whose whiteouts both daemons stamped with the same second (retried when not)."""
    for _ in range(_ATTEMPTS):
        out = _diff_side_by_side(sides, media_type)
        tars = {n: _decompress(b, media_type) for n, b in out.items()}
        if _whiteout_mtimes(tars["containerd"]) == _whiteout_mtimes(tars["dockyardd"]):
            return out
    raise AssertionError(f"the two diffs never ran within the same second in {_ATTEMPTS} attempts")


def _sides(peers: dict[str, str], snapshotter: str) -> dict[str, _Side]:
    namespace = f"dydiff-{secrets.token_hex(3)}"
    return {name: _Side(address, snapshotter, namespace) for name, address in peers.items()}


@pytest.mark.parametrize("snapshotter", SNAPSHOTTERS)
@pytest.mark.parametrize("name", list(CASES))
def test_same_change_same_layer(peers: dict[str, str], target: Path, snapshotter: str, name: str) -> None:
    sides = _sides(peers, snapshotter)
    for side in sides.values():
        _make(side, CASES[name], target)
    out = _same_time_diffs(sides, UNCOMPRESSED)
    ours, theirs = out["dockyardd"], out["containerd"]
    if name == "empty":
        assert theirs == bytes(1024)
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(theirs), mode="r:")]
    assert ours == theirs, f"containerd wrote {names}"
    for side in sides.values():
        side.remove("work", "base")


NEEDS_HELPER = pytest.mark.skipif(shutil.which("dockyard-compress") is None,
                                  reason="scripts/install builds dockyard-compress")
COMPRESSED_CASES = ["empty", "adds", "deletions", "opaque", "hardlinks", "xattrs", "sparse-empty", "large"]


@pytest.fixture(scope="module")
def containerd_compress() -> Iterator[Callable[[str, bytes], bytes]]:
    """containerd's compression.CompressStream, built from Debian's containerd sources."""
    go = shutil.which("go")
    assert go is not None, "go is missing: bash scripts/install installs golang-go"
    base = Path(tempfile.mkdtemp(prefix="dy-ccompress-"))
    try:
        binary = base / "compress"
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOFLAGS": "-trimpath"}
        built = subprocess.run([go, "build", "-o", str(binary), "."], cwd=Path(__file__).parent / "containerd_compress",
                               env=env, capture_output=True, text=True, timeout=600, check=False)
        assert built.returncode == 0, built.stderr

        def compress(kind: str, data: bytes) -> bytes:
            return subprocess.run([str(binary), kind], input=data, capture_output=True, timeout=120, check=True).stdout

        yield compress
    finally:
        shutil.rmtree(base, ignore_errors=True)


@NEEDS_HELPER
@pytest.mark.parametrize("name", COMPRESSED_CASES)
def test_gzip_layers_are_identical(peers: dict[str, str], target: Path, name: str) -> None:
    """The same change, diffed to gzip by both daemons: the same blob, byte for byte."""
    sides = _sides(peers, "overlayfs")
    for side in sides.values():
        _make(side, CASES[name], target)
    out = _same_time_diffs(sides, GZIP)
    ours, theirs = out["dockyardd"], out["containerd"]
    assert gzip.decompress(ours) == gzip.decompress(theirs)
    assert ours == theirs
    for side in sides.values():
        side.remove("work", "base")


@NEEDS_HELPER
@pytest.mark.parametrize("name", COMPRESSED_CASES)
def test_zstd_layers_are_containerds(peers: dict[str, str], target: Path, name: str,
                                     containerd_compress: Callable[[str, bytes], bytes]) -> None:
    """containerd 1.6's differ refuses zstd ("not implemented"); where containerd writes zstd
    (compression.CompressStream) it writes the bytes our zstd diff holds."""
    side = _sides(peers, "overlayfs")["dockyardd"]
    _make(side, CASES[name], target)
    done = subprocess.run(side.diff_command("work", ZSTD), capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    ours = done.stdout
    assert ours == containerd_compress("zstd", _decompress(ours, ZSTD))
    side.remove("work", "base")
