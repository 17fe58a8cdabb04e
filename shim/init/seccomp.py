"""The OCI `linux.seccomp` object → a libseccomp filter (compile is pure; `install` loads it).

`compile_profile` validates the profile (with the checks of `dockyard_common.seccomp`, which reads
Docker's profiles) and turns actions, architectures and argument operators into libseccomp's
numbers (InvalidArgument for anything unknown or unsupported: SCMP_ACT_NOTIFY and a listener need
a seccomp agent we do not have). `prepare`, in the shim before it forks the
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
from dockyard_common.seccomp import ACTIONS, OPERATORS, WITH_ERRNO, ProfileError, check_action, check_arg, check_errno
from shim.init import seccomp_cache

# The architectures libseccomp names (seccomp_arch_resolve_name), as OCI's SCMP_ARCH_* lower-cased.
ARCHITECTURES = frozenset({
    "x86", "x86_64", "x32", "arm", "aarch64", "loongarch64", "m68k", "mips", "mips64", "mips64n32", "mipsel",
    "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "s390", "s390x", "parisc", "parisc64", "riscv64", "sh",
    "sheb",
})


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


def _action(name: Any, errno_ret: Any, where: str, errno_where: str) -> int:
    value = ACTIONS[check_action(name, where)]
    if name in WITH_ERRNO:
        code = check_errno(errno_ret, errno_where)
        value |= errno.EPERM if code is None else code
    return value


def compile_profile(profile: dict[str, Any]) -> Program:
    """Validate an OCI seccomp object and translate it; raises InvalidArgument."""
    try:
        return _compile(profile)
    except ProfileError as exc:
        raise InvalidArgument(f"spec: {exc}") from None


def _compile(profile: dict[str, Any]) -> Program:
    if profile.get("listenerPath"):
        raise ProfileError("linux.seccomp.listenerPath: seccomp notify is not supported")
    default = _action(profile.get("defaultAction"), profile.get("defaultErrnoRet"), "linux.seccomp.defaultAction",
                      "linux.seccomp.defaultErrnoRet")
    arches = []
    for i, arch in enumerate(profile.get("architectures") or []):
        if not isinstance(arch, str) or arch.removeprefix("SCMP_ARCH_").lower() not in ARCHITECTURES \
                or not arch.startswith("SCMP_ARCH_"):
            # libseccomp ignores a name it does not know: the filter would then miss that ABI.
            raise ProfileError(f"linux.seccomp.architectures[{i}]: unknown architecture {arch!r}")
        arches.append(arch.removeprefix("SCMP_ARCH_").lower())
    rules: list[Rule] = []
    for i, sc in enumerate(profile.get("syscalls") or []):
        where = f"linux.seccomp.syscalls[{i}]"
        if not isinstance(sc, dict):
            raise ProfileError(f"{where}: expected an object")
        names = sc.get("names") or []
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise ProfileError(f"{where}.names: expected a non-empty array of syscall names")
        action = _action(sc.get("action"), sc.get("errnoRet"), f"{where}.action", f"{where}.errnoRet")
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default action
        args = [check_arg(a, f"{where}.args[{j}]") for j, a in enumerate(sc.get("args") or [])]
        conds = [(a["index"], OPERATORS[a["op"]], a["value"], a["valueTwo"]) for a in args]
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
