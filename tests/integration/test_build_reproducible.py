"""Reproducible builds (issue 13): with SOURCE_DATE_EPOCH, `dock build --no-cache` of the same
context gives the same manifest digest, twice on one daemon and once more on a second daemon
(the value then from the client's environment), for a Dockerfile whose RUN step writes files,
a hard link, a symlink, and deletes one (a whiteout). The config's and the new history entries'
`created` are the epoch, no layer entry is newer than it; without the epoch the times are the
build's own.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.buildcli import BuildCLI
from tests.daemon import DaemonProcess, remove_base, start_daemon, stopping_new_zygotes
from tests.images import busybox_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")]

EPOCH = 1_700_000_000
EPOCH_TEXT = "2023-11-14T22:13:20Z"
DOCKERFILE = """\
FROM busybox
ARG SOURCE_DATE_EPOCH
COPY app.txt /app/
RUN mkdir -p /out/sub && echo data > /out/sub/file && ln /out/sub/file /out/sub/hard \\
    && ln -s file /out/sub/link && cp /app/app.txt /out/ && rm /etc/hostname && chmod 0750 /out/sub
ENV MODE=repro
CMD ["cat", "/out/sub/file"]
"""


@pytest.fixture(scope="module")
def daemons() -> Iterator[tuple[BuildCLI, BuildCLI, Path]]:
    with tempfile.TemporaryDirectory(prefix="dy-repro-") as tmp, stopping_new_zygotes():
        archive = Path(tmp) / "busybox.tar"
        archive.write_bytes(busybox_oci_archive())  # one base for both daemons
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        (ctx / "app.txt").write_text("the app\n")  # mtime now: newer than the epoch, so clamped
        started: list[DaemonProcess] = []
        try:
            for _ in range(2):
                started.append(start_daemon())
                BuildCLI(started[-1].address).ok("images", "import", "--unpack", str(archive))
            yield BuildCLI(started[0].address), BuildCLI(started[1].address), ctx
        finally:
            for d in started:
                remove_base(d)


def test_same_digest_across_no_cache_builds_and_daemons(daemons: tuple[BuildCLI, BuildCLI, Path]) -> None:
    a, b, ctx = daemons
    arg = ("--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}")
    first = a.build(ctx, "--no-cache", *arg, "-t", "r:1").manifest_digest
    second = a.build(ctx, "--no-cache", *arg, "-t", "r:2").manifest_digest
    other = b.build(ctx, "--no-cache", "-t", "r:1", env={"SOURCE_DATE_EPOCH": str(EPOCH)}).manifest_digest
    assert first == second == other

    manifest = json.loads(a.blob(first))
    config = json.loads(a.blob(manifest["config"]["digest"]))
    assert config["created"] == EPOCH_TEXT
    new_history = config["history"][-5:]  # ARG, COPY, RUN, ENV, CMD
    assert all(h["created"] == EPOCH_TEXT for h in new_history), new_history
    names: dict[str, tarfile.TarInfo] = {}
    for layer in manifest["layers"][1:]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(a.blob(layer["digest"])))) as tf:
            for m in tf.getmembers():
                names[m.name] = m
                assert m.mtime <= EPOCH, (m.name, m.mtime)
                assert not m.uname and not m.gname, m.name
    assert names["etc/.wh.hostname"].mtime == EPOCH
    assert names["out/sub/hard"].islnk() and names["out/sub/link"].issym()
    assert names["out/sub/file"].mtime == EPOCH  # written by the RUN, now: clamped
    assert a.ok("run", "--rm", "r:1").strip() == "data"


def test_without_epoch_times_are_the_builds(daemons: tuple[BuildCLI, BuildCLI, Path]) -> None:
    a, _, ctx = daemons
    manifest = json.loads(a.blob(a.build(ctx, "--no-cache", "-t", "r:now").manifest_digest))
    config = json.loads(a.blob(manifest["config"]["digest"]))
    assert config["created"] != EPOCH_TEXT and config["created"] > "2024"


def test_bad_epoch_is_a_clear_error(daemons: tuple[BuildCLI, BuildCLI, Path]) -> None:
    a, _, ctx = daemons
    err = a.fails("build", "--build-arg", "SOURCE_DATE_EPOCH=yesterday", str(ctx))
    assert "SOURCE_DATE_EPOCH='yesterday'" in err, err
