"""Hostile inputs to the build, commit and Diff paths, judged without a daemon: a base image's
ONBUILD triggers (supervisor/build/dockerfile.py), stage chains deeper than Python's recursion
(stages.py), `dock commit --change` values no run can take (commit_changes.py), base configs
that hold text no UTF-8 writer takes or would grow past what Dockyard reads back
(imagewrite.py), a tree holding `.wh.*` names of its own and mounts outside the snapshotters'
directories (supervisor/differ.py). The daemon-level counterparts are in
tests/integration/test_build_onbuild_hostile.py, test_commit_hostile.py, test_diff_confined.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.imagespec import MAX_DOCUMENT_SIZE, ImageConfig, Manifest
from dockyard_common.types import Mount
from supervisor.archive.diff import write_diff
from supervisor.build.commit_changes import apply_changes
from supervisor.build.dockerfile import MAX_TRIGGERS, DockerfileError, parse_dockerfile, parse_triggers
from supervisor.build.imagewrite import BaseImage, check_base, check_config
from supervisor.build.stages import plan_build
from supervisor.differ import Differ
from tests.daemon import REPO

# -- ONBUILD triggers from a base image ------------------------------------------------------------


def test_a_trigger_that_is_not_unicode_is_refused_and_does_not_crash_the_process() -> None:
    """A JSON `\\udcff` escape decodes to a lone surrogate; handed to the Go parser it crashed the
    whole process (SIGSEGV in the wrapper): run in a child, so the old code's crash is a failure."""
    code = ("from supervisor.build.dockerfile import parse_triggers\n"
            "try:\n    parse_triggers(['LABEL \\udcff=1'], line=4)\n"
            "except Exception as e:\n    print(type(e).__name__, e.message)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.startswith("DockerfileError Dockerfile:4: ONBUILD trigger 'LABEL \\udcff=1' of the base "
                                 "image: not valid Unicode text"), res.stdout


@pytest.mark.parametrize(("triggers", "words"), [
    (["RUN echo visible\0; touch /smuggled"], "contains a NUL byte"),  # the Go parser stopped at the NUL
    (["RUN echo one\nRUN echo two"], "a trigger must be one instruction, not 2"),
    ([""], "file with no instructions"),
    (["# only a comment"], "file with no instructions"),
    (["ONBUILD RUN x"], "ONBUILD isn't allowed as an ONBUILD trigger"),
    (["FROM busybox"], "FROM isn't allowed as an ONBUILD trigger"),
    (["MAINTAINER me"], "MAINTAINER isn't allowed as an ONBUILD trigger"),
    ([1], "ONBUILD trigger 0 of the base image is not a string"),
    ("RUN true", "OnBuild must be an array of strings"),
    (["RUN true"] * (MAX_TRIGGERS + 1), f"has {MAX_TRIGGERS + 1} ONBUILD triggers, more than the {MAX_TRIGGERS}"),
], ids=["nul", "two-instructions", "empty", "comment", "onbuild", "from", "maintainer", "not-a-string",
        "a-string", "too-many"])
def test_bad_triggers_are_refused_in_words(triggers: Any, words: str) -> None:
    with pytest.raises(DockerfileError) as err:
        parse_triggers(triggers, line=7)
    assert err.value.message.startswith("Dockerfile:7: ") and words in err.value.message, err.value.message


def test_a_huge_trigger_is_quoted_shortly() -> None:
    with pytest.raises(DockerfileError) as err:
        parse_triggers(["RUN echo " + "x" * (4 << 20)], line=1)
    assert len(err.value.message) < 1000 and "(4194313 characters)" in err.value.message, err.value.message[:2000]
    with pytest.raises(DockerfileError) as err:
        parse_triggers(["X" * 100_000], line=1)  # the parser's own message repeats the word
    assert len(err.value.message) < 1000, len(err.value.message)


