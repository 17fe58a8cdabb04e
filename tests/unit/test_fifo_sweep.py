"""FIFO dirs of dock processes that died without removing them (SIGKILL) are swept by the next
dock that makes one (dock/stdio.py); live owners', other pid namespaces' and other names stay."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dock.stdio import FIFO_PREFIX, make_fifo_dir, sweep_fifo_dirs


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid  # reaped: no such process (unless reused at once, which the test tolerates below)


def test_orphans_of_dead_docks_are_swept(tmp_path: Path) -> None:
    pidns = os.stat("/proc/self/ns/pid").st_ino
    pid = dead_pid()
    orphan = tmp_path / f"{FIFO_PREFIX}{pidns}-{pid}-abc123"
    orphan.mkdir()
    os.mkfifo(orphan / "c-stdout")
    live = tmp_path / f"{FIFO_PREFIX}{pidns}-{os.getpid()}-def456"
    foreign_ns = tmp_path / f"{FIFO_PREFIX}1-{pid}-ghi789"  # a dock in another pid namespace
    legacy = tmp_path / f"{FIFO_PREFIX}xyz"  # made before owners were named
    not_ours = tmp_path / "other-dir"
    for d in (live, foreign_ns, legacy, not_ours):
        d.mkdir()
    a_file = tmp_path / f"{FIFO_PREFIX}{pidns}-{pid}-file"
    a_file.write_text("not a dir")

    made = make_fifo_dir(str(tmp_path))

    assert made.name.startswith(f"{FIFO_PREFIX}{pidns}-{os.getpid()}-") and made.is_dir()
    reused = os.path.exists(f"/proc/{pid}")
    assert orphan.exists() is reused
    for d in (live, foreign_ns, legacy, not_ours, a_file, made):
        assert d.exists(), d
    assert sweep_fifo_dirs(str(tmp_path)) == []  # nothing more to sweep


def test_a_missing_temp_dir_is_no_error(tmp_path: Path) -> None:
    assert sweep_fifo_dirs(str(tmp_path / "gone")) == []
