"""A full disk under the daemon's root, for every path that writes a lot: a Content.Write through
the SDK, `ctr images import`, `dock images import`, `ctr images pull` (unpacking through
Diff/Apply) and `dock pull` of a layer that decompresses past the free space.

Each test mounts a small tmpfs as the daemon's root (the whole root: metadata.db, content,
snapshots), imports busybox, notes the free space, makes an operation fail for want of space
and checks: the error is clear (ENOSPC in words, no Python exception names); the space the
failed operation took is back within 1 MiB in at most 5 s (its partial data freed and the
daemon's disk reserve, released to make room for the removals, in place again); a busybox
container runs right after; and a daemon restarted while the disk is still full (filled by a
file the test owns) starts, answers, collects, and runs busybox once the filler is gone.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from dock.client import Client
from dockyard_common.errors import ResourceExhausted
from supervisor.diskreserve import DEFAULT_SIZE, RESERVE_NAME, free_bytes
from tests.ctr import ctr, ok
from tests.daemon import REPO, DaemonProcess, reap_leftovers, start_daemon, stopping_new_zygotes
from tests.images import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, busybox_image, oci_archive, sha256
from tests.registry import RegistryProcess, push_blobs, push_manifest, start_registry
from tests.waiting import wait_until, wait_until_async

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")]

MiB = 1 << 20
FS_SIZE = 96 * MiB
FREED_WITHIN = 5.0  # seconds: the bound the issue sets
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
PYTHON_NAMES = sorted({n for n in dir(builtins) if n.endswith(("Error", "Exception"))} | {"Traceback", "sqlite3"})


def assert_clear(text: str) -> None:
    """A full-disk error as a user should read it."""
    print(f"error: {text.strip()}")
    assert "no space left on device" in text.lower(), text
    found = [name for name in PYTHON_NAMES if name in text]
    assert not found, f"Python exception names {found} in: {text}"


def fill(path: Path) -> None:
    """Write zeros to `path` until the filesystem is full."""
    with open(path, "wb", buffering=0) as f, contextlib.suppress(OSError):
        chunk = b"\0" * MiB
        while True:
            f.write(chunk)
    with open(path, "ab", buffering=0) as f, contextlib.suppress(OSError):
        while True:  # the last pages
            f.write(b"\0" * 4096)


@dataclass
class Env:
    base: Path
    d: DaemonProcess
    tmp: Path  # test files off the small filesystem

    @property
    def root(self) -> Path:
        return self.base / "root"

    def free(self) -> int:
        return free_bytes(self.root)

    def dock(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": self.d.address, "TMPDIR": str(self.tmp)}
        return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True,
                              env=env, timeout=timeout, cwd=REPO)

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return ctr(self.d, *args, timeout=timeout)

    def wait_freed(self, before: int) -> float:
        """Seconds until the free space is back within 1 MiB of `before` (at most FREED_WITHIN)."""
        started = time.monotonic()
        try:
            wait_until(lambda: abs(self.free() - before) <= MiB, FREED_WITHIN, what="the space to be freed",
                       interval=0.05)
        except AssertionError:
            listing = subprocess.run(["du", "-a", "-x", "--max-depth=4", str(self.root)], capture_output=True,
                                     text=True).stdout
            pytest.fail(f"free space {self.free()} is not back to {before} (+-1 MiB) after {FREED_WITHIN}s:\n"
                        f"{listing}")
        took = time.monotonic() - started
        released = self.d.log()[self.d.log_start:].count("released the disk reserve")
        print(f"freed in {took:.2f}s (free {self.free() - before:+d} bytes; reserve released {released}x)")
        return took

    def run_busybox(self) -> None:
        cid = f"full-{secrets.token_hex(3)}"
        out = ok(self.dock("run", "--rm", "--name", cid, "busybox", "echo", "still here"))
        assert out == "still here\n"

    def restart_on_full_disk(self) -> None:
        """Stop, fill the disk with a file the test owns, start again: it starts, answers and
        collects; then, once the filler is gone, busybox runs."""
        assert self.d.stop() == 0, self.d.log()
        filler = self.root / "test-filler"
        fill(filler)
        try:
            assert self.free() < DEFAULT_SIZE
            self.d = start_daemon(base=self.base)
            log = self.d.log()[self.d.log_start:]
            assert "Traceback" not in log
            assert "the filesystem is full at start-up" in log  # the reserve made room to start in
            ok(self.dock("version"))
            assert "busybox" in ok(self.dock("images", "ls"))
            gc = self.dock("gc")
            assert gc.returncode == 0, gc.stderr
            ok(self.dock("snapshots", "ls"))
        finally:
            filler.unlink()
        self.run_busybox()
        assert "Traceback" not in self.d.log()[self.d.log_start:]


@contextlib.contextmanager
def small_root(size: int = FS_SIZE) -> Iterator[Path]:
    """A daemon base whose root is a tmpfs of `size` bytes."""
    base = Path(tempfile.mkdtemp(prefix="dy-full-"))
    root = base / "root"
    root.mkdir(mode=0o711)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0711", "dy-full", str(root)], check=True)
    try:
        yield base
    finally:
        reap_leftovers(base)  # undoes the mounts under base/ (the root too)
        if os.path.ismount(root):
            subprocess.run(["umount", "-l", str(root)], check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    with stopping_new_zygotes(), small_root() as base, tempfile.TemporaryDirectory(prefix="dy-full-t-") as tmp:
        d = start_daemon(base=base)
        e = Env(base, d, Path(tmp))
        try:
            archive = e.tmp / "busybox.tar"
            archive.write_bytes(oci_archive([busybox_image("docker.io/library/busybox:latest")]))
            ok(e.dock("images", "import", "--unpack", str(archive)))
            archive.unlink()
            assert (e.root / RESERVE_NAME).stat().st_blocks * 512 >= DEFAULT_SIZE
            yield e
        finally:
            code = e.d.stop()
            if any(getattr(getattr(request.node, f"rep_{w}", None), "failed", False) for w in ("setup", "call")):
                print(f"\n----- dockyardd log ({e.d.log_path}) -----\n{e.d.log()}")
            assert code == 0, f"dockyardd exited with {code} on SIGTERM"


# -- images that do not fit ------------------------------------------------------------------------


def filler_layer(size: int, compression: str) -> tuple[bytes, str]:
    """A layer holding `big/data`, `size` bytes of 0x5a: (the compressed blob, its diff ID). Small
    compressed, huge unpacked (not zeros: those are applied as holes, taking no space)."""
    compressor: zlib._Compress | zstandard.ZstdCompressionObj
    if compression == "gzip":
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    else:
        compressor = zstandard.ZstdCompressor().compressobj()
    digest = hashlib.sha256()
    out = io.BytesIO()

    def feed(data: bytes) -> None:
        digest.update(data)
        out.write(compressor.compress(data))

    d = tarfile.TarInfo("big")
    d.type, d.mode = tarfile.DIRTYPE, 0o755
    feed(d.tobuf(tarfile.PAX_FORMAT))
    info = tarfile.TarInfo("big/data")
    info.size, info.mode = size, 0o644
    feed(info.tobuf(tarfile.PAX_FORMAT))
    chunk = b"\x5a" * (4 * MiB)
    left = size
    while left:
        n = min(left, len(chunk))
        feed(chunk[:n])
        left -= n
    feed(b"\0" * ((512 - size % 512) % 512) + b"\0" * 1024)
    out.write(compressor.flush())
    return out.getvalue(), "sha256:" + digest.hexdigest()


def image_of(layer: bytes, diff_id: str, media_type: str) -> tuple[bytes, dict[str, bytes]]:
    """(manifest, blobs) of an image with the one layer."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": media_type, "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    return manifest, {sha256(config): config, sha256(layer): layer, sha256(manifest): manifest}