def test_good_triggers_still_parse() -> None:
    triggers = parse_triggers(["RUN <<EOF\necho from-heredoc\nEOF", "COPY --from=build /a /b",
                               "# escape=`\nRUN echo hi"] + ["LABEL a=1"] * (MAX_TRIGGERS - 3), line=2)
    assert [t.name for t in triggers[:3]] == ["RUN", "COPY", "RUN"] and len(triggers) == MAX_TRIGGERS
    assert triggers[0].heredocs[0].content == "echo from-heredoc\n" and all(t.line == 2 for t in triggers)


def test_a_chain_of_thousands_of_stages_plans() -> None:
    """FROM s0 AS s1, FROM s1 AS s2, ...: the plan walked them recursively (RecursionError, an
    internal error through the RPC)."""
    n = 3000
    text = "FROM busybox AS s0\n" + "".join(f"FROM s{i} AS s{i + 1}\n" for i in range(n))
    plan = plan_build(parse_dockerfile(text))
    assert list(plan.order) == list(range(n + 1))
    with pytest.raises(DockerfileError, match=r"circular dependency detected on stage: y \(y -> x -> y\)"):
        plan_build(parse_dockerfile("FROM a AS x\nCOPY --from=y / /\nFROM b AS y\nCOPY --from=x / /\n"))


# -- commit --change and the base config ------------------------------------------------------------


@pytest.mark.parametrize(("changes", "words"), [
    (["ENV A=b\0c"], "change 1 contains a NUL byte"),
    (["CMD [\"true\"]", "LABEL a\0=1"], "change 2 contains a NUL byte"),
    (["WORKDIR /a\0b"], "contains a NUL byte"),
    (["VOLUME /"], "the container's root / cannot be a volume"),
    (['VOLUME ["/proc/sys"]'], "/proc cannot be a volume"),
    (["VOLUME data"], "is not an absolute path"),
])
def test_changes_no_run_could_take_are_refused(changes: list[str], words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        apply_changes(changes, {"Env": ["PATH=/bin"]})
    assert words in err.value.message, err.value.message


def _base(config: dict[str, Any]) -> BaseImage:
    # Made without the loader, which reads a lone surrogate as U+FFFD (Go's JSON): check_base's
    # own check, for a config that came another way, is what is tested here.
    raw = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "config": config}
    return BaseImage(cast(Manifest, None), ImageConfig("linux", "amd64", "", [], config, raw))


@pytest.mark.parametrize(("config", "field"), [
    ({"Env": ["PATH=/bin", "A=\ud800"]}, "config.Env[1]"),
    ({"Labels": {"a": "\udcff"}}, "config.Labels.a"),
    ({"Labels": {"\udcff": "a"}}, "config.Labels key '\\udcff'"),
    ({"OnBuild": ["RUN echo \udcff"]}, "config.OnBuild[0]"),
])
def test_a_base_config_that_is_not_unicode_is_refused_naming_the_field(config: dict[str, Any], field: str) -> None:
    base = _base(config)
    with pytest.raises(InvalidArgument) as err:
        check_base(base, "image 'x:1'")
    assert err.value.message.startswith(f"image 'x:1': config field {field} is not valid Unicode"), err.value.message
    with pytest.raises(InvalidArgument, match="is not valid Unicode"):
        check_config(base, {"Env": ["A=\udc80"]})
    check_base(_base({"Env": ["A=ünïcødé"], "Labels": {"k": "\u2603"}}), "fine")  # valid text passes


def test_a_config_larger_than_dockyard_reads_back_is_refused() -> None:
    base = _base({"Env": ["PATH=/bin"]})
    check_config(base, {"Labels": {"a": "x" * (MAX_DOCUMENT_SIZE - 1000)}})
    with pytest.raises(InvalidArgument, match=f"more than the limit of {MAX_DOCUMENT_SIZE}"):
        check_config(base, {"Labels": {"a": "x" * MAX_DOCUMENT_SIZE}})


# -- layers: names a tree holds that are whiteouts in a layer ---------------------------------------


