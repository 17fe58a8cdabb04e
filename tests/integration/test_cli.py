"""The dock CLI as a user runs it: output, JSON, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.daemon import REPO, DaemonProcess


def dock(address: str, *args: str, namespace: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": address}
    if namespace:
        env["DOCKYARD_NAMESPACE"] = namespace
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True,
                          env=env, timeout=30, cwd=REPO)


def test_version(daemon: DaemonProcess) -> None:
    res = dock(daemon.address, "version")
    assert res.returncode == 0, res.stderr
    assert "Server:" in res.stdout and "UUID:" in res.stdout
    data = json.loads(dock(daemon.address, "--format", "json", "version").stdout)
    assert data["server"]["uuid"] == (daemon.root / "uuid").read_text().strip()


def test_namespaces_roundtrip(daemon: DaemonProcess) -> None:
    a = daemon.address
    assert dock(a, "namespaces", "create", "web", "team=red").returncode == 0
    res = dock(a, "namespaces", "create", "web")
    assert res.returncode == 1 and res.stderr.strip() == 'dock: namespace "web": already exists'
    assert dock(a, "ns", "label", "web", "tier=1").stdout.strip() == "team=red,tier=1"
    assert dock(a, "ns", "label", "web", "team=").stdout.strip() == "tier=1"
    table = dock(a, "namespaces", "ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "LABELS"] and table[1].split() == ["web", "tier=1"]
    assert dock(a, "ns", "ls", "-q").stdout == "web\n"
    data = json.loads(dock(a, "--format", "json", "ns", "ls").stdout)
    assert data == [{"name": "web", "labels": {"tier": "1"}}]
    res = dock(a, "namespaces", "rm", "web", "nothere")
    assert res.returncode == 1 and res.stdout.splitlines()[0] == "web"
    assert dock(a, "ns", "ls", "-q").stdout == ""


def test_invalid_name_is_reported(daemon: DaemonProcess) -> None:
    res = dock(daemon.address, "namespaces", "create", "Bad Name")
    assert res.returncode == 1 and "invalid argument" in res.stderr and "Traceback" not in res.stderr


def test_plugins_and_info(daemon: DaemonProcess) -> None:
    res = dock(daemon.address, "plugins", "ls")
    assert res.returncode == 0
    assert any(line.split()[:2] == ["io.containerd.grpc.v1", "namespaces"] for line in res.stdout.splitlines())
    data = json.loads(dock(daemon.address, "--format", "json", "plugins", "ls", "id==version").stdout)
    assert [p["id"] for p in data] == ["version"]
    info = json.loads(dock(daemon.address, "--format", "json", "info").stdout)
    assert info["pid"] == daemon.proc.pid
    shown = dict(line.split(":", 1) for line in dock(daemon.address, "info").stdout.splitlines())
    assert shown["Pid"].strip() == str(daemon.proc.pid)
    assert shown["Shim page merging"].strip() == info["ksm"] in ("on", "off", "unavailable")


def test_no_daemon_is_a_clear_message(tmp_path: Path) -> None:
    res = dock(str(tmp_path / "none.sock"), "version")
    assert res.returncode == 1
    assert "cannot connect to dockyardd" in res.stderr and "no such socket" in res.stderr
    assert "Traceback" not in res.stderr


def test_socket_not_accessible_is_a_clear_message(daemon: DaemonProcess) -> None:
    # root without CAP_DAC_OVERRIDE cannot open a 0660 socket owned by someone else
    os.chown(daemon.address, 1234, 1234)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": daemon.address}
    res = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
                          sys.executable, "-m", "dock.cli", "version"],
                         capture_output=True, text=True, env=env, timeout=30, cwd=REPO)
    assert res.returncode == 1, res.stdout
    assert "permission denied" in res.stderr.lower() and "Traceback" not in res.stderr
