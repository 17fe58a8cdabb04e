"""Seccomp profiles in Docker's format, resolved into OCI `linux.seccomp` objects.

A profile (our default lives in `seccomp_default.toml`, one comment per group) has Docker's
keys: `defaultAction`, `defaultErrnoRet`, `archMap` (the native architecture and the ones its
kernel also runs) and `syscalls` groups of `names`, `action`, optional `errnoRet` and `args`
(OCI's argument conditions), and `includes` / `excludes` by `caps` and `arches`. A group
applies to a container when it has every capability `includes.caps` names and none that
`excludes.caps` names, and the host's architecture passes `includes.arches` /
`excludes.arches` (Docker's names: amd64, x86, x32, arm64, arm). Resolving drops those keys,
as Docker does before the spec reaches the runtime:

    profile = default_profile()
    spec["linux"]["seccomp"] = profile.resolve(spec["process"]["capabilities"]["bounding"])

Loading checks the shape and raises ProfileError (a ValueError) with the place and the fault;
syscall names are not checked here: the runtime skips names its libseccomp does not know. The
checks of an action, an errno and an argument condition (`check_action`, `check_errno`,
`check_arg`) are the shim's too, when it compiles a spec's `linux.seccomp` for libseccomp.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard_common.jsonutil import json_value

# Actions and their libseccomp values (SCMP_ACT_*); ERRNO and TRACE carry a number in the low
# 16 bits. SCMP_ACT_NOTIFY needs a seccomp agent, which Dockyard does not have.
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
WITH_ERRNO = frozenset({"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"})
# Argument comparisons and their libseccomp values (enum scmp_compare).
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}
# uname's machine → (libseccomp's architecture, the name profiles use in `arches`)
MACHINES = {
    "x86_64": ("SCMP_ARCH_X86_64", "amd64"),
    "i386": ("SCMP_ARCH_X86", "x86"),
    "i686": ("SCMP_ARCH_X86", "x86"),
    "aarch64": ("SCMP_ARCH_AARCH64", "arm64"),
    "armv7l": ("SCMP_ARCH_ARM", "arm"),
    "armv6l": ("SCMP_ARCH_ARM", "arm"),
}
DEFAULT_FILE = "seccomp_default.toml"


class ProfileError(ValueError):
    """A profile that is not of the expected shape."""


@dataclass(frozen=True)
class Filter:
    """`includes` or `excludes` of a group."""

    caps: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()


@dataclass(frozen=True)
class Group:
    names: tuple[str, ...]
    action: str
    errno: int | None = None
    args: tuple[dict[str, Any], ...] = ()
    includes: Filter = field(default_factory=Filter)
    excludes: Filter = field(default_factory=Filter)

    def applies(self, caps: frozenset[str], arch: str) -> bool:
        if not all(c in caps for c in self.includes.caps) or any(c in caps for c in self.excludes.caps):
            return False
        if self.includes.arches and arch not in self.includes.arches:
            return False
        return arch not in self.excludes.arches


@dataclass(frozen=True)
class Profile:
    default_action: str
    default_errno: int | None
    arch_map: dict[str, tuple[str, ...]]  # native libseccomp arch → it and its sub-architectures
    groups: tuple[Group, ...]

    def resolve(self, capabilities: Iterable[str], machine: str | None = None) -> dict[str, Any]:
        """The OCI `linux.seccomp` object for a container with `capabilities` (its bounding set)
        on `machine` (uname's, this host's by default)."""
        machine = machine or os.uname().machine
        native, arch = MACHINES.get(machine, ("", machine))
        caps = frozenset(capabilities)
        out: dict[str, Any] = {"defaultAction": self.default_action}
        if self.default_errno is not None:
            out["defaultErrnoRet"] = self.default_errno
        if native in self.arch_map:
            out["architectures"] = list(self.arch_map[native])
        syscalls = []
        plain: dict[tuple[str, int | None], set[str]] = {}  # unconditional rules so far, by action
        for g in self.groups:
            if not g.applies(caps, arch):
                continue
            names = list(g.names)
            if not g.args:  # the same unconditional rule twice is noise to the runtime
                seen = plain.setdefault((g.action, g.errno), set())
                names = [n for n in names if n not in seen]
                seen.update(names)
                if not names:
                    continue
            rule: dict[str, Any] = {"names": names, "action": g.action}
            if g.errno is not None:
                rule["errnoRet"] = g.errno
            if g.args:
                rule["args"] = [dict(a) for a in g.args]
            syscalls.append(rule)
        out["syscalls"] = syscalls
        return out


def _where(ctx: str, key: str) -> str:
    return f"{ctx}.{key}" if ctx else key


def _strings(obj: dict[str, Any], key: str, ctx: str) -> tuple[str, ...]:
    value = obj.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProfileError(f"{_where(ctx, key)}: expected a list of names")
    return tuple(value)


def check_errno(value: Any, where: str) -> int | None:
    """An errno number (errnoRet, defaultErrnoRet), or None when not given."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ProfileError(f"{where}: expected an errno number, got {value!r}")
    return value