def bomb_image(compression: str, fs_size: int = FS_SIZE) -> tuple[bytes, dict[str, bytes]]:
    layer, diff_id = filler_layer(2 * fs_size, compression)
    return image_of(layer, diff_id, OCI_LAYER_GZIP if compression == "gzip" else OCI_LAYER_ZSTD)


def archive_of(name: str, manifest: bytes, blobs: dict[str, bytes], path: Path) -> None:
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest),
         "annotations": {"io.containerd.image.name": name}}]}
    with tarfile.open(path, mode="w") as tf:
        def add(member: str, data: bytes) -> None:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        for digest, data in blobs.items():
            add(f"blobs/sha256/{digest.split(':', 1)[1]}", data)
        add("index.json", json.dumps(index).encode())


def big_archive(path: Path, size: int = FS_SIZE) -> None:
    """An OCI archive whose one layer blob (incompressible) is larger than the filesystem."""
    layer = os.urandom(size)
    manifest, blobs = image_of(gzip.compress(b"", mtime=0), sha256(b""), OCI_LAYER_GZIP)
    blobs = {sha256(layer): layer, **blobs}  # the big blob first: the import fails on it
    archive_of("docker.io/library/big:1", manifest, blobs, path)


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    with start_registry() as reg:
        yield reg


def push_bomb(registry: RegistryProcess, compression: str) -> str:
    manifest, blobs = bomb_image(compression)
    push_blobs(registry.url, "bomb", {k: v for k, v in blobs.items() if k != sha256(manifest)})
    push_manifest(registry.url, "bomb", compression, manifest, OCI_MANIFEST)
    return f"{registry.host}/bomb:{compression}"


