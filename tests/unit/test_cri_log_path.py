"""The CRI's log file (kubelet names it): the `dockyard.log.path` label through the daemon's
LogStore into log.json, and the shim's writer putting the log at that name, two to a directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard_common import containerlog as cl
from dockyard_common.errors import FailedPrecondition, InvalidArgument
from shim.logfile import LogConfig, LogWriter
from supervisor.logs import LogDefaults, LogStore
from supervisor.logs.store import UNROTATED


def test_the_label_names_the_file_and_turns_rotation_off(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs", LogDefaults(max_size=1000, max_file=3))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    target = tmp_path / "pods" / "p1" / "app" / "0.log"
    store.prepare(bundle, "k8s.io", "c1", {cl.LABEL_DRIVER: cl.DRIVER, cl.LABEL_PATH: str(target)})
    written = json.loads((bundle / cl.CONFIG_FILE).read_text())
    assert written == {"path": str(target.parent), "file": "0.log", "max_size": UNROTATED, "max_file": 1}
    assert target.parent.is_dir() and not (tmp_path / "logs" / "k8s.io" / "c1").exists()
    config = LogConfig.from_bundle(str(bundle))
    assert config == LogConfig(str(target.parent), UNROTATED, 1, "0.log")
    for bad in ("relative.log", "/dir/", "/dir/.."):
        with pytest.raises(InvalidArgument, match=cl.LABEL_PATH):
            store.prepare(bundle, "k8s.io", "c1", {cl.LABEL_DRIVER: cl.DRIVER, cl.LABEL_PATH: bad})


def test_two_logs_share_a_directory_each_with_its_lock(tmp_path: Path) -> None:
    a = LogWriter(LogConfig(str(tmp_path), 100, 2, "a.log"))
    b = LogWriter(LogConfig(str(tmp_path), 100, 2, "b.log"))
    try:
        a.write(b"x" * 60 + b"\n")
        a.write(b"y" * 60 + b"\n")  # past max_size: a.log → a.log.1
        b.write(b"z\n")
        with pytest.raises(FailedPrecondition):  # a second writer of the same file is refused
            LogWriter(LogConfig(str(tmp_path), 100, 2, "a.log"))
    finally:
        a.close()
        b.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.log.lock", ".b.log.lock", "a.log", "a.log.1", "b.log"]
    assert (tmp_path / "a.log.1").read_bytes() == b"x" * 60 + b"\n" and (tmp_path / "b.log").read_bytes() == b"z\n"
    with pytest.raises(InvalidArgument):
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        (bundle / cl.CONFIG_FILE).write_text(json.dumps({"path": str(tmp_path), "file": "../x", "max_size": 1,
                                                         "max_file": 1}))
        LogConfig.from_bundle(str(bundle))
