"""`dock run --init` and `--label-file` (Docker's): seen from inside real containers (our shim,
busybox, `--net none`) and in the container records; bad values refused with nothing made.

--init binds the host's static tini (Debian's tini package) at /dev/init and runs the command
under it, as Docker runs `/sbin/docker-init -- CMD`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dock.runflags import INIT_BINARY, INIT_IN_CONTAINER, INIT_PATH_ENV
from tests.compat.runtimes import IMAGE
from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI
from tests.integration.test_attach import attached_shell, terminal
from tests.integration.test_run_flags import name, run_rm, values
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]
needs_tini = pytest.mark.skipif(not os.path.isfile(INIT_BINARY), reason=f"{INIT_BINARY} (Debian's tini) missing")

CMDLINE = "tr '\\0' ' ' < /proc/1/cmdline; echo"  # PID 1's argv, one line


@pytest.fixture
def cli(dock_cli: DockCLI) -> DockCLI:
    return dock_cli


def nothing_made(cli: DockCLI, cid: str) -> None:
    assert cid not in cli.ok("ps", "-a", "-q", "--no-trunc")
    assert cid not in cli.ok("snapshots", "ls")


def orphan_state(cli: DockCLI, cid: str) -> str:
    """The state letter of the container's orphan (its pid in /tmp/orphan): "" before it wrote
    it, "gone" once no process (not even a zombie) has that pid."""
    script = "p=$(cat /tmp/orphan 2>/dev/null) || exit 0; cat /proc/$p/stat 2>/dev/null || echo gone"
    out = cli.ok("exec", cid, "sh", "-c", script).strip()
    return out if out in ("", "gone") else out.rpartition(")")[2].split()[0]


# -- --init -------------------------------------------------------------------------------------------------


@needs_tini
def test_init_is_pid_1_and_the_command_its_child(cli: DockCLI) -> None:
    script = f"{CMDLINE}; echo pid=$$; echo ppid=$PPID; echo exe=$(md5sum /proc/1/exe | cut -d' ' -f1)"
    out = run_rm(cli, "--init", IMAGE, "sh", "-c", script)
    first, got = out.splitlines()[0], values(out)
    assert first.startswith(f"{INIT_IN_CONTAINER} -- sh -c "), out
    assert got["pid"] != "1" and got["ppid"] == "1", out  # sh runs as tini's child
    assert got["exe"] == hashlib.md5(Path(INIT_BINARY).read_bytes()).hexdigest()  # PID 1 is the host's tini
    # without --init the command itself is PID 1
    assert run_rm(cli, IMAGE, "sh", "-c", CMDLINE).startswith("sh -c ")


@needs_tini
def test_init_reaps_orphaned_zombies(cli: DockCLI) -> None:
    # The subshell's short sleep is orphaned and reparented to PID 1. Without an init, PID 1 is
    # `sleep 600` (sh exec'd it), which never waits: the orphan stays a zombie. tini reaps it.
    script = "(sh -c 'echo $$ > /tmp/orphan; exec sleep 0.2' &); exec sleep 600"
    plain = cli.ok("run", "-d", "--net", "none", "--name", name("zp"), IMAGE, "sh", "-c", script).strip()
    init = cli.ok("run", "-d", "--net", "none", "--name", name("zi"), "--init", IMAGE, "sh", "-c", script).strip()
    try:
        wait_until(lambda: orphan_state(cli, plain) == "Z", what="the orphan to be a zombie without --init", timeout=60)
        wait_until(lambda: orphan_state(cli, init) == "gone", what="tini to reap the orphan", timeout=60)
    finally:
        cli.ok("rm", "-f", plain, init)


@needs_tini
def test_stop_is_prompt_because_tini_forwards_sigterm(cli: DockCLI) -> None:
    # `sleep` as PID 1 ignores SIGTERM (no handler, and PID 1 gets no default action): `dock stop`
    # would wait its whole timeout. Under tini, sleep is an ordinary process and dies at once.
    cid = cli.ok("run", "-d", "--net", "none", "--name", name("st"), "--init", IMAGE, "sleep", "600").strip()
    try:
        res = cli.dock("stop", "-t", "30", cid, timeout=60)
        assert res.returncode == 0, res.stderr
        # killed by the SIGTERM tini passed on; not forwarded, the stop would SIGKILL after 30 s: 137
        assert cli.json("inspect", cid)[0]["state"]["exit_code"] == 128 + 15
    finally:
        cli.ok("rm", "-f", cid)


@needs_tini
def test_exit_status_propagates(cli: DockCLI) -> None:
    res = cli.dock("run", "--rm", "--net", "none", "--init", IMAGE, "sh", "-c", "exit 3")
    assert res.returncode == 3, res.stderr


@needs_tini
def test_init_with_a_read_only_root(cli: DockCLI) -> None:
    cid = name("ro")
    out = cli.ok("run", "--net", "none", "--name", cid, "--init", "--read-only", IMAGE, "sh", "-c",
                 f"{CMDLINE}; touch /x 2>/dev/null || echo read-only")
    try:
        assert out.startswith(f"{INIT_IN_CONTAINER} -- sh -c "), out
        assert out.splitlines()[-1] == "read-only"
        # the mount point lives in the runtime's /dev tmpfs: the container's snapshot never sees it
        assert "init" not in cli.ok("diff", cid)
    finally:
        cli.ok("rm", "-f", cid)


@needs_tini
def test_init_with_a_terminal_and_stdin(cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    assert cli.dock("run", "--rm", "-i", "--net", "none", "--init", IMAGE, "cat", input="through tini\n").stdout \
        == "through tini\n"
    with terminal(busybox_daemon, "run", "-it", "--rm", "--net", "none", "--init", "--name", name("tty"),
                  IMAGE, "sh") as t:
        attached_shell(t)
        t.type(b"[ -t 0 ] && echo tty$((2*3)); tr '\\0' ' ' < /proc/1/cmdline; echo end$((4*5))\r")
        t.expect(rb"tty6")
        t.expect(rb"/dev/init -- sh end20")  # PID 1's argv, then the echo (the typed line shows neither)
        t.type(b"exit 4\r")
        assert t.wait() == 4


def test_missing_init_binary_is_one_line_and_nothing_is_made(cli: DockCLI, monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    monkeypatch.setenv(INIT_PATH_ENV, str(tmp_path / "no-such-tini"))  # read by the dock subprocess
    for verb in (["run", "--rm"], ["containers", "create"]):
        cid = name("noinit")
        err = cli.fails(*verb, "--net", "none", "--init", "--name", cid, IMAGE, "true", words="--init")
        assert "no-such-tini" in err and len(err.splitlines()) == 1, err
        nothing_made(cli, cid)


@needs_tini
def test_init_refuses_a_host_dev_bind(cli: DockCLI, tmp_path: Path) -> None:
    # the mount point would be made in the bound host directory: refused, and what was made goes again
    host_dev = tmp_path / "dev"
    host_dev.mkdir()
    cid = name("devbind")
    cli.fails("run", "--rm", "--net", "none", "--init", "-v", f"{host_dev}:/dev", "--name", cid, IMAGE, "true",
              words="no place for /dev/init")
    assert list(host_dev.iterdir()) == []
    nothing_made(cli, cid)


# -- --label-file ---------------------------------------------------------------------------------------------


def test_label_files_merge_under_label_flags(cli: DockCLI, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text("# labels of the app\n\n  app=web\ntier\nnote= spaced = kept \nover=one\nfile=one\n")
    two.write_text("file=two\r\nover=two\r\n")
    flags = ["--label-file", str(one), "--label-file", str(two), "-l", "over=flag", "--label", "extra=x"]
    want = {"app": "web", "tier": "", "note": " spaced = kept ", "file": "two", "over": "flag", "extra": "x"}
    created = cli.ok("containers", "create", "--net", "none", "--name", name("lc"), *flags, IMAGE, "true").strip()
    ran = cli.ok("run", "-d", "--net", "none", "--name", name("lr"), *flags, IMAGE, "sleep", "600").strip()
    try:
        for cid in (created, ran):
            labels = cli.json("inspect", cid)[0]["labels"]
            assert {k: labels.get(k) for k in want} == want, labels
            assert cli.json("containers", "info", cid)["labels"] == labels
    finally:
        cli.ok("rm", "-f", created, ran)


BAD_FILES = {
    "missing": (None, "No such file or directory"),
    "directory": ("", "Is a directory"),
    "empty key": ("ok=1\n=value\n", "line 2"),
    "space in key": ("a b=1\n", "line 1"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_label_files_are_refused_and_nothing_is_made(cli: DockCLI, tmp_path: Path, case: str) -> None:
    content, words = BAD_FILES[case]
    path = tmp_path / "labels"
    if content == "":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    for verb in (["run", "--rm"], ["containers", "create"]):
        cid = name("badlf")
        err = cli.fails(*verb, "--net", "none", "--label-file", str(path), "--name", cid, IMAGE, "true", words=words)
        assert f"--label-file {path}" in err and len(err.splitlines()) == 1, err
        nothing_made(cli, cid)