# -- the paths -------------------------------------------------------------------------------------


async def written_under_a_lease(c: Client, size: int) -> None:
    """What containerd's clients do: write under a lease, delete the lease whatever happens."""
    lease = await c.leases.create()
    try:
        await c.content.with_lease(lease.id).write(f"full-{secrets.token_hex(4)}", os.urandom(size))
    finally:
        await c.leases.delete(lease.id)


async def test_content_write_on_a_full_disk(env: Env) -> None:
    before = env.free()
    async with env.d.client() as c:
        with pytest.raises(ResourceExhausted) as caught:
            await written_under_a_lease(c, before + MiB)
        assert_clear(str(caught.value))
        env.wait_freed(before)
        assert await c.content.list_statuses() == []
        # the next write that fits goes through
        await written_under_a_lease(c, MiB)
    env.wait_freed(before)
    env.run_busybox()
    env.restart_on_full_disk()


@pytest.mark.parametrize("client", ["ctr", "dock"])
def test_import_on_a_full_disk(env: Env, client: str) -> None:
    archive = env.tmp / "big.tar"
    big_archive(archive)
    before = env.free()
    res = (env.ctr if client == "ctr" else env.dock)("images", "import", str(archive))
    assert res.returncode != 0
    assert_clear(res.stderr)
    env.wait_freed(before)
    assert ok(env.ctr("content", "active")).splitlines()[1:] == []
    env.run_busybox()
    env.restart_on_full_disk()


def refused_unpacking_the_bomb(env: Env, res: subprocess.CompletedProcess[str], before: int) -> None:
    """`dock` refused the bomb's layer clearly, naming the file; its space came back, no
    half-made snapshot is left and busybox still runs."""
    assert res.returncode != 0
    assert_clear(res.stderr)
    assert "big/data" in res.stderr
    env.wait_freed(before)
    assert "extract" not in ok(env.dock("snapshots", "ls"))
    env.run_busybox()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_dock_import_unpacking_past_the_free_space(env: Env, compression: str) -> None:
    archive = env.tmp / "bomb.tar"
    manifest, blobs = bomb_image(compression)
    archive_of("docker.io/library/bomb:1", manifest, blobs, archive)
    before = env.free()
    refused_unpacking_the_bomb(env, env.dock("images", "import", "--unpack", str(archive)), before)


def test_ctr_pull_unpacking_past_the_free_space(env: Env, registry: RegistryProcess) -> None:
    ref = push_bomb(registry, "gzip")
    before = env.free()
    res = env.ctr("images", "pull", "--plain-http", ref)
    assert res.returncode != 0
    assert_clear(res.stderr)
    env.wait_freed(before)
    assert ok(env.ctr("snapshots", "ls")).count("\n") == 2  # the header and busybox's layer
    env.run_busybox()
    env.restart_on_full_disk()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_dock_pull_unpacking_past_the_free_space(env: Env, registry: RegistryProcess, compression: str) -> None:
    ref = push_bomb(registry, compression)
    before = env.free()
    refused_unpacking_the_bomb(env, env.dock("pull", "--plain-http", ref), before)
    if compression == "gzip":
        env.restart_on_full_disk()


