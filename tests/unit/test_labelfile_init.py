"""dock/labelfile.py: Docker's --label-file parsed, and merged with --label; and --init's spec change
(dock/runflags.py: find_init, with_init)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dock import kvfile, labelfile, runflags
from dock.runflags import INIT_IN_CONTAINER, INIT_PATH_ENV, RunFlags
from dockyard_common.errors import InvalidArgument
from dockyard_common.ocispec import default_spec


def test_lines_comments_blank_lines_and_bare_keys(tmp_path: Path) -> None:
    f = tmp_path / "labels"
    f.write_bytes("\ufeff# a comment\n\n   \n  app=web\ntier\nempty=\nurl=a=b \"q\" \n  # indented comment\n"
                  "crlf=1\r\nlast=wins\nlast=two".encode())
    assert labelfile.parse_label_file(str(f)) == {
        "app": "web", "tier": "", "empty": "", "url": 'a=b "q" ', "crlf": "1", "last": "two"}


def test_a_lone_carriage_return_is_not_a_line_break(tmp_path: Path) -> None:
    f = tmp_path / "labels"
    f.write_bytes(b"a=1\rb=2\n")  # as Go's line scanner: one line, its value holds the \r
    assert labelfile.parse_label_file(str(f)) == {"a": "1\rb=2"}


@pytest.mark.parametrize(("content", "words"), [
    (b"ok=1\n=value\n", "line 2"),
    (b"  =x\n", "line 1"),
    (b"a b=1\n", "line 1"),
    (b"a\tb\n", "line 1"),
    (b"a=\0\n", "NUL"),
    (b"a=\xff\n", "not UTF-8"),
])
def test_bad_lines(tmp_path: Path, content: bytes, words: str) -> None:
    f = tmp_path / "labels"
    f.write_bytes(content)
    with pytest.raises(InvalidArgument, match=words) as exc:
        labelfile.parse_label_file(str(f))
    assert str(f) in str(exc.value)


def test_files_that_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="No such file"):
        labelfile.parse_label_file(str(tmp_path / "missing"))
    with pytest.raises(InvalidArgument, match="Is a directory"):
        labelfile.parse_label_file(str(tmp_path))
    big = tmp_path / "big"
    big.write_bytes(b"a=" + b"x" * kvfile.MAX_BYTES)
    with pytest.raises(InvalidArgument, match="larger than 1 MiB"):
        labelfile.parse_label_file(str(big))


def test_label_flags_win_over_files_and_later_files_over_earlier(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text("a=one\nb=one\nc=one\n")
    two.write_text("b=two\nc=two\n")
    assert labelfile.labels([str(one), str(two)], ["c=flag", "d"]) == {"a": "one", "b": "two", "c": "flag", "d": ""}
    assert labelfile.labels([], []) == {}
    with pytest.raises(InvalidArgument, match="want KEY=VALUE"):
        labelfile.labels([], ["=x"])


# -- --init ---------------------------------------------------------------------------------------------------


def test_find_init(tmp_path: Path) -> None:
    tini = tmp_path / "tini"
    tini.write_bytes(b"")
    with pytest.raises(InvalidArgument, match="no init binary"):  # not executable
        runflags.find_init({INIT_PATH_ENV: str(tini)})
    tini.chmod(0o755)
    assert runflags.find_init({INIT_PATH_ENV: str(tini)}) == str(tini)
    for missing in (tmp_path / "nope", tmp_path):  # missing, a directory
        with pytest.raises(InvalidArgument, match=f"no init binary at {missing}"):
            runflags.find_init({INIT_PATH_ENV: str(missing)})
    if os.access(runflags.INIT_BINARY, os.X_OK):  # Debian's tini (scripts/install) is the default
        assert runflags.find_init({}) == runflags.INIT_BINARY


def test_with_init() -> None:
    spec = default_spec("default", "c")
    spec["process"]["args"] = ["sh", "-c", "exit 3"]
    runflags.apply(spec, RunFlags(init="/usr/bin/tini-static"))
    assert spec["process"]["args"] == [INIT_IN_CONTAINER, "--", "sh", "-c", "exit 3"]
    assert spec["mounts"][-1] == {"destination": INIT_IN_CONTAINER, "type": "bind",
                                  "source": "/usr/bin/tini-static", "options": ["bind", "ro"]}
    dev = [m["destination"] for m in spec["mounts"]].index("/dev")
    assert dev < len(spec["mounts"]) - 1  # after the runtime's /dev tmpfs, where its mount point is made
    host_pid = default_spec("default", "c")
    host_pid["process"]["args"] = ["true"]
    runflags.apply(host_pid, RunFlags(init="/tini", pid="host"))
    assert host_pid["process"]["args"] == [INIT_IN_CONTAINER, "-s", "--", "true"]  # not PID 1: a subreaper
    untouched = default_spec("default", "c")
    runflags.apply(untouched, RunFlags())
    assert untouched == default_spec("default", "c")


@pytest.mark.parametrize("mount", [
    {"destination": "/dev", "type": "bind", "source": "/srv/dev", "options": ["rbind"]},
    {"destination": "/dev/init/", "type": "bind", "source": "/x", "options": ["rbind"]},
    {"destination": "/dev/init", "type": "tmpfs", "source": "tmpfs", "options": []},
])
def test_with_init_refuses_what_takes_its_place(mount: dict[str, object]) -> None:
    spec = default_spec("default", "c")
    spec["mounts"].append(mount)
    with pytest.raises(InvalidArgument, match="no place for /dev/init"):
        runflags.with_init(spec, "/tini")
    spec = default_spec("default", "c")
    spec["linux"]["devices"] = [{"path": INIT_IN_CONTAINER, "type": "c", "major": 1, "minor": 3}]
    with pytest.raises(InvalidArgument, match="device at /dev/init"):
        runflags.with_init(spec, "/tini")
