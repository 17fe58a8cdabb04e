"""runc's recursive mount options through the real `ctr`, on our shim and on containerd's (runc,
the reference): a read-only rbind of a host directory holding a tmpfs sub-mount leaves the tmpfs
writable; with "rro" (mount_setattr(2) over the whole tree) the tmpfs is read-only too; "rnoexec"
alike. Both shims must say the same.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common import linux as L
from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, RUNTIMES, daemon_with_runtime, import_busybox, remove_everything, uid
from tests.daemon import DaemonProcess

pytestmark = [pytest.mark.compat, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
              pytest.mark.skipif(not L.has_mount_setattr(), reason="mount_setattr(2) needs Linux 5.12")]

PROBE = ("touch /mnt/top 2>/dev/null && echo top-rw || echo top-ro; "
         "touch /mnt/sub/file 2>/dev/null && echo sub-rw || echo sub-ro; "
         "/mnt/sub/run 2>/dev/null || echo sub-noexec")  # `run`, a script the host put there, says sub-exec


@pytest.fixture(scope="module", params=RUNTIMES)
def daemon(request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    with daemon_with_runtime(request.param) as d:
        import_busybox(d)
        try:
            yield d
        finally:
            remove_everything(d)


@contextlib.contextmanager
def tree() -> Iterator[Path]:
    """A host directory with a fresh tmpfs on its `sub` (unmounted, and the directory gone, after)."""
    top = Path(tempfile.mkdtemp(prefix="dy-rro-"))
    (top / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "dy-rro-compat", str(top / "sub")], check=True)
    (top / "sub" / "run").write_text("#!/bin/sh\necho sub-exec\n")
    (top / "sub" / "run").chmod(0o755)
    try:
        yield top
    finally:
        subprocess.run(["umount", "-l", str(top / "sub")], check=True)
        (top / "sub").rmdir()
        for leftover in top.iterdir():
            leftover.unlink()
        top.rmdir()


@pytest.mark.parametrize(("options", "said"), [
    ("rbind:ro", ["top-ro", "sub-rw", "sub-exec"]),
    ("rbind:ro:rro", ["top-ro", "sub-ro", "sub-exec"]),
    ("rbind:rw:rnoexec", ["top-rw", "sub-rw", "sub-noexec"]),
    ("rbind:ro:rrw:rro", ["top-ro", "sub-ro", "sub-exec"]),  # both asked: the set wins (runc's rule)
    ("rbind:ro:rro:rrw", ["top-ro", "sub-ro", "sub-exec"]),
    ("rbind:ro:rrw", ["top-rw", "sub-rw", "sub-exec"]),  # cleared over the whole tree, "ro" or not
])
def test_recursive_options_reach_the_sub_mounts(daemon: DaemonProcess, options: str, said: list[str]) -> None:
    with tree() as top:
        cid = uid("rro")
        res = ctr(daemon, "run", "--rm", "--mount", f"type=bind,src={top},dst=/mnt,options={options}", IMAGE, cid,
                  "sh", "-c", PROBE, timeout=60)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == said, (options, res.stdout, res.stderr)
        # the host's own mount keeps its attributes whatever the container's copy got
        (top / "sub" / f"host-{secrets.token_hex(2)}").write_text("x")
