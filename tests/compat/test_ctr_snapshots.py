"""The real `ctr snapshots …` against dockyardd: prepare, view, mounts, commit, ls, info, usage,
tree, label, rm, on overlayfs (ctr's default) and native."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.compat.conftest import ctr as compat_ctr
from tests.compat.conftest import ok
from tests.conformance.mounts import mounts_under, unmount
from tests.daemon import DaemonProcess

pytestmark = [pytest.mark.compat, pytest.mark.root]

def ctr(daemon: DaemonProcess, *args: str, namespace: str = "tapx7",
        snapshotter: str = "") -> subprocess.CompletedProcess[str]:
    """`ctr snapshots [--snapshotter S] ARGS`."""
    sn = ["--snapshotter", snapshotter] if snapshotter else []
    return compat_ctr(daemon, "snapshots", *sn, *args, namespace=namespace)


@pytest.fixture
def daemon(daemon: DaemonProcess) -> DaemonProcess:
    """ctr's snapshot commands hold no lease: the start-up collection would take what they make."""
    daemon.wait_startup_collection()
    return daemon


@pytest.fixture
def target() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="dy-ctr-mnt-")
    try:
        yield path
    finally:
        unmount(path)
        assert mounts_under(path) == []
        os.rmdir(path)


def mount_printed(lines: str) -> None:
    """Run the `mount -t … -o …` lines ctr printed, as a user would."""
    for line in lines.splitlines():
        argv = shlex.split(line)
        assert argv[0] == "mount", line
        res = subprocess.run(argv, capture_output=True, text=True)
        assert res.returncode == 0, f"{line}: {res.stderr}"


@pytest.mark.parametrize("snapshotter", ["", "native"])
def test_ctr_snapshot_lifecycle(daemon: DaemonProcess, target: str, snapshotter: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return ctr(daemon, *args, snapshotter=snapshotter)

    # prepare with --target prints the mount command line; ctr adds a gc.root label.
    printed = ok(run("prepare", "--target", target, "base-tmp"))
    assert printed.startswith("mount -t bind ") and f" {target} -o rw,rbind" in printed
    assert ok(run("mounts", target, "base-tmp")) == printed
    mount_printed(printed)
    with open(os.path.join(target, "hello"), "w") as f:
        f.write("from ctr\n")
    unmount(target)
    ok(run("commit", "base", "base-tmp"))

    # A key with a space and a slash, as unpack and `images mount` use.
    key = "extract-1 sha256:ab/cd"
    mounts = json.loads(ok(run("prepare", "--mounts", key, "base")))
    assert mounts and mounts[0]["Type"] in ("overlay", "bind")
    printed = ok(run("mounts", target, key))
    mount_printed(printed)
    with open(os.path.join(target, "hello")) as f:
        assert f.read() == "from ctr\n"
    with open(os.path.join(target, "second"), "w") as f:
        f.write("2")
    unmount(target)
    ok(run("commit", "top", key))
    ok(run("view", "look", "top"))
    mount_printed(ok(run("mounts", target, "look")))
    assert sorted(os.listdir(target)) == ["hello", "second"]
    unmount(target)

    rows = [line.split() for line in ok(run("ls")).splitlines()]
    assert rows[0] == ["KEY", "PARENT", "KIND"]
    assert sorted(rows[1:]) == [["base", "Committed"], ["look", "top", "View"], ["top", "base", "Committed"]]

    info = json.loads(ok(run("info", "top")))
    assert (info["Name"], info["Parent"], info["Kind"]) == ("top", "base", "Committed")
    assert "containerd.io/gc.root" in info["Labels"]

    usage = [line.split() for line in ok(run("usage")).splitlines()]
    assert usage[0] == ["KEY", "SIZE", "INODES"]
    assert {r[0] for r in usage[1:]} == {"base", "look", "top"}
    in_bytes = [line.split() for line in ok(run("usage", "-b", "base")).splitlines()]
    assert in_bytes[1][0] == "base" and int(in_bytes[1][1]) > 0 and int(in_bytes[1][2]) >= 2

    tree = ok(run("tree")).splitlines()
    assert tree == [" base", "  \\_ top", "    \\_ look"]

    labelled = ok(run("label", "top", "foo=bar"))
    assert "foo=bar" in labelled
    assert json.loads(ok(run("info", "top")))["Labels"]["foo"] == "bar"
    ok(run("label", "top", "foo="))
    assert "foo" not in json.loads(ok(run("info", "top")))["Labels"]

    res = run("rm", "base")
    assert res.returncode == 1 and "cannot remove snapshot with child: failed precondition" in res.stderr
    res = run("rm", "nothere")
    assert res.returncode == 1 and "snapshot nothere does not exist: not found" in res.stderr
    res = run("prepare", "look", "top")
    assert res.returncode == 1 and 'snapshot "look": already exists' in res.stderr
    res = run("prepare", "x", "look")
    assert res.returncode == 1 and 'parent "look" is not committed snapshot: invalid argument' in res.stderr
    ok(run("rm", "look", "top"))
    ok(run("rm", "base"))
    assert ok(run("ls")).split() == ["KEY", "PARENT", "KIND"]


def test_ctr_namespaces_and_unknown_snapshotter(daemon: DaemonProcess) -> None:
    ok(ctr(daemon, "prepare", "only-here", namespace="one"))
    res = ctr(daemon, "info", "only-here", namespace="two")
    assert res.returncode == 1 and "snapshot only-here does not exist: not found" in res.stderr
    res = ctr(daemon, "ls", snapshotter="zfs")
    assert res.returncode == 1 and "snapshotter not loaded: zfs: invalid argument" in res.stderr
    ns = compat_ctr(daemon, "namespaces", "remove", "one")
    assert ns.returncode == 1 and 'snapshots on "overlayfs" snapshotter' in ns.stderr
    ok(ctr(daemon, "rm", "only-here", namespace="one"))
