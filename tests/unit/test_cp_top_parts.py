"""The pure parts of dock cp / dock top (issue 15): names, ps output, and the applier's plain-tar mode."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from dock.commands.cp import split_ref
from dock.localtar import renamed
from dockyard_common.errors import InvalidArgument
from supervisor.archive.apply import apply_layer
from supervisor.runtime.top import parse_ps


def test_split_ref_reads_container_paths_as_docker_does() -> None:
    assert split_ref("web:/etc/hosts") == ("web", "/etc/hosts")
    assert split_ref("web:") == ("web", "")
    assert split_ref("-") is None
    assert split_ref("./a:b") is None  # a local path with a colon
    assert split_ref("/tmp/a:b") is None
    assert split_ref("plainfile") is None


def test_renamed_moves_the_top_entry() -> None:
    assert renamed("etc", ("etc", "x")) == "x"
    assert renamed("etc/passwd", ("etc", "x")) == "x/passwd"
    assert renamed("./a/b", (".", ".")) == "a/b"
    assert renamed(".", (".", "new")) == "new"
    assert renamed("./a", (".", "new")) == "new/a"
    assert renamed("f", None) == "f"
    with pytest.raises(InvalidArgument):
        renamed("other/x", ("etc", "x"))


PS = """UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init splash
root         100       1  0 10:01 ?        00:00:00 sleep 600
nobody       200     100  0 10:02 pts/0    00:00:00 sh -c echo   a b
"""


def test_parse_ps_keeps_the_rows_of_the_pids_and_the_spaces_of_cmd() -> None:
    titles, rows = parse_ps(PS, {100, 200})
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert rows == [["root", "100", "1", "0", "10:01", "?", "00:00:00", "sleep 600"],
                    ["nobody", "200", "100", "0", "10:02", "pts/0", "00:00:00", "sh -c echo a b"]]
    with pytest.raises(InvalidArgument, match="PID"):
        parse_ps("COMMAND\nsleep\n", {1})


def _tar(*files: tuple[str, bytes, int]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data, uid in files:
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode = len(data), uid, uid, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.skipif(os.geteuid() != 0, reason="the applier sets owners: needs root")
def test_plain_mode_copies_whiteout_names_and_owner_overrides(tmp_path: Path) -> None:
    (tmp_path / "kept").write_text("still here\n")
    tar = _tar((".wh.kept", b"just a file\n", 1234), ("new", b"n\n", 1234))
    apply_layer(io.BytesIO(tar), tmp_path, whiteout_mode="none", owner=(7, 8))
    assert (tmp_path / "kept").read_text() == "still here\n"
    assert (tmp_path / ".wh.kept").read_text() == "just a file\n"
    assert {(os.stat(tmp_path / n).st_uid, os.stat(tmp_path / n).st_gid) for n in (".wh.kept", "new")} == {(7, 8)}
    apply_layer(io.BytesIO(_tar(("kept-owner", b"k\n", 1234))), tmp_path, whiteout_mode="none")
    assert os.stat(tmp_path / "kept-owner").st_uid == 1234
