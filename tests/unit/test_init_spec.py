"""OCI spec parsing and validation (shim.init.spec), and the `runc spec` defaults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from shim.init.spec import default_spec, parse_process, parse_spec


def spec(**changes: Any) -> dict[str, Any]:
    s = default_spec()
    s["process"]["terminal"] = False
    s.update(changes)
    return s


def test_default_spec_parses() -> None:
    s = parse_spec(json.dumps(default_spec()))
    assert s.process is not None
    assert s.process.args == ("sh",)
    assert s.process.capabilities is not None
    assert s.process.capabilities.bounding == ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")
    assert s.process.rlimits[0].type == "RLIMIT_NOFILE"
    assert s.root.readonly
    assert [ns.type for ns in s.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount"]
    assert s.new_namespace("pid") and not s.new_namespace("user")
    assert "/proc/kcore" in s.linux.masked_paths
    assert s.mounts[0].destination == "/proc"
    assert s.process.getenv("PATH", ) == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_bytes_and_dict_inputs_agree() -> None:
    d = default_spec()
    assert parse_spec(json.dumps(d).encode()) == parse_spec(d)


@pytest.mark.skipif(shutil.which("runc") is None, reason="runc not installed")
@pytest.mark.parametrize("rootless", [False, True])
def test_default_spec_matches_runc(tmp_path: Path, rootless: bool) -> None:
    args = ["runc", "spec"] + (["--rootless"] if rootless else [])
    subprocess.run(args, cwd=tmp_path, check=True, capture_output=True)
    expected = json.loads((tmp_path / "config.json").read_text())
    assert default_spec(rootless=rootless) == expected


def test_default_spec_is_a_fresh_copy() -> None:
    a = default_spec()
    a["process"]["args"].append("x")
    assert default_spec()["process"]["args"] == ["sh"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[]", "expected an object"),
        ("{}", "ociVersion: missing"),
        (json.dumps({"ociVersion": "1.0.2"}), "root.path: missing"),
    ],
)
def test_bad_documents(data: str | bytes, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        parse_spec(data)


def _with(path: str, value: Any) -> dict[str, Any]:
    s = spec()
    node: Any = s
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return s


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("process.user.uid", "x", r"process\.user\.uid: expected an integer"),
        ("process.user.uid", -1, r"process\.user\.uid: -1 out of range"),
        ("process.user.gid", True, r"process\.user\.gid: expected an integer"),
        ("process.args", [], r"process\.args: must not be empty"),
        ("process.args", "sh", r"process\.args: expected an array"),
        ("process.args", ["sh", 1], r"process\.args\[1\]: expected a string"),
        ("process.cwd", "relative", r"process\.cwd: 'relative' is not an absolute path"),
        ("process.terminal", "yes", r"process\.terminal: expected a boolean"),
        ("process.capabilities.bounding", ["CAP_NOPE"], r"unknown capability 'CAP_NOPE'"),
        ("process.rlimits", [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}], "unknown rlimit"),
        ("process.rlimits", [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}], "exceeds hard limit"),
        ("process.oomScoreAdj", 5000, "out of range"),
        ("linux.namespaces", [{"type": "pid"}, {"type": "bogus"}],
         r"linux\.namespaces\[1\]\.type: unknown namespace type 'bogus'"),
        ("linux.namespaces", [{"type": "pid"}, {"type": "pid"}], "duplicate namespace 'pid'"),
        ("linux.namespaces", [{"type": "net", "path": "/x"}], "unknown namespace type 'net'"),
        ("linux.namespaces", [{"type": "network", "path": "rel"}], "not an absolute path"),
        ("linux.maskedPaths", ["proc/kcore"], "not an absolute path"),
        ("linux.rootfsPropagation", "sideways", "unknown propagation"),
        ("linux.devices", [{"path": "/dev/x", "type": "z"}], "unknown device type"),
        ("linux.sysctl", {"net.ipv4.ip_forward": 1}, "sysctl"),
        ("linux.sysctl", {"../../etc": "1"}, "sysctl"),
        ("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}], "need a user namespace"),
        ("mounts", [{"destination": "proc", "type": "proc"}], r"mounts\[0\]\.destination"),
        ("mounts", [{"destination": "/x", "options": "ro"}], r"mounts\[0\]\.options: expected an array"),
        ("hostname", 7, "hostname: expected a string"),
        ("hostname", "h" * 65, "hostname: expected at most 64 bytes"),
        ("domainname", "a\0b", "domainname: expected at most 64 bytes, no NUL"),
        ("annotations", {"a": 1}, r"annotations\.a"),
    ],
)
def test_bad_fields_are_named(path: str, value: Any, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        parse_spec(_with(path, value))


def test_new_user_namespace_needs_mappings() -> None:
    s = spec()
    s["linux"]["namespaces"].append({"type": "user"})
    with pytest.raises(InvalidArgument, match="needs uid and gid mappings"):
        parse_spec(s)
    s["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    s["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    parsed = parse_spec(s)
    assert parsed.new_namespace("user")
    assert parsed.linux.uid_mappings[0].host_id == 100000


def test_joined_user_namespace_needs_no_mappings() -> None:
    s = spec()
    s["linux"]["namespaces"].append({"type": "user", "path": "/proc/1/ns/user"})
    parsed = parse_spec(s)
    assert not parsed.new_namespace("user")
    assert parsed.linux.namespace("user") is not None


def test_hostname_needs_a_new_uts_namespace() -> None:
    s = spec()
    s["linux"]["namespaces"] = [{"type": "mount"}]
    with pytest.raises(InvalidArgument, match="new uts namespace"):
        parse_spec(s)


def test_rootless_default_spec_maps_the_caller() -> None:
    s = parse_spec(default_spec(rootless=True))
    assert s.new_namespace("user") and not s.new_namespace("network")
    assert s.linux.uid_mappings[0].host_id == os.geteuid()
    assert s.mounts[5].type == "none" and "rbind" in s.mounts[5].options


def test_parse_process_for_exec() -> None:
    p = parse_process(json.dumps({"args": ["ls", "-l"], "cwd": "/tmp", "env": ["A=1"],
                                  "user": {"uid": 1000, "gid": 1000, "additionalGids": [5], "umask": 0o27},
                                  "consoleSize": {"height": 24, "width": 80}, "terminal": True}))
    assert p.args == ("ls", "-l")
    assert p.user.additional_gids == (5,)
    assert p.user.umask == 0o27
    assert p.console_size == (24, 80)
    assert p.getenv("A") == "1" and p.getenv("B") is None
    with pytest.raises(InvalidArgument, match=r"process\.args"):
        parse_process("{}")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        parse_process("nope")
