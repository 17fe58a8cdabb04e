"""Here-documents in a Dockerfile (issue 13), built by `dock build` on a real daemon and the image
run: `RUN <<EOF` (the text run by the shell), a `#!` script run as a file (also as a non-root
USER, and nothing of it in the layer), `RUN <<EOF sh` (an interpreter line: the shell does the
redirection), several heredocs in one RUN, `<<-` tab stripping, a quoted delimiter (no
expansion), `COPY <<EOF` with several files and with expansion; a rebuild reuses every RUN, a
changed heredoc runs its step again.
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
from tests.daemon import remove_base, start_daemon, stopping_new_zygotes
from tests.images import busybox_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")]

DOCKERFILE = """\
FROM busybox
ENV NAME=world
ARG GREETING=hello
RUN <<EOF
echo "$GREETING $NAME" > /simple
echo second line >> /simple
EOF
RUN <<EOF
#!/bin/sh
echo "script $0 $NAME" > /script
EOF
RUN <<EOF sh
echo "interpreter line $NAME" > /interp
EOF
RUN cat <<A > /a && cat <<'B' > /b
one $NAME
A
two $NAME
B
RUN <<-EOT
\techo "tabs gone" > /tabbed
\tEOT
COPY <<F1 <<"F2" /files/
hello $NAME
F1
raw $NAME
F2
COPY <<-EOT /files/indented.txt
\tindented
\tEOT
USER user
RUN <<EOF
#!/bin/sh
id -u > /tmp/uid
EOF
CMD ["sh", "-c", "cat /simple /script /interp /a /b /tabbed /files/F1 /files/F2 /files/indented.txt /tmp/uid"]
"""

EXPECTED = """\
hello world
second line
script /dev/pipes/EOF world
interpreter line world
one world
two $NAME
tabs gone
hello world
raw $NAME
indented
1000
"""


@pytest.fixture(scope="module")
def cli() -> Iterator[BuildCLI]:
    with tempfile.TemporaryDirectory(prefix="dy-heredoc-") as tmp, stopping_new_zygotes():
        archive = Path(tmp) / "busybox.tar"
        archive.write_bytes(busybox_oci_archive())
        d = start_daemon()
        try:
            c = BuildCLI(d.address)
            c.ok("images", "import", "--unpack", str(archive))
            yield c
        finally:
            remove_base(d)


def context(text: str) -> Path:
    ctx = Path(tempfile.mkdtemp(prefix="dy-heredoc-ctx-"))
    (ctx / "Dockerfile").write_text(text)
    return ctx


def test_heredocs_run_and_copy(cli: BuildCLI) -> None:
    ctx = context(DOCKERFILE)
    try:
        built = cli.build(ctx, "-t", "heredoc:1")
        assert cli.ok("run", "--rm", "heredoc:1") == EXPECTED
        manifest = json.loads(cli.blob(built.manifest_digest))
        names: set[str] = set()
        for layer in manifest["layers"][1:]:
            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(cli.blob(layer["digest"])))) as tf:
                names.update(m.name for m in tf.getmembers())
        assert not any(n.startswith("dev/") for n in names), sorted(names)  # the script's mount left nothing

        again = cli.build(ctx, "-t", "heredoc:1")
        assert json.loads(cli.blob(again.manifest_digest))["layers"] == manifest["layers"]
        runs = [e["step"] for e in again.events if e["type"] == "step" and e["text"].startswith("RUN")]
        assert len(runs) == 6 and all(any(e["type"] == "cached" and e["step"] == s for e in again.events)
                                      for s in runs)

        (ctx / "Dockerfile").write_text(DOCKERFILE.replace("interpreter line", "changed line"))
        changed = cli.build(ctx, "-t", "heredoc:2")
        assert changed.cached("RUN <<EOF\n") and not changed.cached("RUN <<EOF sh")
        assert "changed line world" in cli.ok("run", "--rm", "heredoc:2")
    finally:
        for p in sorted(ctx.rglob("*"), reverse=True):
            p.unlink()
        ctx.rmdir()


def test_failing_heredoc_names_its_code(cli: BuildCLI) -> None:
    ctx = context("FROM busybox\nRUN <<EOF\necho about to fail\nexit 3\nEOF\n")
    try:
        err = cli.fails("build", str(ctx))
        assert "exited with code 3" in err and "about to fail" in err and "Dockerfile:2" in err, err
    finally:
        (ctx / "Dockerfile").unlink()
        ctx.rmdir()
