"""RUN --mount (issue 13) on a real daemon: a cache directory kept across builds (and removed by
`dock builder prune`), a bind from another stage and from the build context (read-only; a
changed context file re-runs only its step), a tmpfs; nothing mounted reaches the layers; bad
or unsupported mounts are clear errors.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.buildcli import BuildCLI
from tests.daemon import remove_base, start_daemon, stopping_new_zygotes
from tests.images import busybox_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")]

DOCKERFILE = """\
FROM busybox AS tools
RUN mkdir -p /opt/tool && echo "from the tools stage" > /opt/tool/msg

FROM busybox
ARG RUNID=1
RUN --mount=type=cache,target=/cache,sharing=locked sh -c 'echo run-$RUNID >> /cache/log; cat /cache/log > /seen'
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/mnt/tool cat /mnt/tool/msg > /from-stage
RUN --mount=type=bind,source=data.txt,target=/ctx/data.txt sh -c 'cat /ctx/data.txt > /from-context; \\
    touch /ctx/data.txt 2>/dev/null && echo writable >> /from-context || true'
RUN --mount=type=tmpfs,target=/scratch sh -c 'grep " /scratch tmpfs " /proc/mounts > /dev/null && echo tmpfs > /tmpfs'
CMD ["sh", "-c", "cat /seen /from-stage /from-context /tmpfs"]
"""


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[BuildCLI, Path]]:
    with tempfile.TemporaryDirectory(prefix="dy-mounts-") as tmp, stopping_new_zygotes():
        archive = Path(tmp) / "busybox.tar"
        archive.write_bytes(busybox_oci_archive())
        ctx = Path(tmp) / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        (ctx / "data.txt").write_text("context data\n")
        d = start_daemon()
        try:
            cli = BuildCLI(d.address)
            cli.ok("images", "import", "--unpack", str(archive))
            yield cli, ctx
        finally:
            remove_base(d)


def layer_names(cli: BuildCLI, manifest_digest: str) -> set[str]:
    names: set[str] = set()
    for layer in json.loads(cli.blob(manifest_digest))["layers"][1:]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(cli.blob(layer["digest"])))) as tf:
            names.update(m.name.rstrip("/") for m in tf.getmembers())
    return names


def test_mounts(rig: tuple[BuildCLI, Path]) -> None:
    cli, ctx = rig
    first = cli.build(ctx, "-t", "mounts:1")
    assert cli.ok("run", "--rm", "mounts:1") == "run-1\nfrom the tools stage\ncontext data\ntmpfs\n"
    names = layer_names(cli, first.manifest_digest)
    assert {"seen", "from-stage", "from-context", "tmpfs"} <= names
    assert not names & {"cache", "mnt", "mnt/tool", "ctx", "scratch"}, sorted(names)

    # The cache directory outlives the build; a changed context file re-runs only its step.
    (ctx / "data.txt").write_text("changed data\n")
    second = cli.build(ctx, "-t", "mounts:2", "--build-arg", "RUNID=2")
    assert not second.cached("RUN --mount=type=bind,source=data.txt")
    assert cli.ok("run", "--rm", "mounts:2") == "run-1\nrun-2\nfrom the tools stage\nchanged data\ntmpfs\n"
    third = cli.build(ctx, "-t", "mounts:2", "--build-arg", "RUNID=2")
    steps = ("RUN --mount=type=cache", "RUN --mount=type=bind,from", "RUN --mount=type=bind,source",
             "RUN --mount=type=tmpfs")
    assert [third.cached(p) for p in steps] == [True] * 4, third.events

    # Pruning removes the cache directory: the next run starts empty.
    report = json.loads(cli.ok("--format", "json", "builder", "prune", "-f"))
    assert any(k.startswith("cachemount:") for k in report["removed"]), report
    cli.build(ctx, "-t", "mounts:3", "--build-arg", "RUNID=3")
    assert cli.ok("run", "--rm", "mounts:3").startswith("run-3\nfrom the tools stage")


@pytest.mark.parametrize(("mount", "words"), [
    ("type=secret,id=token", "type=secret is not supported yet"),
    ("type=bind,source=missing.txt,target=/x", "source 'missing.txt' not found in the build context"),
    ("type=bind,source=../..,target=/x", "escapes"),
    ("type=cache", "a target is required"),
    ("type=cache,target=/c,sharing=sometimes", "sharing 'sometimes'"),
    ("type=volume,target=/c", "unknown type 'volume'"),
    ("type=bind,target=/c,rw", "rw is not supported yet"),
    ("type=bind,from=nowhere.invalid/none:1,target=/c", "nowhere.invalid/none:1"),
])
def test_bad_mounts_are_clear_errors(rig: tuple[BuildCLI, Path], mount: str, words: str) -> None:
    cli, _ = rig
    ctx = Path(tempfile.mkdtemp(prefix="dy-mounts-bad-"))
    try:
        (ctx / "Dockerfile").write_text(f"FROM busybox\nRUN --mount={mount} true\n")
        err = cli.fails("build", str(ctx))
        assert words in err and "Dockerfile:2" in err, err
    finally:
        shutil.rmtree(ctx)
