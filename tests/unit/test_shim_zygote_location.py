"""Where a shim's zygote listens: in the runtime state dir its bundle lives in, never host-wide."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common import shimlaunch
from dockyard_common.shimlaunch import Launch, launch_for


def launch(bundle: Path, namespace: str = "default", cid: str = "c1") -> Launch:
    return launch_for(namespace, cid, str(bundle), "")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temp dir short enough for socket paths below it (pytest's tmp_path is not)."""
    d = Path(tempfile.mkdtemp(prefix="zl-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_runtime_dir_is_above_namespace_and_id(short_dir: Path) -> None:
    # containerd: <state>/io.containerd.runtime.v2.task/<ns>/<id>; dockyardd: <state>/tasks/<ns>/<id>
    root = short_dir / "io.containerd.runtime.v2.task"
    (root / "default" / "c1").mkdir(parents=True)
    assert shimlaunch.runtime_dir(launch(root / "default" / "c1")) == str(root)
    path = shimlaunch.zygote_socket_path(launch(root / "default" / "c1"))
    assert path is not None and path.startswith(f"{root}/.dockyard-shim/zygote-") and path.endswith(".sock")
    # every bundle of that runtime dir shares it
    assert shimlaunch.zygote_socket_path(launch(root / "other" / "c2", "other", "c2")) == path


def test_daemons_do_not_share_a_zygote(short_dir: Path) -> None:
    a = shimlaunch.zygote_socket_path(launch(short_dir / "a" / "default" / "c1"))
    b = shimlaunch.zygote_socket_path(launch(short_dir / "b" / "default" / "c1"))
    assert a == f"{short_dir}/a/.dockyard-shim/{Path(str(a)).name}" and b is not None and a != b


def test_a_bundle_laid_out_otherwise_gets_no_zygote(tmp_path: Path) -> None:
    assert shimlaunch.runtime_dir(launch(tmp_path / "default" / "elsewhere")) is None  # id is not the dir name
    assert shimlaunch.runtime_dir(launch(tmp_path / "ns" / "c1")) is None  # namespace is not the parent
    assert shimlaunch.zygote_socket_path(launch(tmp_path / "x")) is None


def test_a_long_runtime_dir_gets_a_short_socket_still_its_own(tmp_path: Path) -> None:
    long_a, long_b = tmp_path / ("a" * 90), tmp_path / ("b" * 90)
    a = shimlaunch.zygote_socket_path(launch(long_a / "default" / "c1"))
    b = shimlaunch.zygote_socket_path(launch(long_b / "default" / "c1"))
    assert a is not None and b is not None and a != b
    for path in (a, b):
        assert path.startswith(shimlaunch.FALLBACK_DIR + "/") and len(path.encode()) <= shimlaunch.MAX_PATH
