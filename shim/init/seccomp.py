"""The OCI `linux.seccomp` object → a libseccomp filter (compile is pure; `install` loads it).

`compile_profile` validates the profile and turns actions, architectures and argument operators
into libseccomp's numbers (InvalidArgument for anything unknown or unsupported: SCMP_ACT_NOTIFY
and a listener need a seccomp agent we do not have). `prepare`, in the shim before it forks the
init, gets the BPF program: from the cache (`seccomp_cache`), else built with
`dockyard_common.linux.SeccompFilter` and exported (and cached). `install`, in the init, loads the prepared
program with seccomp(2) as libseccomp's seccomp_load would, or (nothing prepared) builds and loads
the filter through libseccomp itself. Semantics follow runc:
syscall names libseccomp does not know are skipped, rules whose action is the default action are
skipped, conditions on distinct arguments are ANDed in one rule while several conditions on the
same argument become one rule each (ORed).
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from typing import Any

from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument
from shim.init import seccomp_cache

_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000,
    "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000,
    "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000,
    "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000,
    "SCMP_ACT_ALLOW": 0x7FFF0000,
}
_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")

_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}


@dataclass(frozen=True)
class Rule:
    action: int
    names: tuple[str, ...]
    args: tuple[tuple[int, int, int, int], ...] = ()  # (index, op, value, valueTwo)


@dataclass(frozen=True)
class Program:
    default_action: int
    architectures: tuple[str, ...]  # libseccomp names: "x86_64", "x86", "x32", ...
    rules: tuple[Rule, ...]


def _action(name: Any, errno_ret: Any, where: str) -> int:
    if name == "SCMP_ACT_NOTIFY":
        raise InvalidArgument(f"spec: {where}: SCMP_ACT_NOTIFY is not supported")
    if not isinstance(name, str) or name not in _ACTIONS:
        raise InvalidArgument(f"spec: {where}: unknown seccomp action {name!r}")
    value = _ACTIONS[name]
    if name in _WITH_ERRNO:
        code = errno.EPERM if errno_ret is None else errno_ret
        if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 0xFFFF:
            raise InvalidArgument(f"spec: {where}: bad errnoRet {code!r}")
        value |= code
    return value


def _u64(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise InvalidArgument(f"spec: {where}: expected an unsigned 64-bit integer, got {value!r}")
    return value


def compile_profile(profile: dict[str, Any]) -> Program:
    """Validate an OCI seccomp object and translate it; raises InvalidArgument."""
    if profile.get("listenerPath"):
        raise InvalidArgument("spec: linux.seccomp.listenerPath: seccomp notify is not supported")
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), "linux.seccomp.defaultAction")
    arches = []
    for i, arch in enumerate(profile.get("architectures") or []):
        if not isinstance(arch, str) or not arch.startswith("SCMP_ARCH_"):
            raise InvalidArgument(f"spec: linux.seccomp.architectures[{i}]: unknown architecture {arch!r}")
        arches.append(arch.removeprefix("SCMP_ARCH_").lower())
    rules: list[Rule] = []
    for i, sc in enumerate(profile.get("syscalls") or []):
        where = f"linux.seccomp.syscalls[{i}]"
        if not isinstance(sc, dict):
            raise InvalidArgument(f"spec: {where}: expected an object")
        names = sc.get("names") or []
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise InvalidArgument(f"spec: {where}.names: expected a non-empty array of syscall names")
        action = _action(sc.get("action"), sc.get("errnoRet"), f"{where}.action")
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default action
        conds = []
        for j, arg in enumerate(sc.get("args") or []):
            awhere = f"{where}.args[{j}]"
            if not isinstance(arg, dict):
                raise InvalidArgument(f"spec: {awhere}: expected an object")
            index = arg.get("index")
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
                raise InvalidArgument(f"spec: {awhere}.index: expected 0-5, got {index!r}")
            op = arg.get("op")
            if op not in _OPS:
                raise InvalidArgument(f"spec: {awhere}.op: unknown operator {op!r}")
            conds.append((index, _OPS[op], _u64(arg.get("value", 0), f"{awhere}.value"),
                          _u64(arg.get("valueTwo", 0), f"{awhere}.valueTwo")))
        indexes = [c[0] for c in conds]
        if len(set(indexes)) == len(indexes):
            rules.append(Rule(action, tuple(names), tuple(conds)))
        else:
            rules += [Rule(action, tuple(names), (c,)) for c in conds]
    return Program(default, tuple(arches), tuple(rules))


# Programs `prepare` got, by what they were made from; a forked init inherits them.
_prepared: dict[Program, seccomp_cache.Compiled] = {}
log = logging.getLogger("dockyard.shim.seccomp")


def _build(program: Program) -> L.SeccompFilter:
    f = L.SeccompFilter(program.default_action)
    try:
        for arch in program.architectures:
            f.add_arch(arch)
        # no_new_privs is the spec's own choice, applied by its own step.
        f.set_no_new_privs(False)
        for rule in program.rules:
            for name in rule.names:
                nr = f.resolve(name)
                if nr is not None:
                    f.add_rule(rule.action, nr, list(rule.args))
    except BaseException:
        f.release()
        raise
    return f


def prepare(program: Program, bundle: str | None = None) -> None:
    """Have `program`'s BPF ready for `install` (call it before forking the init): from this
    process's memory, the cache of `bundle`'s runtime dir, or libseccomp (then cached).

    Raises OSError only when libseccomp is missing. A program libseccomp refuses is left
    unprepared: `install` then fails on it in the init, reporting it as it always has."""
    L.load_libseccomp()
    if program in _prepared:
        return
    directory = seccomp_cache.cache_dir(bundle) if bundle else None
    # The key hashes the whole program: worth its cost only when there is a cache to look in.
    entry_key = seccomp_cache.key(program) if directory else ""
    entry = seccomp_cache.read(directory, entry_key) if directory else None
    if entry is not None:
        log.debug("seccomp: program %s from the cache", entry_key[:12])
    else:
        try:
            f = _build(program)
            try:
                entry = seccomp_cache.Compiled(*f.export())
            finally:
                f.release()
        except OSError as e:
            log.debug("seccomp: program %s not prepared: %s", entry_key[:12] or "(uncached)", e)
            return
        log.debug("seccomp: program %s built by libseccomp", entry_key[:12] or "(uncached)")
        if directory:
            seccomp_cache.write(directory, entry_key, entry)
    _prepared[program] = entry


def install(program: Program) -> None:
    """Load the filter into this process (and so into what it execs)."""
    entry = _prepared.get(program)
    if entry is not None:
        L.seccomp_load_program(entry.program, entry.flags)
        return
    f = _build(program)
    try:
        f.load()
    finally:
        f.release()