def _diff(lower: Path, upper: Path) -> bytes:
    out = io.BytesIO()
    write_diff(lower, upper, out, whiteout_mtime=1)
    return out.getvalue()


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for root in (lower, upper):
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "sh").write_bytes(b"#!sh\n")
    (lower / "deleted").write_bytes(b"gone\n")
    deep = "d" * 150 + "/" + "e" * 150 + "/ü" * 3  # names past ustar's fields: PAX path records
    (upper / deep).mkdir(parents=True)
    (upper / deep / "big").write_bytes(os.urandom(70_000))
    (upper / deep / "small").write_bytes(b"x" * 511)
    os.symlink("/" + "t" * 300, upper / "long-link")  # a PAX linkpath record
    os.link(upper / deep / "small", upper / "hard")  # a hard link entry after the file
    os.mkfifo(upper / "fifo")
    (upper / "after").write_bytes(b"y" * 1025)
    return lower, upper


@pytest.mark.parametrize("name", [".wh.bin", "bin/.wh.sh", ".wh..wh..opq", "bin/.wh..wh..opq", ".wh.",
                                  ".wh.nothing", "d" * 150 + "/" + "e" * 150 + "/ü/ü/ü/.wh.big", ".wh.dir/",
                                  "zz/.wh.after-everything", ".wh.dir/inside"])
def test_a_tree_holding_whiteout_names_is_refused(tmp_path: Path, name: str) -> None:
    lower, upper = _trees(tmp_path)
    (upper / name).parent.mkdir(parents=True, exist_ok=True)
    if name.endswith("/"):
        (upper / name).mkdir()
    else:
        (upper / name).write_bytes(b"the container's own file\n")
    with pytest.raises(FailedPrecondition) as err:
        _diff(lower, upper)
    shown = "/" + (name.split("/")[0] if name.startswith(".wh.dir") else name.rstrip("/"))
    assert f"the tree holds {shown!r}" in err.value.message or "characters)" in err.value.message, err.value.message
    assert "reserve for whiteouts" in err.value.message


def test_real_whiteouts_pass_and_the_bytes_are_unchanged(tmp_path: Path) -> None:
    lower, upper = _trees(tmp_path)
    (upper / "bin" / "wh.not-a-whiteout").write_bytes(b"fine\n")
    (upper / "bin" / "x.wh.y").write_bytes(b"fine\n")
    plain = _diff(lower, upper)
    assert b".wh.deleted" in plain  # the deletion's whiteout is there
    assert b"wh.not-a-whiteout" in plain and b"x.wh.y" in plain


# -- Diff.Apply / Diff.Diff mounts ---------------------------------------------------------------------


@pytest.fixture
def differ(tmp_path: Path) -> Differ:
    for sid in ("1", "2"):
        (tmp_path / "root/snapshots/overlayfs/snapshots" / sid / "fs").mkdir(parents=True)
        (tmp_path / "root/snapshots/overlayfs/snapshots" / sid / "work").mkdir()
    (tmp_path / "root/snapshots/native/snapshots/3/fs").mkdir(parents=True)
    (tmp_path / "outside/9/fs").mkdir(parents=True)
    (tmp_path / "outside/9/work").mkdir(parents=True)
    (tmp_path / "root/snapshots/overlayfs/snapshots/2/fs/inner").mkdir()
    os.symlink(tmp_path / "root/snapshots/overlayfs/snapshots", tmp_path / "link")
    return Differ(cast(Any, None), tmp_path / "root" / "tmp")


def _overlay(base: Path, upper: str = "2", lowers: str = "1", extra: tuple[str, ...] = ()) -> list[Mount]:
    s = f"{base}/root/snapshots/overlayfs/snapshots"
    return [Mount("overlay", "overlay", "", ["index=off", f"workdir={s}/{upper}/work", f"upperdir={s}/{upper}/fs",
                                             f"lowerdir={s}/{lowers}/fs", *extra])]


