"""`dock build` against a real builder (issue 13): Dockerfiles of our own covering every
instruction, multi-stage builds, .dockerignore and the cache, built by `dock build` (a test
daemon) and by Debian's `buildah bud` (private storage, runc, --network none, Docker format)
from the same context and the same busybox base (tests/images.py, given to buildah as an OCI
archive). The results are compared entry by entry (path, type, mode, uid/gid, size, content
hash, link target; not times) and config field by field (tests/buildah.py).

Where the builders legitimately differ the difference is listed below with its reason, and a
test asserts exactly those differences and no others.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.buildah import BUILDAH, Buildah, Image, diff_configs, diff_files, read_image, write_tree
from tests.buildcli import BuildCLI, Built
from tests.daemon import DaemonProcess, remove_base, start_daemon, stopping_new_zygotes
from tests.images import busybox_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root"),
              pytest.mark.skipif(BUILDAH is None, reason="buildah is not installed (scripts/install installs it)")]

# Every instruction but heredocs (below) and ONBUILD's trigger (its own test), with build args,
# an ARG before FROM, both forms of RUN, COPY --chown by id and by name, ADD of a local tar
# (extracted, owners and modes from the archive) and of a plain file.
INSTRUCTIONS = """\
ARG BASE=busybox
FROM ${BASE} AS base
ARG VERSION=1
ARG UNSET
ENV APP=/app GREETING="hello world" VERSION=${VERSION}
LABEL org.example.name="differential" org.example.version=${VERSION} "with space"="a b"
WORKDIR ${APP}
COPY a.txt b.txt ./
COPY --chown=1000:1000 dir/ ${APP}/dir/
COPY --chown=user:user run.sh /usr/local/bin/
ADD archive.tar ./unpacked/
ADD plain.txt /srv/plain.txt
RUN echo "$GREETING $VERSION [$UNSET]" > shell.txt && mkdir -p /data/sub && busybox chmod 0750 /data/sub
RUN ["/bin/sh", "-c", "echo exec > /app/exec.txt && ln -s exec.txt /app/exec.link && ln /app/exec.txt /app/hard"]
RUN rm /bin/od /app/b.txt && rm -r /app/dir/sub
SHELL ["/bin/sh", "-e", "-c"]
RUN echo "shell $0" > /app/shell0.txt
USER user:user
RUN id > /tmp/id.txt && echo mine > /tmp/mine.txt
USER 1000
WORKDIR sub/dir
EXPOSE 8080 53/udp 9000/tcp
VOLUME /data ["/var/log/app"]
STOPSIGNAL SIGUSR1
HEALTHCHECK --interval=30s --timeout=5s --start-period=2s --retries=4 CMD cat /app/a.txt || exit 1
ONBUILD RUN echo triggered > /tmp/onbuild.txt
ONBUILD LABEL triggered=yes
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"""

SHELL_FORMS = """\
FROM busybox
ENV WHO=world
WORKDIR /w
ENTRYPOINT echo hello $WHO
CMD sleep 1
HEALTHCHECK NONE
STOPSIGNAL 9
USER nobody
"""

# Only the stages the target needs run: `broken` would fail the build.
MULTI_STAGE = """\
FROM busybox AS build
WORKDIR /out
RUN echo built > artifact && ln -s artifact link && mkdir -p deep/er && echo x > deep/er/f
COPY --chown=1000:1000 a.txt ./
FROM busybox AS broken
RUN exit 3
FROM build AS test
RUN echo tested > /out/tested
FROM busybox
COPY --from=build /out/ /srv/
COPY --from=test /out/tested /srv/tested
COPY --from=busybox /bin/busybox /opt/bb
COPY --from=0 /out/deep /srv/deep-by-index
CMD ["cat", "/srv/artifact"]
"""

# Ignored: *.log but keep.log, a directory, a nested pattern.
DOCKERIGNORE = "*.log\n!keep.log\nsecret/\n**/*.tmp\n"
IGNORING = """\
FROM busybox
COPY . /ctx/
"""

# buildah 1.28's Dockerfile parser (openshift/imagebuilder) has no heredocs: `RUN <<EOT` fails
# there with `Unknown instruction: "ECHO"`. Ours is checked against buildah building the same
# steps written without heredocs: the results must be equal.
HEREDOC = """\
FROM busybox
RUN <<EOT
echo one > /one.txt
mkdir -p /h && echo two > /h/two.txt
EOT
COPY <<EOF /h/inline.txt
inline content
EOF
"""
HEREDOC_EQUIVALENT = """\
FROM busybox
RUN echo one > /one.txt; mkdir -p /h && echo two > /h/two.txt
COPY inline.txt /h/inline.txt
"""

# The differences between the two builders' results, each with its reason; an image with a RUN
# step in its history has RUN_DIFFERENCES too. Configs do not differ: buildah's identity label
# (io.buildah.version) is switched off (tests/buildah.py BUD_FLAGS), and an empty field and an
# absent one count as the same (tests/buildah.py diff_configs).
FILESYSTEM_DIFFERENCES: dict[str, str] = {}
RUN_DIFFERENCES: dict[str, str] = {
    "/run: only buildah's (Entry(kind='dir', mode=493, uid=0, gid=0, size=0, sha256='', link=''))":
        "buildah makes /run in the rootfs as the mount point of its RUN steps' /run (.containerenv, "
        "secrets) and leaves it in the layer; buildkit, and we, remove mount points the image did not have",
}
CONFIG_DIFFERENCES: dict[str, str] = {}


@dataclass
class Rig:
    cli: BuildCLI
    buildah: Buildah
    tmp: Path

    def ours(self, ctx: Path, *args: str) -> tuple[Built, Image]:
        built = self.cli.build(ctx, *args)
        manifest = json.loads(self.cli.blob(built.manifest_digest))
        return built, read_image(manifest, self.cli.blob)

    def both(self, ctx: Path, *args: str, tag: str) -> tuple[Image, Image]:
        _, ours = self.ours(ctx, "-t", tag, *args)
        self.buildah.bud(ctx, "-t", tag, *args)
        return ours, self.buildah.export(tag)

    def context(self, name: str, dockerfile: str, files: dict[str, bytes | str] | None = None) -> Path:
        ctx = self.tmp / name
        ctx.mkdir()
        write_tree(ctx, {"Dockerfile": dockerfile, **(files or {})})
        return ctx


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="dy-vsbuildah-") as tmp, stopping_new_zygotes(), \
            Buildah.private() as buildah:
        archive = Path(tmp) / "busybox.tar"
        archive.write_bytes(busybox_oci_archive())  # docker.io/library/busybox:latest for both
        buildah.load_oci_archive(archive)
        d: DaemonProcess = start_daemon()
        try:
            cli = BuildCLI(d.address)
            cli.ok("images", "import", "--unpack", str(archive))
            yield Rig(cli, buildah, Path(tmp))
        finally:
            remove_base(d)


def assert_same(ours: Image, theirs: Image, *, runs: bool = True) -> None:
    """The two images are equal but for the differences listed above (`runs`: RUN_DIFFERENCES too)."""
    assert ours.files, "our image has no files"
    fs = diff_files(ours.files, theirs.files)
    cfg = diff_configs(ours.config, theirs.config)
    expected = {**FILESYSTEM_DIFFERENCES, **(RUN_DIFFERENCES if runs else {})}
    assert sorted(fs) == sorted(expected), "filesystems differ:\n" + "\n".join(fs)
    assert sorted(cfg) == sorted(CONFIG_DIFFERENCES), "configs differ:\n" + "\n".join(cfg)


def _tar(entries: list[tuple[str, bytes | None, int, int, int]]) -> bytes:
    """name, content (None: a directory), mode, uid, gid."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, mode, uid, gid in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1_600_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg/link")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "data.bin", 1_600_000_000
        tf.addfile(link)
    return buf.getvalue()


