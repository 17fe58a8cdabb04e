"""dockyard_common: the default seccomp profile (data), its resolution for capabilities and
architectures, capability arithmetic, and what dock/oci.py makes of --privileged, --cap-add,
--cap-drop and --security-opt."""

from __future__ import annotations

import ast
import errno
import json
from pathlib import Path
from typing import Any

import pytest

from dock import oci
from dock.oci import ImageConfig, SpecOptions
from dockyard_common import capabilities, seccomp
from dockyard_common.errors import InvalidArgument
from shim.init.seccomp import compile_profile

COMMON = Path(seccomp.__file__).parent
# Refused to a container with the default capabilities, whatever else changes in the profile.
DANGEROUS = ["init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot", "mount",
             "umount2", "pivot_root", "fsopen", "move_mount", "unshare", "setns", "keyctl", "add_key", "request_key",
             "bpf", "perf_event_open", "userfaultfd", "swapon", "acct", "settimeofday", "clock_settime", "iopl",
             "open_by_handle_at", "io_uring_setup", "kcmp", "syslog", "sethostname"]
ORDINARY = ["read", "write", "openat", "close", "mmap", "futex", "clone", "execve", "socket", "connect", "epoll_wait",
            "rt_sigaction", "getpid", "exit_group", "wait4", "chown", "setuid", "statx", "getrandom", "ioctl",
            "arch_prctl", "rseq", "chroot"]


