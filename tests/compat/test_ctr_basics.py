"""The real `ctr` (Debian's containerd package) against dockyardd: version, namespaces, plugins."""

from __future__ import annotations

import pytest

from tests.compat.conftest import ctr
from tests.daemon import DaemonProcess

pytestmark = pytest.mark.compat


def test_ctr_version(daemon: DaemonProcess) -> None:
    res = ctr(daemon, "version")
    assert res.returncode == 0, res.stderr
    server = res.stdout.split("Server:")[1]
    uuid = (daemon.root / "uuid").read_text().strip()
    assert "Version:  0." in server or "Version:" in server
    assert f"UUID: {uuid}" in server


def test_ctr_namespaces(daemon: DaemonProcess) -> None:
    assert ctr(daemon, "namespaces", "ls").stdout.split() == ["NAME", "LABELS"]
    res = ctr(daemon, "namespaces", "create", "tapother", "lbl=1")
    assert res.returncode == 0, res.stderr
    res = ctr(daemon, "namespaces", "create", "tapother")
    assert res.returncode == 1 and 'namespace "tapother": already exists' in res.stderr
    assert ctr(daemon, "namespaces", "label", "tapother", "lbl=2", "x=y").returncode == 0
    rows = ctr(daemon, "namespaces", "ls").stdout.splitlines()
    assert rows[1].split() == ["tapother", "lbl=2,x=y"]
    assert ctr(daemon, "namespaces", "ls", "-q").stdout.split() == ["tapother"]
    res = ctr(daemon, "namespaces", "remove", "tapother")
    assert res.returncode == 0 and res.stdout.strip() == "tapother"
    # containerd's ctr ignores NOT_FOUND here (rc 0) and still prints the name
    res = ctr(daemon, "namespaces", "remove", "tapother")
    assert res.returncode == 0, res.stderr
    assert ctr(daemon, "namespaces", "ls", "-q").stdout == ""


def test_ctr_namespace_invalid_name(daemon: DaemonProcess) -> None:
    res = ctr(daemon, "namespaces", "create", "bad_")
    assert res.returncode == 1 and "invalid argument" in res.stderr


def test_ctr_plugins(daemon: DaemonProcess) -> None:
    res = ctr(daemon, "plugins", "ls")
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()]
    assert rows[0] == ["TYPE", "ID", "PLATFORMS", "STATUS"]
    assert ["io.containerd.grpc.v1", "namespaces", "-", "ok"] in rows
    assert ["io.containerd.metadata.v1", "sqlite", "-", "ok"] in rows
    detailed = ctr(daemon, "plugins", "ls", "-d")
    assert detailed.returncode == 0 and "Type:" in detailed.stdout
    filtered = ctr(daemon, "plugins", "ls", "id==version")
    assert [r.split()[1] for r in filtered.stdout.splitlines()[1:]] == ["version"]
