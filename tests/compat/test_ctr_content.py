"""The real `ctr content ...` against dockyardd: ingest, ls, get, label, active, rm."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from tests.compat.conftest import ctr as compat_ctr
from tests.daemon import DaemonProcess

pytestmark = pytest.mark.compat


def ctr(daemon: DaemonProcess, *args: str, namespace: str = "default", stdin: bytes | None = None
        ) -> subprocess.CompletedProcess[bytes]:
    """ctr's content commands move bytes: binary in and out."""
    return compat_ctr(daemon, *args, namespace=namespace, input=stdin, binary=True, timeout=120)


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def quiet_daemon(daemon: DaemonProcess) -> DaemonProcess:
    """ctr's writes hold no lease: let the start-up garbage collection pass first."""
    daemon.wait_startup_collection()
    return daemon


def test_ctr_content_lifecycle(quiet_daemon: DaemonProcess) -> None:
    d = quiet_daemon
    data = os.urandom(3 * (1 << 20) + 17)  # several WRITE messages
    res = ctr(d, "content", "ingest", "--expected-size", str(len(data)), "--expected-digest", dg(data), "blob-1",
              stdin=data)
    assert res.returncode == 0, res.stderr
    small = b"hello from ctr\n"
    assert ctr(d, "content", "ingest", "blob-2", stdin=small).returncode == 0

    rows = [line.split("\t") for line in ctr(d, "content", "ls").stdout.decode().splitlines()]
    assert rows[0][0] == "DIGEST"
    listed = {r[0]: r for r in rows[1:]}
    assert set(listed) == {dg(data), dg(small)}
    assert ctr(d, "content", "ls", "-q").stdout.decode().split() == sorted([dg(data), dg(small)])

    res = ctr(d, "content", "get", dg(data))
    assert res.returncode == 0 and res.stdout == data
    res = ctr(d, "content", "get", dg(b"missing"))
    assert res.returncode == 1 and f"content digest {dg(b'missing')}: not found" in res.stderr.decode()

    res = ctr(d, "content", "label", dg(small), "foo=bar", "a.b/c=d")
    assert res.returncode == 0, res.stderr
    assert set(res.stdout.decode().strip().split(",")) == {"foo=bar", "a.b/c=d"}
    line = next(r for r in ctr(d, "content", "ls").stdout.decode().splitlines() if r.startswith(dg(small)))
    assert "foo=bar" in line and "a.b/c=d" in line
    assert ctr(d, "content", "label", dg(small), "foo").returncode == 0  # removes foo
    line = next(r for r in ctr(d, "content", "ls").stdout.decode().splitlines() if r.startswith(dg(small)))
    assert "foo=bar" not in line and "a.b/c=d" in line

    # Other namespaces see nothing of it.
    assert ctr(d, "content", "ls", "-q", namespace="elsewhere").stdout == b""
    assert ctr(d, "content", "get", dg(small), namespace="elsewhere").returncode == 1

    # Ingesting known content with its digest is skipped (ALREADY_EXISTS on the first message).
    res = ctr(d, "content", "ingest", "--expected-digest", dg(data), "blob-again", stdin=data)
    assert res.returncode == 0, res.stderr

    res = ctr(d, "content", "rm", dg(small), dg(data))
    assert res.returncode == 0, res.stderr
    assert ctr(d, "content", "ls", "-q").stdout == b""


def test_ctr_content_active(quiet_daemon: DaemonProcess) -> None:
    d = quiet_daemon
    assert ctr(d, "content", "active").stdout.decode().split() == ["REF", "SIZE", "AGE"]
    # An ingest whose input ends short of --expected-size fails and stays active.
    res = ctr(d, "content", "ingest", "--expected-size", "100", "short-one", stdin=b"only 19 bytes here!")
    assert res.returncode == 1
    rows = [line.split() for line in ctr(d, "content", "active").stdout.decode().splitlines()]
    assert rows[1][0] == "short-one" and rows[1][1] == "19B"
    assert [r[0] for r in (line.split() for line in
                           ctr(d, "content", "active", "ref==nope").stdout.decode().splitlines()[1:])] == []
    assert ctr(d, "content", "active", namespace="elsewhere").stdout.decode().split() == ["REF", "SIZE", "AGE"]


def test_ctr_content_wrong_digest(quiet_daemon: DaemonProcess) -> None:
    d = quiet_daemon
    wrong = dg(b"not these bytes")
    res = ctr(d, "content", "ingest", "--expected-digest", wrong, "wrong", stdin=b"these bytes")
    assert res.returncode == 1
    err = res.stderr.decode()
    assert "failed precondition" in err and wrong in err and dg(b"these bytes") in err
    assert ctr(d, "content", "ls", "-q").stdout == b""
