"""Translating OCI seccomp profiles for libseccomp (shim.init.seccomp.compile_profile)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from shim.init.seccomp import Rule, compile_profile

ALLOW, ERRNO, KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000


def test_actions_arches_and_errnos() -> None:
    p = compile_profile({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["ptrace"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["uname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},  # = the default: skipped
        ],
    })
    assert p.default_action == ERRNO | 38
    assert p.architectures == ("x86_64", "x86", "x32")
    assert p.rules == (Rule(ALLOW, ("read", "write")), Rule(ERRNO | 13, ("mkdir",)), Rule(KILL_PROCESS, ("ptrace",)))


def test_errno_defaults_to_eperm() -> None:
    p = compile_profile({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO"}]})
    assert p.rules[0].action == ERRNO | 1


def test_argument_conditions() -> None:
    p = compile_profile({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"},
                  {"index": 1, "value": 5, "op": "SCMP_CMP_NE"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
    ]})
    assert p.rules[0].args == ((0, 4, 0, 0),)
    assert p.rules[1].args == ((0, 7, 0x7E020000, 0), (1, 1, 5, 0))  # distinct args: ANDed in one rule
    assert [r.args for r in p.rules[2:]] == [((0, 4, 1, 0),), ((0, 4, 2, 0),)]  # same arg: one rule each


@pytest.mark.parametrize(("profile", "fragment"), [
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "not supported"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock"}, "notify is not supported"),
    ({"defaultAction": "SCMP_ACT_MAYBE"}, "unknown action"),
    ({}, "unknown action None"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x86_64"]}, "unknown architecture"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}, "names"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",
                                                      "errnoRet": -1}]}, "errnoRet: expected an errno number"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",
                                                      "args": [{"index": 6, "op": "SCMP_CMP_EQ"}]}]}, "index"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",
                                                      "args": [{"index": 0, "op": "SCMP_CMP_ALMOST"}]}]},
     "unknown operator"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO",
                                                      "args": [{"index": 0, "op": "SCMP_CMP_EQ", "value": -1}]}]},
     "unsigned 64-bit"),
])
def test_bad_profiles(profile: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        compile_profile(profile)
