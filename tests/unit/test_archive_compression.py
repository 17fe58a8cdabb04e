"""Layer compression: media types, detection, decompression errors, compressors, and apply."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zstandard

from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import Compression, compression_for_media_type, media_type_for
from supervisor.archive.apply import apply_layer
from supervisor.archive.compression import detect_compression, open_compressor, open_layer
from supervisor.archive.hashing import DigestingWriter
from tests.unit.archive_fixtures import build_tar, directory, file, gzip_compress, sha256_digest, zstd_compress

OCI = "application/vnd.oci.image.layer.v1.tar"
OCI_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"

PAYLOAD = os.urandom(200_000) + bytes(range(256)) * 2000


@pytest.mark.parametrize(
    ("media_type", "expected"),
    [
        (OCI, Compression.NONE),
        (OCI + "+gzip", Compression.GZIP),
        (OCI + "+zstd", Compression.ZSTD),
        (OCI_ND, Compression.NONE),
        (OCI_ND + "+gzip", Compression.GZIP),
        (OCI_ND + "+zstd", Compression.ZSTD),
        (DOCKER, None),
        (DOCKER_FOREIGN, None),
        (DOCKER + ".gzip", Compression.GZIP),
        (DOCKER_FOREIGN + ".gzip", Compression.GZIP),
    ],
)
def test_layer_media_types(media_type: str, expected: Compression | None) -> None:
    assert compression_for_media_type(media_type) is expected


@pytest.mark.parametrize(
    "media_type",
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/octet-stream",
        OCI + "+bzip2",
        OCI + "+gzip+zstd",
        OCI + "+gzip+encrypted",
        DOCKER + ".gzip+zstd",
        "",
    ],
)
def test_unknown_or_unsupported_media_types_are_invalid_argument(media_type: str) -> None:
    with pytest.raises(InvalidArgument):
        compression_for_media_type(media_type)
    with pytest.raises(InvalidArgument):
        open_layer(io.BytesIO(b""), media_type)


def test_media_type_for_round_trips() -> None:
    for c in Compression:
        assert compression_for_media_type(media_type_for(c)) is c
    assert media_type_for(Compression.GZIP, docker=True) == DOCKER + ".gzip"
    with pytest.raises(InvalidArgument):
        media_type_for(Compression.ZSTD, docker=True)


def test_detection_by_magic() -> None:
    assert detect_compression(gzip_compress(b"x")) is Compression.GZIP
    assert detect_compression(zstd_compress(b"x")) is Compression.ZSTD
    skippable = (0x184D2A5A).to_bytes(4, "little") + (0).to_bytes(4, "little")
    assert detect_compression(skippable) is Compression.ZSTD
    assert detect_compression(build_tar([file("a")])) is Compression.NONE
    assert detect_compression(b"") is Compression.NONE


@pytest.mark.parametrize(
    ("blob", "media_type"),
    [
        (gzip_compress(PAYLOAD), OCI + "+gzip"),
        (gzip_compress(PAYLOAD), DOCKER),  # Docker's plain type was often used for gzip
        (gzip_compress(PAYLOAD), OCI),  # the content decides, as in containerd
        (zstd_compress(PAYLOAD), OCI + "+zstd"),
        (PAYLOAD, OCI),
        (PAYLOAD, None),
        (gzip_compress(PAYLOAD[:1000]) + gzip_compress(PAYLOAD[1000:]), None),  # multi-member gzip
        (zstd_compress(PAYLOAD[:1000]) + zstd_compress(PAYLOAD[1000:]), None),  # multi-frame zstd
    ],
)
def test_open_layer_decompresses(blob: bytes, media_type: str | None) -> None:
    with open_layer(io.BytesIO(blob), media_type) as r:
        assert r.read() == PAYLOAD


def test_a_declared_compression_must_match_the_content() -> None:
    with pytest.raises(InvalidArgument, match="is not gzip-compressed"):
        open_layer(io.BytesIO(PAYLOAD), OCI + "+gzip")
    with pytest.raises(InvalidArgument, match="is not zstd-compressed"):
        open_layer(io.BytesIO(gzip_compress(PAYLOAD)), OCI + "+zstd")


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_compressed_streams_are_invalid_argument(kind: str, fraction: float) -> None:
    blob = gzip_compress(PAYLOAD) if kind == "gzip" else zstd_compress(PAYLOAD)
    with pytest.raises(InvalidArgument, match=f"truncated {kind}"):
        open_layer(io.BytesIO(blob[: int(len(blob) * fraction)])).read()


def test_corrupt_gzip_is_invalid_argument() -> None:
    blob = bytearray(gzip_compress(PAYLOAD))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(InvalidArgument, match="gzip"):
        open_layer(io.BytesIO(bytes(blob))).read()


def test_corrupt_zstd_is_invalid_argument() -> None:
    blob = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(PAYLOAD))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(InvalidArgument, match="zstd"):
        open_layer(io.BytesIO(bytes(blob))).read()


def test_garbage_after_a_zstd_stream_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument, match="zstd"):
        open_layer(io.BytesIO(zstd_compress(PAYLOAD) + b"garbage!")).read()


@pytest.mark.parametrize("compression", list(Compression))
def test_compressors_round_trip_and_leave_the_output_open(compression: Compression) -> None:
    out = io.BytesIO()
    with open_compressor(out, compression) as w:
        w.write(PAYLOAD)
    assert not out.closed
    blob = out.getvalue()
    assert detect_compression(blob) is compression
    assert open_layer(io.BytesIO(blob)).read() == PAYLOAD


def test_gzip_compression_is_deterministic() -> None:
    blobs = []
    for _ in range(2):
        out = io.BytesIO()
        with open_compressor(out, Compression.GZIP) as w:
            w.write(PAYLOAD)
        blobs.append(out.getvalue())
    assert blobs[0] == blobs[1]


# -- through apply_layer ---------------------------------------------------------------------


@pytest.fixture
def target() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="dockyard-compress-"))
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_apply_reports_the_digest_of_the_uncompressed_tar(target: Path, kind: str) -> None:
    raw = build_tar([directory("d"), file("d/f", PAYLOAD)])
    compressors: dict[str, Callable[[bytes], bytes]] = {"gzip": gzip_compress, "zstd": zstd_compress, "none": bytes}
    blob = compressors[kind](raw)
    with open_layer(io.BytesIO(blob)) as stream:
        result = apply_layer(stream, target, whiteout_mode="delete")
    assert result.digest == sha256_digest(raw)
    assert result.size == len(raw)
    assert (target / "d/f").read_bytes() == PAYLOAD


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown)")
@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_apply_of_a_truncated_compressed_layer_is_invalid_argument(target: Path, kind: str) -> None:
    raw = build_tar([file("a", PAYLOAD), file("b", PAYLOAD)])
    blob = gzip_compress(raw) if kind == "gzip" else zstd_compress(raw)
    with open_layer(io.BytesIO(blob[: len(blob) * 3 // 4])) as stream, pytest.raises(InvalidArgument):
        apply_layer(stream, target, whiteout_mode="delete")
    assert set(os.listdir(target)) <= {"a", "b"}  # at most a partial tree


def test_digesting_writer_gives_the_diff_id_of_what_it_compresses() -> None:
    raw = build_tar([file("a", PAYLOAD)])
    out = io.BytesIO()
    with open_compressor(out, Compression.ZSTD) as compressor:
        tee = DigestingWriter(compressor)
        tee.write(raw)
    assert (tee.size, tee.digest) == (len(raw), sha256_digest(raw))
    assert open_layer(io.BytesIO(out.getvalue()), media_type_for(Compression.ZSTD)).read() == raw
