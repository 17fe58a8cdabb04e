"""An upload the daemon refuses early (the client still sending) reaches the client as the
daemon's reason, never as grpc.aio's INTERNAL "Internal error from Core" (grpc/grpc#36066: a
write that fails because the call has ended overwrites the status). The daemon reads the rest of
a refused upload before answering (supervisor/services/status.py `_drain`); big uploads make
the client's late writes certain."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.runtimes import IMAGE
from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

BIG = 48 << 20  # far more than flow control lets through before the daemon answers


@pytest.fixture
def big_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dy-upload-") as tmp:
        path = Path(tmp) / "big"
        with open(path, "wb") as f:
            f.write(os.urandom(1 << 20) * (BIG >> 20))
        yield path


def test_copy_into_a_read_only_container_says_read_only(busybox_daemon: DaemonProcess, big_file: Path) -> None:
    dock = DockCLI(busybox_daemon.address)
    cid = f"ro-{secrets.token_hex(3)}"
    dock.ok("run", "-d", "--net", "none", "--read-only", "--name", cid, IMAGE, "sleep", "600")
    small = big_file.with_name("small")
    small.write_text("x\n")
    try:
        # The race is narrow for a small file (its one chunk goes out as the refusal comes in):
        # without the drain about 1 in 20 of these said "Internal error from Core" here.
        for path in (big_file, *[small] * 40):
            err = dock.fails("cp", str(path), f"{cid}:/tmp/", words="read-only")
            assert "Internal error" not in err, err
    finally:
        dock.ok("rm", "-f", cid)


def test_importing_a_big_file_that_is_no_archive_says_so(busybox_daemon: DaemonProcess, big_file: Path) -> None:
    dock = DockCLI(busybox_daemon.address)
    for _ in range(3):
        res = dock.dock("images", "import", str(big_file))
        assert res.returncode == 1, res
        err = res.stderr.strip()
        assert err.startswith("dock: ") and "Internal error" not in err and "Traceback" not in err, err
