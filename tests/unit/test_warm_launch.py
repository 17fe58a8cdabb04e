"""The warm dock's pieces that need no daemon: which daemon a command line names, the request's
round trip, the limits check, and a forked child taking the launcher's place (dock/launch.py,
dock/warm.py; tests/integration/test_warm_client.py runs the whole path)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from dock import launch, warm


@pytest.mark.parametrize(("argv", "env", "want"), [
    ([], {}, launch.DEFAULT_ADDRESS),
    (["ps"], {"DOCKYARD_ADDRESS": "/e/d.sock"}, "/e/d.sock"),
    (["--address", "/x/d.sock", "ps"], {"DOCKYARD_ADDRESS": "/e/d.sock"}, "/x/d.sock"),
    (["-a", "/x/d.sock", "ps"], {}, "/x/d.sock"),
    (["-a/x/d.sock", "ps"], {}, "/x/d.sock"),
    (["--address=/x/d.sock", "ps"], {}, "/x/d.sock"),
    (["-n", "other", "--format", "json", "-a", "/x/d.sock", "ps"], {}, "/x/d.sock"),
    (["ps", "-a", "/not/global"], {}, launch.DEFAULT_ADDRESS),  # ps's own -a
    (["--address", "rel.sock", "ps"], {}, os.path.abspath("rel.sock")),
])
def test_the_daemon_a_command_line_names(argv: list[str], env: dict[str, str], want: str) -> None:
    assert launch.daemon_address(argv, env) == want


def test_zygote_paths_differ_by_daemon_and_fit_a_socket() -> None:
    a, b = launch.zygote_path("/run/a/dockyard.sock"), launch.zygote_path("/run/b/dockyard.sock")
    assert a and b and a.startswith("/run/a/.dock/zygote-") and b.startswith("/run/b/.dock/")
    assert launch.zygote_path("/" + "x" * 120 + "/dockyard.sock") is None


def test_a_request_survives_the_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARM_TEST", "a=b=c")
    argv = ["run", "", "two words", "-e", "ümlaut", "--", "sh"]
    req = warm.Request.parse(launch.request(argv))
    assert req.argv == argv
    assert req.environ[b"WARM_TEST"] == b"a=b=c"
    assert req.code == launch.code_root() and req.executable == os.path.realpath(sys.executable)
    assert req.limits and all(len(item) == 3 for item in req.limits)


@pytest.mark.parametrize("data", [b"", b"garbage", launch.MAGIC, launch.MAGIC + b"\0" * 9 + b"x",
                                  launch.MAGIC + b"\0" * 9 + b"5\0a", launch.MAGIC + b"\0" * 7 + b"1:x:2\0\0" + b"0"])
def test_malformed_requests_are_refused(data: bytes) -> None:
    with pytest.raises(warm.Refused):
        warm.Request.parse(data)


@pytest.mark.parametrize(("theirs", "ours", "above"), [
    (10, 20, False), (20, 20, False), (30, 20, True), (-1, 20, True), (-1, -1, False), (5, -1, False)])
def test_hard_limits_above_ours(theirs: int, ours: int, above: bool) -> None:
    assert warm._above(theirs, ours) is above


def test_a_forked_child_becomes_the_launchers_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("tmp", "cwd", "zygote-tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    req = warm.Request.parse(launch.request(["ps", "-q"]))  # the launcher's
    req.umask = 0o027
    # the zygote's own TMPDIR, which tempfile has cached: the child must not keep it
    monkeypatch.setenv("TMPDIR", str(tmp_path / "zygote-tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)
    assert tempfile.gettempdir() == str(tmp_path / "zygote-tmp")
    out_r, out_w = os.pipe()
    cwd = os.open(tmp_path / "cwd", os.O_PATH | os.O_DIRECTORY)
    null = os.open(os.devnull, os.O_RDWR)
    pid = os.fork()
    if pid == 0:
        try:
            warm.become(req, [null, out_w, null, cwd])
            print(json.dumps({"cwd": os.getcwd(), "tmp": tempfile.gettempdir(), "umask": os.umask(0),
                              "argv": sys.argv[1:], "fd3": _is_open(3)}))
            sys.stdout.flush()
        finally:
            os._exit(0)
    os.close(out_w)
    os.close(cwd)
    os.close(null)
    with os.fdopen(out_r) as f:
        got = json.loads(f.read())
    os.waitpid(pid, 0)
    assert got == {"cwd": str(tmp_path / "cwd"), "tmp": str(tmp_path / "tmp"), "umask": 0o027,
                   "argv": ["ps", "-q"], "fd3": False}


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