def test_the_snapshotters_mounts_are_taken(differ: Differ, tmp_path: Path) -> None:
    s = tmp_path / "root/snapshots"
    differ.check_mounts(_overlay(tmp_path), "apply")
    differ.check_mounts(_overlay(tmp_path, extra=("uidmap=0:1000:65536", "gidmap=0:1000:65536", "ro")), "apply")
    differ.check_mounts([Mount("bind", f"{s}/overlayfs/snapshots/1/fs", "", ["rw", "rbind"])], "apply")
    differ.check_mounts([Mount("bind", f"{s}/native/snapshots/3/fs", "", ["ro", "rbind"])], "diff")
    differ.check_mounts([Mount("overlay", "overlay", "", [f"lowerdir={s}/overlayfs/snapshots/2/fs:"
                                                          f"{s}/overlayfs/snapshots/1/fs"])], "diff")
    differ.check_mounts([], "diff: lower")


@pytest.mark.parametrize(("mounts", "words"), [
    (lambda t: _overlay(t, extra=(f"upperdir={t}/outside/9/fs",)), "overlay upperdir"),
    (lambda t: _overlay(t, extra=(f"workdir={t}/outside/9/work",)), "overlay workdir"),
    (lambda t: _overlay(t, extra=(f"lowerdir={t}/outside/9/fs",)), "overlay lowerdir"),
    (lambda t: _overlay(t, extra=(f"index=off,upperdir={t}/outside/9/fs",)), "are not allowed"),
    (lambda t: _overlay(t, extra=(f"lowerdir+={t}/outside/9/fs",)), "is not one a snapshot's mount carries"),
    (lambda t: _overlay(t, extra=("bind",)), "is not one a snapshot's mount carries"),
    (lambda t: [Mount("bind", f"{t}/outside/9/fs", "", ["rbind", "rw"])], "bind source"),
    (lambda t: [Mount("bind", f"{t}/root/snapshots/overlayfs/snapshots/2/fs/inner", "", ["rbind"])], "bind source"),
    (lambda t: [Mount("bind", f"{t}/root/snapshots/overlayfs/snapshots/2/fs/../../../../../../outside/9/fs", "",
                      ["rbind"])], "bind source"),
    (lambda t: [Mount("bind", f"{t}/link/1/fs", "", ["rbind"])], "bind source"),  # a caller's symlink
    (lambda t: [Mount("bind", f"{t}/root/snapshots/overlayfs/snapshots/1/work", "", ["rbind"])], "bind source"),
    (lambda t: [Mount("bind", "relative/1/fs", "", ["rbind"])], "is not an absolute path"),
    (lambda t: [Mount("tmpfs", "tmpfs", "", [])], "mount type 'tmpfs'"),
    (lambda t: [Mount("nosuchfs", "x", "", [])], "mount type 'nosuchfs'"),
    (lambda t: _overlay(t) * 2, "2 mounts"),
    (lambda t: [Mount("bind", f"{t}/root/snapshots/native/snapshots/3/fs", "sub", ["rbind"])], "a mount target"),
    (lambda t: [Mount("overlay", "overlay", "", ["index=off"])], "needs a lowerdir"),
], ids=["upper-out", "work-out", "lower-out", "comma", "lowerdir-plus", "overlay-bind", "bind-out", "bind-inner",
        "bind-dotdot", "bind-symlink", "bind-work", "relative", "tmpfs", "unknown-type", "two", "target",
        "no-lowerdir"])
def test_mounts_elsewhere_are_invalid_arguments(differ: Differ, tmp_path: Path, mounts: Any, words: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        differ.check_mounts(mounts(tmp_path), "apply: mounts")
    assert err.value.message.startswith("apply: mounts: ") and words in err.value.message, err.value.message


def test_a_missing_directory_is_not_found_and_messages_are_short(differ: Differ, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        differ.check_mounts([Mount("bind", "/nonexistent-dy", "", ["rbind"])], "diff")
    with pytest.raises(NotFound) as missing:
        differ.check_mounts([Mount("bind", "/" + "x/" * 50_000, "", ["rbind"])], "diff")
    with pytest.raises(InvalidArgument) as err:
        differ.check_mounts([Mount("bind", f"{tmp_path}/outside/9/fs", "", ["x" * 100_000])], "diff")
    assert len(missing.value.message) < 1000 and len(err.value.message) < 1000
