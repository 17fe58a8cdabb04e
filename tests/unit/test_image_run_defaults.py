"""What a hostile image chooses, read safely: dockyard_common/rootfiles.py (its /etc/passwd as a
symlink out, a FIFO, a device, huge) and dockyard_common/rundefaults.py (VOLUME paths that climb,
are `/` or procfs, hold a NUL; NUL in Env/Cmd/...), and dock/oci.py's ImageConfig built on them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dock.oci import ImageConfig, RootFS
from dockyard_common import rootfiles, rundefaults
from dockyard_common.errors import InvalidArgument

PASSWD = "root:x:0:0:root:/root:/bin/sh\n"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "rootfs" / "etc").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "passwd").write_text("host:x:7:7::/:/bin/sh\n")
    return tmp_path / "rootfs"


def _passwd(root: Path) -> Path:
    return root / "etc" / "passwd"


def test_regular_file_is_read(root: Path) -> None:
    _passwd(root).write_text(PASSWD)
    assert rootfiles.read_in_root(root, "/etc/passwd") == PASSWD
    assert RootFS(root).users() is not None


@pytest.mark.parametrize("target", ["../../outside/passwd", "/../outside/passwd", "../../../../../../outside/passwd"])
def test_symlinks_out_stay_in_the_root(root: Path, target: str) -> None:
    _passwd(root).symlink_to(target)
    assert rootfiles.read_in_root(root, "/etc/passwd") is None  # never the host file beside the root


def test_absolute_symlink_is_the_roots(root: Path) -> None:
    (root / "etc" / "real").write_text(PASSWD)
    _passwd(root).symlink_to("/etc/real")
    (root / "etc" / "group").symlink_to("/etc")  # a directory: nothing to read
    assert rootfiles.read_in_root(root, "/etc/passwd") == PASSWD
    assert rootfiles.read_in_root(root, "/etc/group") is None


def test_directory_on_the_way_through_a_symlink(root: Path) -> None:
    (root / "data").mkdir()
    (root / "data" / "passwd").write_text(PASSWD)
    (root / "etc2").symlink_to("../../../data")
    assert rootfiles.read_in_root(root, "/etc2/passwd") == PASSWD


def test_symlink_loop_is_an_error(root: Path) -> None:
    _passwd(root).symlink_to("/etc/passwd")
    with pytest.raises(InvalidArgument, match="symbolic links"):
        rootfiles.read_in_root(root, "/etc/passwd")


def test_fifo_is_refused_not_opened(root: Path) -> None:
    os.mkfifo(_passwd(root))
    with pytest.raises(InvalidArgument, match=r"not a regular file \(a FIFO\)"):
        rootfiles.read_in_root(root, "/etc/passwd")  # an open() here would block for ever
    with pytest.raises(InvalidArgument, match="FIFO"):
        RootFS(root).users()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_is_refused(root: Path) -> None:
    os.mknod(_passwd(root), 0o644 | 0o020000, os.makedev(1, 5))  # /dev/zero: a read without end
    with pytest.raises(InvalidArgument, match="a device"):
        rootfiles.read_in_root(root, "/etc/passwd")


def test_huge_file_is_refused(root: Path) -> None:
    with open(_passwd(root), "wb") as f:
        f.truncate(1 << 30)  # sparse: 1 GiB that costs nothing
    with pytest.raises(InvalidArgument, match="more than the limit"):
        rootfiles.read_in_root(root, "/etc/passwd")


def test_missing_or_through_a_file(root: Path) -> None:
    assert rootfiles.read_in_root(root, "/etc/passwd") is None
    (root / "file").write_text("x")
    assert rootfiles.read_in_root(root, "/file/passwd") is None
    assert rootfiles.read_in_root(root, "/") is None


@pytest.mark.parametrize(("raw", "clean"), [
    ("/data", "/data"), ("/data/", "/data"), ("//data//x/.", "/data/x"), ("/../../../tmp/v", "/tmp/v"),
    ("/a/../b", "/b"), ("/proc2", "/proc2"),
])
def test_volume_paths_are_cleaned(raw: str, clean: str) -> None:
    assert rundefaults.volume_paths({raw: {}}) == [clean]


def test_volume_duplicates_count_once() -> None:
    assert rundefaults.volume_paths({"/data": {}, "/data/": {}, "/./data": {}, "/b": None}) == ["/b", "/data"]
    assert rundefaults.volume_paths(None) == []


@pytest.mark.parametrize(("raw", "words"), [
    ("data", "not an absolute path"), ("", "not an absolute path"), ("/", "root / cannot be a volume"),
    ("/..", "root / cannot be a volume"), ("/proc", "/proc cannot be a volume"),
    ("/proc/sys", "/proc cannot be a volume"), ("/x/../proc/", "/proc cannot be a volume"),
    ("/da\0ta", "NUL"),
])
def test_volume_paths_refused(raw: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        rundefaults.volume_paths({raw: {}})


@pytest.mark.parametrize("run", [
    {"Env": ["A=b\0c"]}, {"Cmd": ["tr\0ue"]}, {"Entrypoint": ["\0"]}, {"WorkingDir": "/a\0b"},
    {"User": "ro\0ot"}, {"Shell": ["/bin/sh\0"]}, {"StopSignal": "SIG\0TERM"},
])
def test_nul_bytes_refused(run: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument, match="NUL byte"):
        ImageConfig.from_json(run)


def test_image_config_volumes_cleaned() -> None:
    assert ImageConfig.from_json({"Volumes": {"/data/": {}, "/data": {}, "/../v": {}}}).volumes == ["/data", "/v"]
