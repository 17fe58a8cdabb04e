"""The daemon's check of a received build context tar (supervisor/archive/context.py): what is
refused before anything is written, and the extraction of what passes."""

from __future__ import annotations

import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from dockyard_common.errors import Cancelled, InvalidArgument
from supervisor.archive.context import ContextLimits, check_context, extract_context


def tar_file(tmp_path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tuple):
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
            else:
                tar.addfile(entry)
    path = tmp_path / "ctx.tar"
    path.write_bytes(buf.getvalue())
    return path


def info(name: str, type: bytes, linkname: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type = type
    i.linkname = linkname
    return i


@pytest.mark.parametrize(("entries", "message"), [
    ([("../escape", b"x")], "'../escape' leaves the context"),
    ([("a/../../escape", b"x")], "leaves the context"),
    ([info("dev", tarfile.CHRTYPE)], "'dev' is a device"),
    ([info("disk", tarfile.BLKTYPE)], "'disk' is a device"),
    ([info("etc", tarfile.SYMTYPE, "/etc"), ("etc/passwd", b"x")], "'etc/passwd' is below the symlink 'etc'"),
    ([info("up", tarfile.SYMTYPE, "../.."), info("up/x", tarfile.DIRTYPE)], "below the symlink 'up'"),
    ([info("etc", tarfile.SYMTYPE, "/etc"), info("pw", tarfile.LNKTYPE, "etc/shadow")], "below the symlink 'etc'"),
    ([info("pw", tarfile.LNKTYPE, "../../etc/shadow")], "leaves the context"),
    ([("a/.wh.b", b"")], "'.wh.' are not supported"),
])
def test_refused(tmp_path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_context(tar_file(tmp_path, entries), ContextLimits())


def test_malformed(tmp_path: Path) -> None:
    path = tmp_path / "junk.tar"
    path.write_bytes(os.urandom(1024) + b"x" * 600)
    with pytest.raises(InvalidArgument, match="not a valid tar"):
        check_context(path, ContextLimits())
    good = tar_file(tmp_path, [("a", b"x" * 3000)])
    path.write_bytes(good.read_bytes()[:1500])  # cut inside the file's data
    with pytest.raises(InvalidArgument, match="not a valid tar"):
        check_context(path, ContextLimits())


def test_entry_limit(tmp_path: Path) -> None:
    path = tar_file(tmp_path, [(f"f{i}", b"") for i in range(5)])
    assert check_context(path, ContextLimits(max_entries=5)) == 5
    with pytest.raises(InvalidArgument, match="more than 4 entries"):
        check_context(path, ContextLimits(max_entries=4))


def test_allowed(tmp_path: Path) -> None:
    entries: list[tarfile.TarInfo | tuple[str, bytes]] = [
        info("abs", tarfile.SYMTYPE, "/etc/passwd"),  # a symlink itself is content; COPY decides about it
        info("link", tarfile.SYMTYPE, "/somewhere"), info("link", tarfile.DIRTYPE), ("link/file", b"ok"),
        ("./a/../b", b"b"), info("fifo", tarfile.FIFOTYPE), ("hard-src", b"h"),
        info("hard", tarfile.LNKTYPE, "hard-src"),
    ]
    assert check_context(tar_file(tmp_path, entries), ContextLimits()) == len(entries)


@pytest.mark.skipif(os.geteuid() != 0, reason="the applier sets owners")
def test_extract(tmp_path: Path) -> None:
    path = tar_file(tmp_path, [info("d", tarfile.DIRTYPE), ("d/f", b"data"), info("d/l", tarfile.SYMTYPE, "/etc")])
    target = tmp_path / "out"
    target.mkdir()
    stats = extract_context(path, target)
    assert stats.entries == 3 and stats.bytes == path.stat().st_size
    assert (target / "d" / "f").read_bytes() == b"data"
    assert os.readlink(target / "d" / "l") == "/etc"


def test_cancel(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        check_context(tar_file(tmp_path, [("a", b"")]), ContextLimits(), cancel)