INSTRUCTION_FILES: dict[str, bytes | str] = {
    "a.txt": "A\n", "b.txt": "B\n", "plain.txt": "plain, not extracted\n",
    "dir/f": "F\n", "dir/sub/g": "G\n", "run.sh": "#!/bin/sh\necho run\n",
    "archive.tar": _tar([("pkg", None, 0o750, 0, 0), ("pkg/data.bin", b"\x00\x01data", 0o600, 1234, 5678),
                         ("pkg/bin", None, 0o755, 0, 0), ("pkg/bin/tool", b"#!/bin/sh\n", 0o755, 0, 0)]),
}


def test_every_instruction_with_build_args(rig: Rig) -> None:
    ctx = rig.context("instructions", INSTRUCTIONS, INSTRUCTION_FILES)
    os.chmod(ctx / "run.sh", 0o755)
    ours, theirs = rig.both(ctx, "--build-arg", "VERSION=2", "--build-arg", "UNSET=set", tag="diff-all:1")
    assert ours.files["/app/shell.txt"].size == len("hello world 2 [set]\n")
    assert ours.files["/app/unpacked/pkg/data.bin"].uid == 1234
    # RUN's process has its primary group among its supplementary groups, as buildah's and
    # containerd's (WithAdditionalGIDs) have
    assert ours.files["/tmp/id.txt"].size == len("uid=1000(user) gid=1000(user) groups=1000(user)\n")
    assert ours.config["Labels"]["org.example.version"] == "2"
    assert ours.config["OnBuild"] == ["RUN echo triggered > /tmp/onbuild.txt", "LABEL triggered=yes"]
    assert_same(ours, theirs)


def test_onbuild_triggers_in_a_child_build(rig: Rig) -> None:
    parent = rig.context("onbuild-parent", "FROM busybox\nONBUILD RUN echo triggered > /onbuild.txt\n"
                                           "ONBUILD COPY child.txt /from-child/\nONBUILD ENV FROM_PARENT=1\n")
    rig.both(parent, tag="docker.io/library/diff-parent:latest")
    child = rig.context("onbuild-child", "FROM diff-parent\nRUN cat /onbuild.txt > /seen.txt\n",
                        {"child.txt": "child\n"})
    ours, theirs = rig.both(child, tag="diff-child:1")
    assert "/onbuild.txt" in ours.files and "/from-child/child.txt" in ours.files
    assert not ours.config.get("OnBuild"), "triggers are not inherited by the child's children"
    assert_same(ours, theirs)


