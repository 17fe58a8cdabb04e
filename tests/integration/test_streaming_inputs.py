"""Streaming and interactive commands fed odd inputs (a fuzz round over logs, attach, events,
build, exec, cp, stats; the driver is tests/streaming_fuzz.py): each ends, with one clean line when
it fails, and leaves nothing behind.

- our output is a pipe whose reader went away (`dock exec c yes | head -c1`): `dock run`, `dock
  exec` (-i too) and `dock attach` end with 141, as a pipeline's writer ends of SIGPIPE, instead
  of copying into nowhere for as long as the container runs; run and exec take their process
  with them (as on any failure of theirs), attach leaves the container running;
- a Dockerfile that never ends (`-f /dev/zero`, `dock build - < /dev/zero`, `-f - < /dev/zero`)
  is refused once it is past the size a build takes, with no temp file left;
- `dock cp` from a /proc path that is not there, or onto a read-only /proc/sys file, is the
  caller's mistake (not found, failed precondition), never "internal".
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import REPO, DaemonProcess
from tests.dockcli import DockCLI
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

LOOP = "while true; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; done"
PYTHON_WORDS = ("Traceback", "Error:", "Exception", "unexpected error", "RuntimeWarning")


def _env(cli: DockCLI, warm: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": cli.address, "DOCK_WARM": warm}
    env.pop("DOCK_DEBUG", None)
    if cli.tmp is not None:
        env["TMPDIR"] = str(cli.tmp)
    return env


def into_closed_pipe(cli: DockCLI, *args: str, warm: str = "0",
                     stdin: int | None = subprocess.DEVNULL) -> tuple[int, str]:
    """Run `dock ARGS` with its stdout a pipe that we close after its first bytes (as `| head -c1`):
    its exit status and stderr, once it has ended by itself."""
    proc = subprocess.Popen([sys.executable, "-m", "dock.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=stdin, env=_env(cli, warm), cwd=REPO)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.read(1), "no output came"
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")  # until it has exited: no sleep, no guess
        return proc.wait(60), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def clean(err: str) -> None:
    for word in PYTHON_WORDS:
        assert word not in err, err


@pytest.fixture
def looping(dock_cli: DockCLI) -> Iterator[str]:
    """A running container whose main process prints lines as fast as it can."""
    cid = dock_cli.ok("run", "-d", "--name", "looping", "busybox", "sh", "-c", LOOP).strip()
    yield cid


def ps_lines(cli: DockCLI, cid: str) -> list[str]:
    return [line for line in cli.ok("exec", cid, "ps", "-o", "pid,args").splitlines() if "yyyy" in line]


@pytest.mark.parametrize("warm", ["0", "1"])
@pytest.mark.parametrize("flags", [[], ["--rm"], ["-i", "--rm"]], ids=["plain", "rm", "interactive"])
def test_run_into_a_closed_pipe_ends(dock_cli: DockCLI, flags: list[str], warm: str) -> None:
    code, err = into_closed_pipe(dock_cli, "run", *flags, "busybox", "sh", "-c", LOOP, warm=warm)
    assert code == 141, err
    clean(err)
    # The run's container went with it (a failed run leaves nothing; --rm: the daemon's removal).
    wait_until(lambda: dock_cli.ok("ps", "-a", "-q").split() == [], what="the run's container to go")


@pytest.mark.parametrize("warm", ["0", "1"])
@pytest.mark.parametrize("interactive", [False, True], ids=["plain", "interactive"])
def test_exec_into_a_closed_pipe_ends_and_takes_its_process(dock_cli: DockCLI, busybox_daemon: DaemonProcess,
                                                            interactive: bool, warm: str) -> None:
    cid = dock_cli.ok("run", "-d", "busybox", "sleep", "600").strip()
    code, err = into_closed_pipe(dock_cli, "exec", *(["-i"] if interactive else []), cid, "sh", "-c", LOOP,
                                 warm=warm)
    assert code == 141, err
    clean(err)
    assert ps_lines(dock_cli, cid) == []  # the exec'd loop was killed and deleted, not left running


@pytest.mark.parametrize("warm", ["0", "1"])
def test_attach_into_a_closed_pipe_ends_and_leaves_the_container(dock_cli: DockCLI, looping: str, warm: str) -> None:
    code, err = into_closed_pipe(dock_cli, "attach", "--sig-proxy=false", looping, warm=warm)
    assert code == 141, err
    clean(err)
    assert looping in dock_cli.ok("ps", "-q").split()  # still running: attach never owned it


def test_logs_follow_into_a_closed_pipe_ends(dock_cli: DockCLI, looping: str) -> None:
    code, err = into_closed_pipe(dock_cli, "logs", "-f", looping)
    assert code == 141, err
    clean(err)


# --- Dockerfiles that never end -----------------------------------------------------------------

@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\n")
    return ctx


def _build(cli: DockCLI, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    with open(stdin or os.devnull, "rb") as f:
        return subprocess.run([sys.executable, "-m", "dock.cli", "build", *args], stdin=f, capture_output=True,
                              text=True, env=_env(cli, "0"), cwd=REPO, timeout=120)


@pytest.mark.parametrize("how", ["file", "stdin-context", "stdin-dockerfile"])
def test_endless_dockerfile_is_refused(dock_cli: DockCLI, context: Path, how: str) -> None:
    args = {"file": ["-f", "/dev/zero", str(context)], "stdin-context": ["-"],
            "stdin-dockerfile": ["-f", "-", str(context)]}[how]
    res = _build(dock_cli, *args, stdin=None if how == "file" else "/dev/zero")
    assert res.returncode == 1, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dock: ") and "larger than 8 MiB" in lines[0], res.stderr
    clean(res.stderr)  # and dock_cli checks that no spool file stayed in its TMPDIR


def test_dockerfile_and_tar_on_stdin_still_build(dock_cli: DockCLI, context: Path, tmp_path: Path) -> None:
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo built-from-stdin\n")
    res = _build(dock_cli, "-", stdin=str(context / "Dockerfile"))
    assert res.returncode == 0 and "built-from-stdin" in res.stdout, res.stderr
    archive = tmp_path / "ctx.tar"
    subprocess.run(["tar", "-C", str(context), "-cf", str(archive), "."], check=True)
    res = _build(dock_cli, "-", stdin=str(archive))
    assert res.returncode == 0, res.stderr


# --- dock cp: the caller's paths are the caller's mistakes ----------------------------------------

def test_cp_proc_paths_are_not_internal(dock_cli: DockCLI, busybox_daemon: DaemonProcess, tmp_path: Path) -> None:
    cid = dock_cli.ok("run", "-d", "busybox", "sleep", "600").strip()
    err = dock_cli.fails("cp", f"{cid}:/proc/self/environ", str(tmp_path / "out"), words="No such file")
    assert "not found" in err and "internal" not in err
    src = tmp_path / "hostname"
    src.write_text("x\n")
    err = dock_cli.fails("cp", str(src), f"{cid}:/proc/sys/kernel/hostname", words="Read-only file system")
    assert "failed precondition" in err and "internal" not in err
    assert not (tmp_path / "out").exists()
    assert "failed unexpectedly" not in busybox_daemon.log()


def test_cp_from_stdin_ends_at_the_archives_end(dock_cli: DockCLI, tmp_path: Path) -> None:
    """`dock cp - c:/dir` is done at the tar's end blocks: what follows, maybe without end
    (`< /dev/zero`: end blocks, then zeros for ever), is not waited for."""
    import io
    import tarfile

    cid = dock_cli.ok("run", "-d", "busybox", "sleep", "600").strip()
    with open("/dev/zero", "rb") as zero:
        res = subprocess.run([sys.executable, "-m", "dock.cli", "cp", "-", f"{cid}:/tmp"], stdin=zero,
                             capture_output=True, text=True, env=_env(dock_cli, "0"), cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("from-stdin.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"hi\n"))
    endless = tmp_path / "tar-then-zeros"
    endless.write_bytes(buf.getvalue() + bytes(1 << 20))  # a tar, then a MiB of trailing zeros
    with open(endless, "rb") as f:
        res = subprocess.run([sys.executable, "-m", "dock.cli", "cp", "-", f"{cid}:/tmp"], stdin=f,
                             capture_output=True, text=True, env=_env(dock_cli, "0"), cwd=REPO, timeout=120)
    assert res.returncode == 0, res.stderr
    assert dock_cli.ok("exec", cid, "cat", "/tmp/from-stdin.txt") == "hi\n"