def allowed(resolved: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Syscall name → the ALLOW rules naming it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rule in resolved["syscalls"]:
        if rule["action"] == "SCMP_ACT_ALLOW":
            for name in rule["names"]:
                out.setdefault(name, []).append(rule)
    return out


def unconditional(resolved: dict[str, Any]) -> set[str]:
    return {n for n, rules in allowed(resolved).items() if any("args" not in r for r in rules)}


def test_the_default_refuses_with_eperm_on_x86_and_arm() -> None:
    x86 = seccomp.default_profile().resolve(capabilities.DEFAULT, "x86_64")
    assert x86["defaultAction"] == "SCMP_ACT_ERRNO" and x86["defaultErrnoRet"] == errno.EPERM
    assert x86["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    arm = seccomp.default_profile().resolve(capabilities.DEFAULT, "aarch64")
    assert arm["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "cacheflush" in unconditional(arm) and "cacheflush" not in unconditional(x86)
    assert "arch_prctl" in unconditional(x86) and "arch_prctl" not in unconditional(arm)
    assert "architectures" not in seccomp.default_profile().resolve(capabilities.DEFAULT, "riscv64")


def test_dangerous_syscalls_are_refused_and_ordinary_ones_allowed() -> None:
    resolved = seccomp.default_profile().resolve(capabilities.DEFAULT, "x86_64")
    names = set(allowed(resolved))
    assert not set(DANGEROUS) & unconditional(resolved)
    assert set(DANGEROUS) - {"clone"} <= set(DANGEROUS) - names
    assert set(ORDINARY) - {"clone"} <= unconditional(resolved)
    assert len(unconditional(resolved)) > 300  # an allow-list of what ordinary programs use


def test_argument_filters() -> None:
    resolved = seccomp.default_profile().resolve(capabilities.DEFAULT, "x86_64")
    (clone,) = allowed(resolved)["clone"]
    assert clone["args"] == [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    (personality,) = allowed(resolved)["personality"]
    assert sorted(a["value"] for a in personality["args"]) == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]
    assert {a["op"] for a in personality["args"]} == {"SCMP_CMP_EQ"}
    clone3 = [r for r in resolved["syscalls"] if r["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}]


@pytest.mark.parametrize(("cap", "syscalls"), [
    ("CAP_SYS_ADMIN", ["mount", "umount2", "unshare", "setns", "sethostname", "bpf", "perf_event_open", "clone3"]),
    ("CAP_SYS_MODULE", ["init_module", "finit_module", "delete_module"]),
    ("CAP_SYS_BOOT", ["reboot"]),
    ("CAP_SYS_PTRACE", ["kcmp", "pidfd_getfd", "process_madvise"]),
    ("CAP_SYS_TIME", ["settimeofday", "clock_settime"]),
    ("CAP_SYS_PACCT", ["acct"]),
    ("CAP_SYS_RAWIO", ["iopl", "ioperm"]),
    ("CAP_SYS_NICE", ["mbind", "set_mempolicy"]),
    ("CAP_SYSLOG", ["syslog"]),
    ("CAP_BPF", ["bpf"]),
    ("CAP_PERFMON", ["perf_event_open"]),
    ("CAP_DAC_READ_SEARCH", ["open_by_handle_at"]),
])
def test_a_capability_brings_its_syscalls(cap: str, syscalls: list[str]) -> None:
    profile = seccomp.default_profile()
    without = unconditional(profile.resolve(capabilities.DEFAULT, "x86_64"))
    with_cap = unconditional(profile.resolve([*capabilities.DEFAULT, cap], "x86_64"))
    assert not set(syscalls) & without
    assert set(syscalls) <= with_cap


def test_sys_admin_lifts_the_clone_filters() -> None:
    resolved = seccomp.default_profile().resolve([*capabilities.DEFAULT, "CAP_SYS_ADMIN"], "x86_64")
    assert all("args" not in r for r in allowed(resolved)["clone"])
    assert not [r for r in resolved["syscalls"] if r["action"] == "SCMP_ACT_ERRNO"]


def test_each_name_once_per_action() -> None:
    resolved = seccomp.default_profile().resolve([*capabilities.current(), "CAP_SYS_PTRACE"], "x86_64")
    plain = [n for r in resolved["syscalls"] if "args" not in r and r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]]
    assert len(plain) == len(set(plain))


def test_the_shim_compiles_what_dock_writes() -> None:
    for caps in (capabilities.DEFAULT, capabilities.ALL):
        program = compile_profile(seccomp.default_profile().resolve(caps))
        assert program.default_action == 0x00050000 | errno.EPERM
        assert program.rules


def test_every_group_has_a_comment() -> None:
    lines = (COMMON / seccomp.DEFAULT_FILE).read_text().splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("[[")]
    assert len(headers) == len(seccomp.default_profile().groups) + len(seccomp.default_profile().arch_map)
    for i in headers:
        above = next(line for line in reversed(lines[:i]) if line.strip())
        assert above.startswith("#"), f"line {i + 1}: {lines[i]} has no comment"


def test_dockyard_common_imports_none_of_the_programs() -> None:
    for path in COMMON.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for mod in mods:
                assert mod.split(".")[0] not in {"supervisor", "shim", "dock"}, f"{path.name} imports {mod}"


# -- profiles from files ----------------------------------------------------------------------------


def test_a_docker_json_profile_and_an_oci_object_load(tmp_path: Path) -> None:
    docker = tmp_path / "p.json"
    docker.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                                                        "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                     {"names": ["x"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["amd64"]}}]}))
    got = seccomp.load(docker).resolve(["CAP_KILL"], "x86_64")
    assert got == {"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
                   "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}
    oci_obj = tmp_path / "o.json"
    oci_obj.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                                   "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}))
    got = seccomp.load(oci_obj).resolve([], "x86_64")
    assert got["architectures"] == ["SCMP_ARCH_X86_64"] and got["syscalls"][0]["errnoRet"] == 13
    toml = tmp_path / "p.toml"
    toml.write_text('defaultAction = "SCMP_ACT_LOG"\n')
    assert seccomp.load(toml).resolve([])["defaultAction"] == "SCMP_ACT_LOG"


@pytest.mark.parametrize(("text", "words"), [
    ("{", "not valid JSON"),
    ("[]", "is an object"),
    ('{"defaultAction": "SCMP_ACT_MAYBE"}', "defaultAction: unknown action"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}', "syscalls[0].names"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",'
     ' "args": [{"index": 6, "op": "SCMP_CMP_EQ"}]}]}', "args[0].index"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",'
     ' "args": [{"index": 0, "op": "SCMP_CMP_SORTA"}]}]}', "unknown operator"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}', "errno number"),
    ('{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ALLOW",'
     ' "includes": {"kernel": "6"}}]}', "includes"),
])
def test_bad_profiles_are_refused_in_words(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(seccomp.ProfileError, match=r"bad\.json") as info:
        seccomp.load(path)
    assert words in str(info.value)


def test_a_profile_file_is_read_bounded() -> None:
    with pytest.raises(seccomp.ProfileError, match="/dev/zero: larger than 4 MiB"):
        seccomp.load("/dev/zero")  # it was read until memory ran out


# -- capabilities -------------------------------------------------------------------------------------


def test_tweak_as_docker() -> None:
    base = list(capabilities.DEFAULT)
    assert capabilities.tweak(base, [], []) == base
    got = capabilities.tweak(base, ["net_admin", "CAP_SYS_TIME"], ["chown", "KILL"])
    assert got == [c for c in base if c not in ("CAP_CHOWN", "CAP_KILL")] + ["CAP_NET_ADMIN", "CAP_SYS_TIME"]
    assert capabilities.tweak(base, ["KILL"], ["ALL"]) == ["CAP_KILL"]
    assert capabilities.tweak(base, ["ALL"], ["SYS_ADMIN"]) == [c for c in capabilities.current()
                                                                 if c != "CAP_SYS_ADMIN"]
    assert "CAP_CHOWN" in capabilities.tweak(base, ["CHOWN"], ["CHOWN"])  # Docker: the add wins
    with pytest.raises(capabilities.UnknownCapability, match="SYS_MAGIC"):
        capabilities.tweak(base, ["SYS_MAGIC"], [])


# -- the spec dock builds ------------------------------------------------------------------------------


def spec_for(opts: SpecOptions, devices: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return oci.build_spec("ns", "0123456789abcdef", ImageConfig(cmd=["sh"]), opts, None, host_hostname="hosty",
                          devices=devices)


def test_defaults_are_dockers() -> None:
    spec = spec_for(SpecOptions())
    assert spec["hostname"] == "0123456789ab"
    assert spec["process"]["capabilities"]["bounding"] == list(capabilities.DEFAULT)
    assert spec["linux"]["seccomp"] == seccomp.default_profile().resolve(capabilities.DEFAULT)
    assert spec_for(SpecOptions(net="host"))["hostname"] == "hosty"
    assert spec_for(SpecOptions(hostname="boxy"))["hostname"] == "boxy"


def test_cap_options_reach_the_spec_and_its_profile() -> None:
    spec = spec_for(SpecOptions(cap_add=["SYS_ADMIN"], cap_drop=["NET_RAW"]))
    caps = spec["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"]
    assert "CAP_SYS_ADMIN" in caps["bounding"] and "CAP_NET_RAW" not in caps["bounding"]
    assert "mount" in unconditional(spec["linux"]["seccomp"])
    with pytest.raises(InvalidArgument, match="unknown capability"):
        spec_for(SpecOptions(cap_add=["NOPE"]))


def test_unconfined_and_profile_paths(tmp_path: Path) -> None:
    assert "seccomp" not in spec_for(SpecOptions(seccomp="unconfined"))["linux"]
    path = tmp_path / "p.json"
    path.write_text('{"defaultAction": "SCMP_ACT_LOG"}')
    assert spec_for(SpecOptions(seccomp=str(path)))["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_LOG"
    with pytest.raises(InvalidArgument, match="No such file"):
        spec_for(SpecOptions(seccomp=str(tmp_path / "none.json")))


def test_privileged() -> None:
    dev = [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o644, "uid": 0, "gid": 0}]
    spec = spec_for(SpecOptions(privileged=True, cap_drop=["ALL"], seccomp="default"), devices=dev)
    linux = spec["linux"]
    assert spec["process"]["capabilities"]["bounding"] == capabilities.current()
    assert "seccomp" not in linux
    assert linux["maskedPaths"] == [] and linux["readonlyPaths"] == []
    assert linux["devices"] == dev and linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    sysfs = next(m for m in spec["mounts"] if m["type"] == "sysfs")
    assert "ro" not in sysfs["options"]


def test_host_devices_skip_what_each_container_has(tmp_path: Path) -> None:
    found = {d["path"]: d for d in oci.host_devices()}
    assert "/dev/null" in found and found["/dev/null"]["type"] == "c" and found["/dev/null"]["major"] == 1
    assert not [p for p in found if p.startswith(("/dev/pts/", "/dev/shm/")) or p == "/dev/console"]
    assert oci.host_devices(tmp_path / "missing") == []


@pytest.mark.parametrize(("text", "want"), [("seccomp=unconfined", "unconfined"), ("seccomp:/p.json", "/p.json"),
                                            ("seccomp=/a=b.json", "/a=b.json")])
def test_parse_security_opt(text: str, want: str) -> None:
    assert oci.parse_security_opt(text) == want


@pytest.mark.parametrize("text", ["apparmor=unconfined", "seccomp=", "no-new-privileges", ""])
def test_parse_security_opt_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument, match="seccomp=unconfined"):
        oci.parse_security_opt(text)