def test_shell_forms(rig: Rig) -> None:
    ours, theirs = rig.both(rig.context("shell-forms", SHELL_FORMS), tag="diff-shell:1")
    assert ours.config["Entrypoint"] == ["/bin/sh", "-c", "echo hello $WHO"]
    assert_same(ours, theirs, runs=False)


@pytest.mark.parametrize("target", ["", "test", "build"])
def test_multi_stage(rig: Rig, target: str) -> None:
    ctx = rig.context(f"multi-{target or 'last'}", MULTI_STAGE, {"a.txt": "A\n"})
    args = ("--target", target) if target else ()
    ours, theirs = rig.both(ctx, *args, tag=f"diff-multi:{target or 'last'}")
    if not target:
        assert ours.files["/srv/artifact"].size == len("built\n") and "/out" not in ours.files
    assert_same(ours, theirs, runs=bool(target))


@pytest.mark.parametrize("build_files", [False, True])
def test_dockerignore(rig: Rig, build_files: bool) -> None:
    """With `build_files` the .dockerignore leaves out the Dockerfile and itself: both still
    reach the builder, and COPY copies neither (docker's and buildah's rule)."""
    ignore = DOCKERIGNORE + ("Dockerfile\n.dockerignore\n" if build_files else "")
    ctx = rig.context(f"ignoring-{build_files}", IGNORING, {
        ".dockerignore": ignore, "app.txt": "app\n", "debug.log": "no\n", "keep.log": "yes\n",
        "secret/key": "no\n", "src/x.tmp": "no\n", "src/deep/y.tmp": "no\n", "src/main.c": "int main;\n"})
    ours, theirs = rig.both(ctx, tag=f"diff-ignore:{int(build_files)}")
    assert_same(ours, theirs, runs=False)
    build = [] if build_files else ["/ctx/.dockerignore", "/ctx/Dockerfile"]
    assert sorted(p for p in ours.files if p.startswith("/ctx/")) == sorted([
        *build, "/ctx/app.txt", "/ctx/keep.log", "/ctx/src", "/ctx/src/deep", "/ctx/src/main.c"])


def test_heredoc_matches_buildah_without_heredocs(rig: Rig) -> None:
    ctx = rig.context("heredoc", HEREDOC)
    _, ours = rig.ours(ctx, "-t", "diff-heredoc:1")
    plain = rig.context("heredoc-equivalent", HEREDOC_EQUIVALENT, {"inline.txt": "inline content\n"})
    rig.buildah.bud(plain, "-t", "diff-heredoc:1")
    assert_same(ours, rig.buildah.export("diff-heredoc:1"))


def test_cache_rebuild_and_change(rig: Rig) -> None:
    """A rebuild without changes is all cache hits and the same layers and config on both sides
    (a new manifest digest on both: the config's `created` is the rebuild's time, with buildah
    --layers too; SOURCE_DATE_EPOCH makes it fixed, test_build_reproducible.py); after one copied
    file changes both rebuild from that step and agree again."""
    dockerfile = ("FROM busybox\nCOPY one.txt /one/\nRUN echo step > /step.txt\nCOPY two.txt /two/\n"
                  "RUN cat /one/one.txt /two/two.txt > /both.txt\n")
    ctx = rig.context("cache", dockerfile, {"one.txt": "1\n", "two.txt": "2\n"})
    _, ours = rig.ours(ctx, "-t", "diff-cache:1")
    their_id = rig.buildah.bud(ctx, "-t", "diff-cache:1")
    theirs = rig.buildah.export("diff-cache:1")
    assert_same(ours, theirs)

    again, rebuilt = rig.ours(ctx, "-t", "diff-cache:1")
    assert all(again.cached(p) for p in ("COPY one.txt", "RUN echo", "COPY two.txt", "RUN cat"))
    assert rebuilt.manifest["layers"] == ours.manifest["layers"] and rebuilt.config == ours.config
    assert rig.buildah.bud(ctx, "-t", "diff-cache:1") != their_id
    theirs_again = rig.buildah.export("diff-cache:1")
    # (buildah's push compresses its layers anew: compare what they hold)
    assert theirs_again.files == theirs.files and not diff_configs(theirs_again.config, theirs.config)

    (ctx / "two.txt").write_text("two\n")
    changed, ours = rig.ours(ctx, "-t", "diff-cache:2")
    assert changed.cached("COPY one.txt") and changed.cached("RUN echo")
    assert not changed.cached("COPY two.txt") and not changed.cached("RUN cat")
    assert rig.buildah.bud(ctx, "-t", "diff-cache:2") != their_id
    assert_same(ours, rig.buildah.export("diff-cache:2"))
    assert ours.files["/both.txt"].size == len("1\ntwo\n")
