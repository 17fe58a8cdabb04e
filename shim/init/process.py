"""The process attributes of a container process: the kernel side of `plan.py`'s process steps.

Shared by the container's init and by processes exec'd into a running container. Runs in the
child, in the container's namespaces (after pivot_root for the init), as container root until
`set_user`.
"""

from __future__ import annotations

import errno
import os
import resource
import stat
from collections.abc import Iterable, Sequence

from dockyard_common import linux as L
from dockyard_common.errors import FailedPrecondition, NotFound, error_text
from shim.init.spec import Rlimit

_RLIMIT_NUMBERS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}


def _rlim(value: int) -> int:
    # The spec's "unlimited" is 2^64-1; Python's resource module spells it RLIM_INFINITY.
    return resource.RLIM_INFINITY if value >= 2**63 else value


def set_rlimits(rlimits: Iterable[Rlimit]) -> None:
    for r in rlimits:
        try:
            resource.setrlimit(_RLIMIT_NUMBERS[r.type], (_rlim(r.soft), _rlim(r.hard)))
        except (OSError, ValueError) as e:
            code = e.errno if isinstance(e, OSError) and e.errno else errno.EPERM
            raise OSError(code, f"setrlimit({r.type}, soft={r.soft}, hard={r.hard}): {error_text(e)}") from None


def set_oom_score_adj(value: int) -> None:
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(value))


def set_no_new_privs() -> None:
    L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)


def drop_bounding_set(keep: Iterable[int]) -> None:
    kept = set(keep)
    for cap in range(L.last_cap() + 1):
        if cap not in kept:
            L.cap_bound_drop(cap)


def _mask(caps: Iterable[int]) -> int:
    out = 0
    for c in caps:
        out |= 1 << c
    return out


def setgroups_allowed() -> bool:
    """False when this user namespace was made with setgroups "deny"."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() != "deny"
    except OSError:
        return True


def set_user(uid: int, gid: int, additional_gids: Sequence[int], *, setgroups: bool) -> None:
    # Keep the permitted set across the uid change (it is cleared when leaving uid 0); the
    # spec's capability sets are applied right after by `set_capabilities`.
    L.prctl(L.PR_SET_KEEPCAPS, 1)
    if setgroups and setgroups_allowed():
        L.setgroups(list(additional_gids))
    # gid before uid: changing gids needs CAP_SETGID, which a non-root uid no longer has.
    L.setresgid(gid, gid, gid)
    L.setresuid(uid, uid, uid)
    L.prctl(L.PR_SET_KEEPCAPS, 0)


def set_capabilities(effective: Iterable[int], permitted: Iterable[int], inheritable: Iterable[int],
                     ambient: Iterable[int]) -> None:
    inh, prm = _mask(inheritable), _mask(permitted)
    L.capset(_mask(effective), prm, inh)
    L.ambient_clear_all()
    for cap in ambient:
        # An ambient capability must be permitted and inheritable; the kernel refuses the rest.
        # runc (1.2) skips those rather than failing, as `runc spec`'s default asks for them.
        if (inh & prm) >> cap & 1:
            L.ambient_raise(cap)


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """The container user's home from the container's /etc/passwd, else "/" (as runc)."""
    try:
        with open(passwd, errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"


def exec_env(env: Sequence[str], uid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in env:
        key, sep, value = entry.partition("=")
        if sep and key:
            out[key] = value
    out.setdefault("HOME", home_of(uid))
    return out


def _check_executable(path: str, shown: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"exec: {shown}: no such file or directory") from None
    except NotADirectoryError:
        raise NotFound(f"exec: {shown}: not a directory") from None
    if stat.S_ISDIR(st.st_mode):
        raise FailedPrecondition(f"exec: {shown}: is a directory")
    if not os.access(path, os.X_OK):
        raise FailedPrecondition(f"exec: {shown}: permission denied")
    return path


def lookup_executable(arg0: str, path_env: str) -> str:
    """Resolve argv[0] as execvp would, in the current root and cwd, or raise NotFound."""
    if "/" in arg0:
        return _check_executable(arg0, f'"{arg0}"')
    for d in path_env.split(":"):
        candidate = os.path.join(d or ".", arg0)
        try:
            return _check_executable(candidate, candidate)
        except (NotFound, FailedPrecondition):
            continue
    raise NotFound(f'exec: "{arg0}": executable file not found in $PATH')


def open_console(size: tuple[int, int] | None, uid: int) -> int:
    """Open a pty pair in this mount namespace's devpts; stdio becomes the slave (and the
    controlling terminal); returns the master fd (close-on-exec)."""
    master, slave_path = L.open_pty_master()
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
    try:
        if size is not None:
            L.set_winsize(slave, size[0], size[1])
        try:
            os.fchown(slave, uid, -1)
        except OSError:
            pass  # an unmapped uid: the terminal stays root's, as runc leaves it
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
    finally:
        os.close(slave)
    L.set_controlling_tty(0)
    return master
