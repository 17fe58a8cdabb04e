"""Layer compression through dockyard-compress: round trips, and every way the pipe can fail
ends in a clear error, never a hang or a leftover process."""

from __future__ import annotations

import errno
import gzip
import io
import os
import random
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from dockyard_common.errors import Internal
from dockyard_common.imagespec import Compression
from supervisor.archive.compression import open_compressor
from supervisor.archive.gocompress import PipedCompressor
from supervisor.config import Config, ConfigError, compress_helper, validate

HELPER = shutil.which("dockyard-compress")
needs_helper = pytest.mark.skipif(HELPER is None, reason="scripts/install builds dockyard-compress")
DATA = random.Random(3).randbytes(300_000) + b"abc" * 500_000


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-compress"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _children() -> set[int]:
    """Our child processes still alive (or not reaped)."""
    tasks = Path(f"/proc/{os.getpid()}/task")
    out: set[int] = set()
    for task in tasks.iterdir():
        try:
            text = (task / "children").read_text()
        except FileNotFoundError:
            continue  # a thread (of the executor, say) that ended after the listing: it had none left
        out.update(int(pid) for pid in text.split())
    return out


@pytest.fixture
def no_leftover_children() -> Iterator[None]:
    before = _children()
    yield
    assert _children() - before == set()


@needs_helper
@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD])
def test_round_trip(compression: Compression, no_leftover_children: None) -> None:
    assert HELPER is not None
    out = io.BytesIO()
    with open_compressor(out, compression, helper=HELPER) as w:
        assert isinstance(w, PipedCompressor)
        for i in range(0, len(DATA), 70_000):
            w.write(DATA[i:i + 70_000])
    blob = out.getvalue()
    if compression is Compression.GZIP:
        assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # Go's header: no name, mtime 0
        assert gzip.decompress(blob) == DATA
    else:
        assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == DATA


@needs_helper
def test_chunking_does_not_change_the_bytes() -> None:
    assert HELPER is not None
    blobs = []
    for step in (1 << 20, 4093):
        out = io.BytesIO()
        with open_compressor(out, Compression.GZIP, helper=HELPER) as w:
            for i in range(0, len(DATA), step):
                w.write(DATA[i:i + step])
        blobs.append(out.getvalue())
    assert blobs[0] == blobs[1]


class _FullDisk(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@needs_helper
def test_a_full_out_stream_is_its_own_error_not_a_hang(no_leftover_children: None) -> None:
    assert HELPER is not None
    w = PipedCompressor(_FullDisk(), "gzip", HELPER)  # type: ignore[arg-type]
    with pytest.raises(OSError) as caught:
        for _ in range(200):  # far more than the pipes hold: the writer must not block for ever
            w.write(random.randbytes(1 << 16))
        w.close()
    assert caught.value.errno == errno.ENOSPC
    w.abort()


def test_a_failing_helper_says_why(tmp_path: Path, no_leftover_children: None) -> None:
    helper = _script(tmp_path, 'cat >/dev/null; echo "encoder exploded" >&2; exit 1')
    w = PipedCompressor(io.BytesIO(), "gzip", helper)  # type: ignore[arg-type]
    w.write(b"some tar")
    with pytest.raises(Internal, match="layer compression failed: encoder exploded"):
        w.close()


def test_a_helper_that_dies_early_fails_the_write(tmp_path: Path, no_leftover_children: None) -> None:
    helper = _script(tmp_path, "exit 3")
    w = PipedCompressor(io.BytesIO(), "zstd", helper)  # type: ignore[arg-type]
    with pytest.raises(Internal, match="layer compression failed"):
        for _ in range(100):
            w.write(bytes(1 << 16))
        w.close()


def test_leaving_on_an_error_ends_the_helper(tmp_path: Path, no_leftover_children: None) -> None:
    helper = _script(tmp_path, "exec sleep 600")  # never reads: close() would wait for ever
    with pytest.raises(RuntimeError), PipedCompressor(io.BytesIO(), "gzip", helper):  # type: ignore[arg-type]
        raise RuntimeError("the walk failed")


def test_config_choice() -> None:
    assert compress_helper(validate(Config(diff_compressor="python"))) is None
    assert compress_helper(validate(Config(diff_compressor="auto"))) == HELPER
    with pytest.raises(ConfigError, match=r"diff\.compressor must be one of auto, containerd, python"):
        validate(Config(diff_compressor="pigz"))


def test_containerd_choice_needs_the_helper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="needs dockyard-compress on PATH"):
        validate(Config(diff_compressor="containerd"))
