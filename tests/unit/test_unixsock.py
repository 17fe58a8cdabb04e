"""dockyard_common.unixsock.listen: the socket is live by the time it has its name."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common import unixsock


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="us-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_the_path_appears_listening_and_private(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bool, int]] = []
    rename = os.rename

    def checking_rename(src: str, dst: str) -> None:
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(src)  # refused if it did not listen yet
            seen.append((True, stat.S_IMODE(os.stat(src).st_mode)))
        except OSError:
            seen.append((False, 0))
        finally:
            probe.close()
        rename(src, dst)

    monkeypatch.setattr(unixsock.os, "rename", checking_rename)
    sock = unixsock.listen(str(short_dir / "s.sock"))
    try:
        assert seen == [(True, 0o600)]
        assert unixsock.is_live(str(short_dir / "s.sock"), socket.SOCK_STREAM)
        with pytest.raises(unixsock.AlreadyServing):
            unixsock.listen(str(short_dir / "s.sock"))
    finally:
        sock.close()
    assert sorted(os.listdir(short_dir)) == ["s.sock"]  # no temporary name left behind
    unixsock.listen(str(short_dir / "s.sock")).close()  # a stale file is replaced