async def test_restart_after_a_crash_on_a_full_disk(env: Env) -> None:
    """Killed in the middle of an import that took most of the disk, then the disk filled up by
    someone else: the restarted daemon starts on the full disk and frees what the dead one's
    import wrote (its temporary lease cannot be in use by anyone any more)."""
    before = env.free()
    reached = asyncio.Event()
    archive = env.tmp / "big.tar"
    big_archive(archive)

    async def chunks() -> AsyncIterator[bytes]:
        with open(archive, "rb") as f:
            sent = 0
            while data := f.read(MiB):
                yield data
                sent += len(data)
                if sent > before - 2 * DEFAULT_SIZE:  # most of the disk is taken by the ingest
                    reached.set()
                    await asyncio.Event().wait()  # hold the stream open until the daemon dies

    async with env.d.client() as c:
        task = asyncio.create_task(c.transfer.import_archive(chunks()))
        await asyncio.wait_for(reached.wait(), 60)
        # the ingest's bytes reached the disk
        await wait_until_async(lambda: env.free() <= 3 * DEFAULT_SIZE, 30, what="the import to fill the disk",
                               interval=0.05)
        env.d.stop(9)  # SIGKILL
        with contextlib.suppress(Exception):
            await task
    filler = env.root / "test-filler"
    fill(filler)
    try:
        env.d = start_daemon(base=env.base)
        log = env.d.log()[env.d.log_start:]
        assert "Traceback" not in log and "the filesystem is full at start-up" in log
        ok(env.dock("version"))
        wait_until(lambda: env.free() >= before // 2, FREED_WITHIN, what="the dead import's data to go",
                   interval=0.05)
        assert "dockyard.io/daemon-job" not in ok(env.dock("leases", "ls"))  # the dead job's lease went
    finally:
        filler.unlink()
    env.wait_freed(before)
    env.run_busybox()


def deep_layer_with_a_long_name(depth: int = 24) -> tuple[bytes, str]:
    """A layer that builds a directory chain deeper than PATH_MAX (24 names of 250 bytes),
    then names an entry longer than NAME_MAX inside it: the apply refuses that one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        path = ""
        for i in range(depth):
            path = f"{path}{i:03d}{'d' * 247}/"
            d = tarfile.TarInfo(path.rstrip("/"))
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(d)
            f = tarfile.TarInfo(f"{path}file")
            f.size = 5
            tf.addfile(f, io.BytesIO(b"hello"))
        bad = tarfile.TarInfo(f"{path}{'n' * 300}")
        bad.size = 1
        tf.addfile(bad, io.BytesIO(b"x"))
    tar = buf.getvalue()
    return gzip.compress(tar, mtime=0), sha256(tar)


def test_a_layer_refused_for_a_long_name_leaves_no_snapshot_behind(env: Env) -> None:
    layer, diff_id = deep_layer_with_a_long_name()
    manifest, blobs = image_of(layer, diff_id, OCI_LAYER_GZIP)
    archive = env.tmp / "deep.tar"
    archive_of("docker.io/library/deep:1", manifest, blobs, archive)
    before = env.free()
    res = env.dock("images", "import", "--unpack", str(archive))
    assert res.returncode != 0
    assert "name too long" in res.stderr.lower() and "n" * 300 in res.stderr, res.stderr
    assert not [n for n in PYTHON_NAMES if n in res.stderr], res.stderr
    env.wait_freed(before)
    snapshots = env.root / "snapshots" / "overlayfs" / "snapshots"
    # busybox's layer, nothing half-made or hidden
    wait_until(lambda: len(os.listdir(snapshots)) == 1, FREED_WITHIN,
               what=f"{snapshots} to hold busybox's layer alone", interval=0.05)
    assert "extract" not in ok(env.dock("snapshots", "ls"))