def check_action(value: Any, where: str) -> str:
    """An action's name, one of ACTIONS."""
    if value == "SCMP_ACT_NOTIFY":
        raise ProfileError(f"{where}: SCMP_ACT_NOTIFY is not supported")
    if not isinstance(value, str) or value not in ACTIONS:
        raise ProfileError(f"{where}: unknown action {value!r}")
    return value


def _u64(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ProfileError(f"{where}: expected an unsigned 64-bit integer, got {value!r}")
    return value


def check_arg(value: Any, where: str) -> dict[str, Any]:
    """An argument condition, with its defaults: {"index", "value", "valueTwo", "op"}."""
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: expected an object")
    index = value.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
        raise ProfileError(f"{where}.index: expected 0-5, got {index!r}")
    op = value.get("op")
    if op not in OPERATORS:
        raise ProfileError(f"{where}.op: unknown operator {op!r}")
    return {"index": index, "value": _u64(value.get("value", 0), f"{where}.value"),
            "valueTwo": _u64(value.get("valueTwo", 0), f"{where}.valueTwo"), "op": op}


def _filter(value: Any, where: str) -> Filter:
    if value is None:
        return Filter()
    if not isinstance(value, dict) or set(value) - {"caps", "arches", "minKernel"}:
        raise ProfileError(f"{where}: expected caps and/or arches")
    return Filter(_strings(value, "caps", where), _strings(value, "arches", where))


def _arg(value: Any, where: str) -> dict[str, Any]:
    # A profile is ours to read strictly: a key we do not know is a typo, not an extension.
    if not isinstance(value, dict) or set(value) - {"index", "value", "valueTwo", "op"}:
        raise ProfileError(f"{where}: expected index, value, valueTwo, op")
    return check_arg(value, where)


def parse(data: Any) -> Profile:
    """A profile from its decoded JSON or TOML document. A plain OCI `linux.seccomp` object
    (`architectures` instead of `archMap`, no includes) is a profile too."""
    if not isinstance(data, dict):
        raise ProfileError("a seccomp profile is an object")
    arch_map: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(data.get("archMap") or []):
        where = f"archMap[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), str):
            raise ProfileError(f"{where}: expected an architecture and its subArchitectures")
        arch_map[entry["architecture"]] = (entry["architecture"], *_strings(entry, "subArchitectures", where))
    if not arch_map and data.get("architectures"):  # an OCI object: one list for every host
        arches = _strings(data, "architectures", "")
        arch_map = {native: arches for native, _ in MACHINES.values()}
    groups = []
    for i, sc in enumerate(data.get("syscalls") or []):
        where = f"syscalls[{i}]"
        if not isinstance(sc, dict):
            raise ProfileError(f"{where}: expected an object")
        names = _strings(sc, "names", where) or ((sc["name"],) if isinstance(sc.get("name"), str) else ())
        if not names:
            raise ProfileError(f"{where}.names: expected a non-empty list of syscall names")
        args = sc.get("args") or []
        if not isinstance(args, list):
            raise ProfileError(f"{where}.args: expected a list")
        groups.append(Group(names, check_action(sc.get("action"), f"{where}.action"),
                            check_errno(sc.get("errnoRet"), f"{where}.errnoRet"),
                            tuple(_arg(a, f"{where}.args[{j}]") for j, a in enumerate(args)),
                            _filter(sc.get("includes"), f"{where}.includes"),
                            _filter(sc.get("excludes"), f"{where}.excludes")))
    return Profile(check_action(data.get("defaultAction"), "defaultAction"),
                   check_errno(data.get("defaultErrnoRet"), "defaultErrnoRet"), arch_map, tuple(groups))


MAX_PROFILE_BYTES = 4 << 20


def load(path: str | os.PathLike[str]) -> Profile:
    """A profile file: TOML when its name ends in .toml, else JSON (Docker's profiles)."""
    import tomllib  # here: the shim imports this module for its checks only

    p = Path(path)
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise ProfileError(f"seccomp profile {p}: {exc.strerror or exc}") from None
    if len(raw) > MAX_PROFILE_BYTES:  # Docker's default is ~20 KB; /dev/zero was read until memory ran out
        raise ProfileError(f"seccomp profile {p}: larger than {MAX_PROFILE_BYTES >> 20} MiB")
    if p.suffix != ".toml":
        data = json_value(raw, f"seccomp profile {p}", ProfileError)
    else:
        try:
            data = tomllib.loads(raw.decode())
        except RecursionError:
            raise ProfileError(f"seccomp profile {p}: not valid TOML: nested too deeply") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ProfileError(f"seccomp profile {p}: not valid TOML: {exc}") from None
    try:
        return parse(data)
    except ProfileError as exc:
        raise ProfileError(f"seccomp profile {p}: {exc}") from None


@functools.cache
def default_profile() -> Profile:
    """Dockyard's default profile (Docker's semantics), read once per process."""
    import tomllib
    from importlib import resources

    return parse(tomllib.loads(resources.files(__package__).joinpath(DEFAULT_FILE).read_text()))
