"""Header values the system calls cannot take: a clear InvalidArgument naming the entry.

Python's os functions refuse a device number past the kernel's dev_t, a negative or huge uid,
a NUL in a name, ... with Python's own words ("Python int too large to convert to C int",
"embedded null byte"). None of that may reach a user: the error names the entry and what is
wrong with it, whatever the mode, and the tree outside the target is untouched.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common.errors import DockyardError, InvalidArgument
from supervisor.archive.apply import apply_layer
from tests.unit.archive_fixtures import TarEntry, block_device, build_tar, char_device, directory, file, symlink

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)")]

PYTHON_WORDS = ("Python", "C int", "C unsigned", "embedded null", "Error", "Traceback", "struct", "int too")


@pytest.fixture
def target() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="dockyard-entry-errors-"))
    try:
        yield base
    finally:
        shutil.rmtree(base)


def _apply(target: Path, data: bytes, mode: str = "delete") -> None:
    apply_layer(io.BytesIO(data), target, whiteout_mode=mode)  # type: ignore[arg-type]


def _refused(target: Path, data: bytes, *words: str, mode: str = "delete") -> str:
    with pytest.raises(InvalidArgument) as info:
        _apply(target, data, mode)
    message = str(info.value)
    for w in words:
        assert w in message, message
    for w in PYTHON_WORDS:
        assert w not in message, message
    return message


# GNU format writes numbers that do not fit the octal fields in base-256, as GNU tar does.
GNU = tarfile.GNU_FORMAT

DEVICE_CASES = [
    (1 << 40, 0),  # past a C int
    (1 << 31, 0),
    (0, 1 << 31),
    (4096, 0),  # past the kernel's 12 bits of major
    (0, 1 << 20),  # past its 20 bits of minor
    (-1, 0),  # base-256 negative
    (0, -5),
]


@pytest.mark.parametrize("mode", ["delete", "overlay"])
@pytest.mark.parametrize(("major", "minor"), DEVICE_CASES)
def test_out_of_range_device_numbers_name_the_entry(target: Path, mode: str, major: int, minor: int) -> None:
    data = build_tar([directory("dev"), char_device("dev/bad", major, minor)], format=GNU)
    msg = _refused(target, data, "'dev/bad'", "device number", f"{major}:{minor}", "out of range", mode=mode)
    assert "major 0-4095" in msg
    assert not (target / "dev" / "bad").exists()


def test_block_devices_are_checked_too(target: Path) -> None:
    _refused(target, build_tar([block_device("sda", 1 << 33, 1)], format=GNU), "'sda'", "device number")


def test_the_largest_device_numbers_the_kernel_takes_are_applied(target: Path) -> None:
    _apply(target, build_tar([char_device("edge", 4095, (1 << 20) - 1)], format=GNU))
    st = os.lstat(target / "edge")
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (4095, (1 << 20) - 1)


@pytest.mark.parametrize(("field", "value"), [("uid", -2), ("gid", -7), ("uid", 1 << 40), ("gid", (1 << 32) - 1)])
def test_out_of_range_owners_name_the_entry(target: Path, field: str, value: int) -> None:
    entry = file("owned", b"x", **{field: value})
    _refused(target, build_tar([entry], format=GNU), "'owned'", field, str(value), "out of range")
    assert not (target / "owned").exists()


def test_a_nul_in_a_pax_name_or_link_target_is_named(target: Path) -> None:
    _refused(target, build_tar([file("ok", b"1", pax={"path": "a\0b"})]), "NUL")
    _refused(target, build_tar([symlink("link", "x", pax={"linkpath": "to\0there"})]), "'link'", "NUL")


def test_a_bad_xattr_name_is_named(target: Path) -> None:
    entry = TarEntry("x", "file", b"1", pax={"SCHILY.xattr.": "v"})
    _refused(target, build_tar([entry]), "'x'", "xattr")


@pytest.mark.parametrize("value", ["1e999999", "1e999999999", "nan", "inf", "-1e30", "9" * 5000])
def test_absurd_pax_times_are_refused_quickly(target: Path, value: str) -> None:
    started = time.monotonic()
    _refused(target, build_tar([file("t", b"1", pax={"mtime": value})]), "bad header", "pax mtime")
    assert time.monotonic() - started < 5  # never a million-digit integer


def test_entries_before_the_bad_one_stay_and_nothing_else_changes(target: Path) -> None:
    (target / "keep").write_bytes(b"keep")
    data = build_tar([file("first", b"1"), char_device("bad", 1 << 35, 0), file("never", b"2")], format=GNU)
    _refused(target, data, "'bad'")
    assert (target / "first").read_bytes() == b"1"
    assert (target / "keep").read_bytes() == b"keep"
    assert not (target / "never").exists()


def test_unforeseen_python_errors_become_domain_errors(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a system call wrapper raises in Python's words comes out in ours, naming the entry."""
    import supervisor.archive.apply as apply_mod

    def overflow(*_args: object, **_kw: object) -> None:
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(apply_mod.os, "utime", overflow)
    _refused(target, build_tar([file("f", b"1")]), "'f'", "out of range")

    def unicode_error(*_args: object, **_kw: object) -> None:
        raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")

    monkeypatch.setattr(apply_mod.os, "utime", unicode_error)
    _refused(target, build_tar([file("g", b"1")]), "'g'", "not valid text")

    def bug(*_args: object, **_kw: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'x'")

    monkeypatch.setattr(apply_mod.os, "utime", bug)
    with pytest.raises(DockyardError) as info:
        _apply(target, build_tar([file("h", b"1")]))
    assert "'h'" in str(info.value) and "NoneType" not in str(info.value)
