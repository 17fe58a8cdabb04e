"""dock/runflags.py: Docker's run flags parsed, and what each does to containerd's default spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from dock import runflags
from dock.runflags import RLIM_INFINITY, DeviceRequest, RunFlags
from dockyard_common.errors import InvalidArgument
from dockyard_common.ocispec import default_spec


def test_ulimit() -> None:
    assert runflags.parse_ulimit("nofile=1024") == {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024}
    assert runflags.parse_ulimit("nproc=10:20") == {"type": "RLIMIT_NPROC", "soft": 10, "hard": 20}
    assert runflags.parse_ulimit("core=-1")["hard"] == RLIM_INFINITY
    assert runflags.parse_ulimit("memlock=64:unlimited")["hard"] == RLIM_INFINITY
    for bad in ("nofile", "nofile=", "x=1", "nofile=a", "nofile=5:3", "nofile=1.5", f"core={2**64}"):
        with pytest.raises(InvalidArgument):
            runflags.parse_ulimit(bad)


def test_device() -> None:
    assert runflags.parse_device("/dev/fuse") == DeviceRequest("/dev/fuse", "/dev/fuse", "rwm")
    assert runflags.parse_device("/dev/fuse:r") == DeviceRequest("/dev/fuse", "/dev/fuse", "r")
    assert runflags.parse_device("/dev/sda:/dev/xvda") == DeviceRequest("/dev/sda", "/dev/xvda", "rwm")
    assert runflags.parse_device("/dev/sda:/dev/x/../xvda:rw") == DeviceRequest("/dev/sda", "/dev/xvda", "rw")
    for bad in ("", "dev/fuse", "/dev/a:dev/b", "/dev/a:/dev/b:rwx", "/dev/a:/dev/b:rr", "/dev/a:/b:r:w"):
        with pytest.raises(InvalidArgument):
            runflags.parse_device(bad)


def test_env_file(tmp_path: Path) -> None:
    f = tmp_path / "env"
    f.write_text("# comment\n\n  A=1\nB=with = sign \"quoted\"\nC\nD\n")
    assert runflags.parse_env_file(str(f), {"C": "from us"}) == ["A=1", 'B=with = sign "quoted"', "C=from us", "D"]
    f.write_text("=x\n")
    with pytest.raises(InvalidArgument, match="line 1"):
        runflags.parse_env_file(str(f), {})
    f.write_bytes(b"A=\xff\n")
    with pytest.raises(InvalidArgument, match="UTF-8"):
        runflags.parse_env_file(str(f), {})
    with pytest.raises(InvalidArgument, match="--env-file"):
        runflags.parse_env_file(str(tmp_path / "missing"), {})
    # read as docker/cli reads it: lines end at \n only, a BOM goes; bounded; no NUL
    f.write_bytes(b"\xef\xbb\xbfA=1\x0bstill A\r\nB=2\x1c3\n")
    assert runflags.parse_env_file(str(f), {}) == ["A=1\x0bstill A", "B=2\x1c3"]
    with pytest.raises(InvalidArgument, match="larger than 1 MiB"):
        runflags.parse_env_file("/dev/zero", {})  # it read until memory ran out
    f.write_bytes(b"A=1\0x\n")
    with pytest.raises(InvalidArgument, match="line 1: holds a NUL byte"):
        runflags.parse_env_file(str(f), {})


def test_env_and_hostname_checks() -> None:
    runflags.check_env(["A=1", "B", "C="])
    for bad in (["=x"], [""], ["A B=1"], ["A=\0"]):
        with pytest.raises(InvalidArgument):
            runflags.check_env(bad)
    runflags.check_hostname("h" * 64)
    for name in ("h" * 65, "a/b", "a\0b"):
        with pytest.raises(InvalidArgument):
            runflags.check_hostname(name)


def test_sysctl_and_cpuset_and_namespaces() -> None:
    assert runflags.parse_sysctl("net.ipv4.ip_forward=1") == ("net.ipv4.ip_forward", "1")
    assert runflags.parse_sysctl("kernel.shmmax=5") == ("kernel.shmmax", "5")
    assert runflags.parse_sysctl("fs.mqueue.msg_max=20") == ("fs.mqueue.msg_max", "20")
    for bad in ("kernel.hostname=x", "vm.swappiness=1", "net.ipv4.ip_forward", "=1", "net../x=1"):
        with pytest.raises(InvalidArgument):
            runflags.parse_sysctl(bad)
    assert runflags.parse_cpuset("0-2,4") == "0-2,4"
    for bad in ("a", "1-", "3-1", "1,,2"):
        with pytest.raises(InvalidArgument):
            runflags.parse_cpuset(bad)
    assert runflags.parse_host_namespace("--pid", "host") == "host"
    assert runflags.parse_host_namespace("--pid", "private") == ""
    with pytest.raises(InvalidArgument):
        runflags.parse_host_namespace("--ipc", "container:x")
    assert runflags.parse_no_new_privileges("no-new-privileges") is True
    assert runflags.parse_no_new_privileges("no-new-privileges:false") is False
    assert runflags.parse_no_new_privileges("seccomp=unconfined") is None
    with pytest.raises(InvalidArgument):
        runflags.parse_no_new_privileges("no-new-privileges=1")
    assert runflags.parse_entrypoint(None) is None
    assert runflags.parse_entrypoint("") == []
    assert runflags.parse_entrypoint("/bin/sh -c") == ["/bin/sh -c"]  # one executable, as Docker


def _apply(flags: RunFlags, host_net: bool = False) -> dict:  # type: ignore[type-arg]
    spec = default_spec("default", "c1")
    runflags.apply(spec, flags, host_net=host_net, lookup_group={"audio": 29}.get)
    return spec


def test_apply() -> None:
    spec = _apply(RunFlags(ulimits=[runflags.parse_ulimit("nofile=10:20"), runflags.parse_ulimit("core=0")],
                           sysctls={"net.core.somaxconn": "10"}, group_add=["audio", "7", "29"], shm_size=1 << 20,
                           cpu_shares=512, cpuset_cpus="0", no_new_privileges=False))
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 20},
                                          {"type": "RLIMIT_CORE", "soft": 0, "hard": 0}]
    assert spec["linux"]["sysctl"] == {"net.core.somaxconn": "10"}
    assert spec["process"]["user"]["additionalGids"] == [29, 7]
    shm = next(m for m in spec["mounts"] if m["destination"] == "/dev/shm")
    assert "size=1024k" in shm["options"] and "size=65536k" not in shm["options"]
    assert spec["linux"]["resources"]["cpu"] == {"shares": 512, "cpus": "0"}
    assert spec["process"]["noNewPrivileges"] is False
    with pytest.raises(InvalidArgument, match="no such group"):
        _apply(RunFlags(group_add=["video"]))
    with pytest.raises(InvalidArgument, match="host's network"):
        _apply(RunFlags(sysctls={"net.core.somaxconn": "10"}), host_net=True)
    with pytest.raises(InvalidArgument, match="IPC"):
        _apply(RunFlags(sysctls={"kernel.shmmax": "10"}, ipc="host"))
    with pytest.raises(InvalidArgument, match="2 to 262144"):
        _apply(RunFlags(cpu_shares=1))


def test_host_namespaces_and_swap() -> None:
    spec = _apply(RunFlags(pid="host", ipc="host", shm_size=1 << 20))
    kinds = {n["type"] for n in spec["linux"]["namespaces"]}
    assert "pid" not in kinds and "ipc" not in kinds
    shm = [m for m in spec["mounts"] if m["destination"] == "/dev/shm"]
    assert shm == [{"destination": "/dev/shm", "type": "bind", "source": "/dev/shm",
                    "options": ["rbind", "nosuid", "noexec", "nodev"]}]  # the host's: --shm-size has no say
    spec = default_spec("default", "c1")
    spec["linux"]["resources"]["memory"] = {"limit": 100}
    runflags.apply(spec, RunFlags(memory_swap=-1), host_net=False, lookup_group=lambda _: None)
    assert spec["linux"]["resources"]["memory"] == {"limit": 100, "swap": -1}
    with pytest.raises(InvalidArgument, match="needs --memory"):
        _apply(RunFlags(memory_swap=200))


def test_devices_on_the_spec() -> None:
    spec = _apply(RunFlags(devices=[DeviceRequest("/dev/null", "/dev/mynull", "r")]))
    entry = spec["linux"]["devices"][-1]
    assert (entry["path"], entry["type"], entry["major"], entry["minor"]) == ("/dev/mynull", "c", 1, 3)
    assert spec["linux"]["resources"]["devices"][-1] == {"allow": True, "type": "c", "major": 1, "minor": 3,
                                                         "access": "r"}
    with pytest.raises(InvalidArgument, match="not a character or block device"):
        _apply(RunFlags(devices=[DeviceRequest("/etc/hostname", "/dev/x", "r")]))


def test_stop_settings() -> None:
    from dock.stopping import DEFAULT_STOP_TIMEOUT, STOP_TIMEOUT_LABEL, signal_name, stop_timeout

    assert signal_name("hup") == signal_name("SIGHUP") == signal_name("1") == "SIGHUP"
    with pytest.raises(InvalidArgument):
        signal_name("NOPE")
    with pytest.raises(InvalidArgument):
        signal_name("99999")
    assert stop_timeout({}, None) == DEFAULT_STOP_TIMEOUT
    assert stop_timeout({STOP_TIMEOUT_LABEL: "3"}, None) == 3
    assert stop_timeout({STOP_TIMEOUT_LABEL: "3"}, 0) == 0  # -t wins, even 0
    assert stop_timeout({STOP_TIMEOUT_LABEL: "soon"}, None) == DEFAULT_STOP_TIMEOUT  # another client's label
