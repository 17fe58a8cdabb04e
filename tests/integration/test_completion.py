"""`dock completion bash` in a real bash: commands, options, and container and image names
from a real daemon; a daemon that is not there gives no candidates and no hang."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.runtimes import IMAGE
from tests.daemon import REPO, DaemonProcess
from tests.dockcli import DockCLI

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture(scope="module")
def bindir() -> Iterator[Path]:
    """A `dock` on PATH that runs this checkout (the shell completes a command by its name)."""
    with tempfile.TemporaryDirectory(prefix="dy-compl-") as tmp:
        dock = Path(tmp) / "dock"
        dock.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dock.cli "$@"\n')
        dock.chmod(0o755)
        yield Path(tmp)


def complete(bindir: Path, line: str, address: str = "/nonexistent/dockyard.sock") -> list[str]:
    """What bash offers for TAB at the end of `line`, through the code `dock completion bash` printed."""
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    script = f"""
eval "$(dock completion bash)"
fn=$(complete -p dock | sed 's/.* -F \\([^ ]*\\) .*/\\1/')
COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})
COMP_CWORD={len(words) - 1}
COMP_LINE={shlex.quote(line)}
COMP_POINT=${{#COMP_LINE}}
"$fn" dock {shlex.quote(words[-1])} {shlex.quote(words[-2])}
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO),
           "DOCKYARD_ADDRESS": address}
    res = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True, text=True, env=env,
                         timeout=60, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return [w.strip() for w in res.stdout.splitlines() if w.strip()]


def test_commands_and_options_complete_without_a_daemon(bindir: Path) -> None:
    assert set(complete(bindir, "dock st")) == {"stop", "start", "stats"}
    assert set(complete(bindir, "dock run --re")) == {"--read-only", "--restart"}
    assert set(complete(bindir, "dock completion ")) == {"bash", "zsh", "fish", "tcsh"}
    # container names come from the daemon: none there, so nothing (and no hang, no traceback)
    assert complete(bindir, "dock stop ") == []


def test_container_and_image_names_complete_from_the_daemon(bindir: Path, busybox_daemon: DaemonProcess) -> None:
    dock = DockCLI(busybox_daemon.address)
    name = f"web-{secrets.token_hex(3)}"
    other = f"db-{secrets.token_hex(3)}"
    dock.ok("containers", "create", "--net", "none", "--name", name, IMAGE, "true")
    dock.ok("containers", "create", "--net", "none", "--name", other, IMAGE, "true")
    try:
        assert complete(bindir, "dock stop we", busybox_daemon.address) == [name]
        assert set(complete(bindir, "dock rm ", busybox_daemon.address)) == {name, other}
        assert complete(bindir, f"dock logs {other[:4]}", busybox_daemon.address) == [other]
        assert complete(bindir, "dock tasks kill d", busybox_daemon.address) == [other]
        assert "busybox:latest" in complete(bindir, "dock run --net none busy", busybox_daemon.address)
    finally:
        dock.ok("rm", name, other)
