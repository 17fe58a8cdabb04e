"""Hostile exec processes through containerd's API: Tasks/Exec (an OCI Process as JSON in an Any)
into one running container, then Start, Wait and DeleteProcess, as `ctr tasks exec`, our health
probes and `dock exec` do. The companion of tests/spec_fuzz.py (which judges whole specs).

    python3 -m tests.exec_fuzz                 # every case against a fresh daemon; a table, exit 1 on a fault
    python3 -m tests.exec_fuzz -k cwd -v       # only the cases whose name has "cwd"

A fault is: a status other than the case expects (a caller's mistake as UNKNOWN or INTERNAL
above all), a message with Python's words or longer than 4 KiB, a target container no longer
running, an exec process left in it (its cgroup's PIDs other than the init's), an fd left open in
its shim (/proc/<shim>/fd counted before and after), a file written outside its rootfs
(`victim`), or a case that takes longer than `CASE_TIMEOUT` (a hung shim or daemon).

The target runs with noNewPrivileges and the image's default capabilities; its rootfs holds
`/evil`, a symlink climbing far above it, for the cwd cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dock.client import Client
from dockyard_common.errors import DockyardError
from tests.daemon import DaemonProcess
from tests.grpc_fuzz import PYTHON_WORDS
from tests.spec_fuzz import PATH_ENV, UP, _tamper, at_path, base_spec, make_container, report, stop_neighbour
from tests.waiting import wait_until_async

CASE_TIMEOUT = 60.0  # a case that takes longer hung something


@dataclass(frozen=True)
class Target:
    """The running container the execs go into: its id, its shim's PID, a scratch dir of the
    test's (`scratch`, for stdio files) and a host directory that must stay empty (`victim`)."""

    cid: str
    shim: int
    scratch: Path
    victim: Path


Edit = Callable[[dict[str, Any], Target], None]


@dataclass(frozen=True)
class ExecCase:
    """`change` edits the process object; `exec_id` maps a fresh id to the one sent; `stdio`
    gives (stdin, stdout, stderr) paths; `twice` sends the Exec again with the same id while the
    first is still there; `count` runs that many at once (each must end as `expect`)."""

    name: str
    change: Edit | None
    expect: str
    words: str = ""
    exec_id: Callable[[str], str] | None = None
    stdio: Callable[[Target], tuple[str, str, str]] | None = None
    terminal: bool = False
    twice: bool = False
    count: int = 1


@dataclass
class Outcome:
    case: str
    result: str
    faults: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "ran" if self.result.startswith("ran") else self.result.split(":", 1)[0]


def base_process() -> dict[str, Any]:
    process: dict[str, Any] = base_spec("x")["process"]
    process["args"] = ["true"]
    process["terminal"] = False
    return process


# ----- the target ----------------------------------------------------------------------------------


def _evil_link(root: Path, _ctx: object) -> None:
    (root / "evil").symlink_to(UP)


async def start_target(c: Client, d: DaemonProcess) -> str:
    cid = f"exec-target-{secrets.token_hex(3)}"
    spec = base_spec(cid, "sleep", "3600")
    spec["process"]["noNewPrivileges"] = True
    mounts = await make_container(c, cid, json.dumps(spec).encode())
    await asyncio.to_thread(_tamper, mounts, _evil_link, None)  # type: ignore[arg-type]
    await c.tasks.create(cid, mounts)
    await c.tasks.start(cid)
    return cid


async def shim_of(c: Client, cid: str) -> int:
    """The target's shim: the parent of its init (the shim is the init's subreaper)."""
    task = await c.tasks.get(cid)
    with open(f"/proc/{task.pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds_into(pid: int, directory: Path) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith(str(directory)):
                out.append(target)
    return out


# ----- running one case ----------------------------------------------------------------------------


async def _one(c: Client, t: Target, case: ExecCase, exec_id: str) -> str:
    process = base_process()
    if case.change is not None:
        case.change(process, t)
    stdin, stdout, stderr = case.stdio(t) if case.stdio else ("", "", "")
    sent = case.exec_id(exec_id) if case.exec_id else exec_id
    added = started = False
    try:
        await c.tasks.exec(t.cid, sent, process, stdin, stdout, stderr, terminal=case.terminal)
        added = True
        if case.twice:
            await c.tasks.exec(t.cid, sent, process, stdin, stdout, stderr, terminal=case.terminal)
        await c.tasks.start(t.cid, sent)
        started = True
        status = await asyncio.wait_for(c.tasks.wait(t.cid, sent), 20 * case.count ** 0.5)
        return f"ran (exit {status.code})"
    except DockyardError as exc:
        return f"{type(exc).__name__}: {exc.message}"
    except TimeoutError:
        return "Timeout: no exit reported"
    finally:
        if added:  # never Kill or Delete with an id that was refused: "" is the init's
            await _remove(c, t.cid, sent, started)


async def _remove(c: Client, cid: str, exec_id: str, started: bool) -> None:
    if started:  # an exec whose Start failed never runs: nothing to kill or wait for
        with contextlib.suppress(DockyardError):
            await c.tasks.kill(cid, 9, exec_id=exec_id)
        with contextlib.suppress(DockyardError, TimeoutError):
            await asyncio.wait_for(c.tasks.wait(cid, exec_id), 10)
    with contextlib.suppress(DockyardError):
        await c.tasks.delete_process(cid, exec_id)


async def run_case(c: Client, t: Target, case: ExecCase) -> Outcome:
    fds = fd_count(t.shim)
    out = Outcome(case.name, "")
    started = time.monotonic()
    try:
        ids = [f"x-{case.name[:30]}-{secrets.token_hex(3)}" for _ in range(case.count)]
        results = await asyncio.wait_for(asyncio.gather(*(_one(c, t, case, i) for i in ids)), CASE_TIMEOUT)
    except TimeoutError:
        out.result = "timed out"
        out.faults.append(f"no answer within {CASE_TIMEOUT:.0f} s (a hang)")
        results = []
    kinds = {("ran" if r.startswith("ran") else r.split(":", 1)[0]) for r in results}
    if results:
        out.result = results[0] if len(kinds) == 1 else f"mixed {sorted(kinds)}: {results[0]}"
    for r in {r for r in results if not r.startswith("ran")}:
        if PYTHON_WORDS.search(r):
            out.faults.append(f"Python's words in the message: {r[:200]}")
        if len(r) > 4096:
            out.faults.append(f"a message of {len(r)} characters")
    if results and not kinds <= set(case.expect.split("|")):
        out.faults.append(f"expected {case.expect}")
    if case.words and results and case.words not in out.result:
        out.faults.append(f"the message lacks {case.words!r}")
    if case.count > 1:
        out.result += f" ({case.count} in {time.monotonic() - started:.1f} s)"
    out.faults += await leftovers(c, t, fds)
    return out


async def leftovers(c: Client, t: Target, fds: int) -> list[str]:
    faults = []
    try:
        task = await c.tasks.get(t.cid)
        if task.status.name != "RUNNING":
            faults.append(f"target {t.cid} is {task.status.name}")
        pids = {p.pid for p in await c.tasks.pids(t.cid)}
        if pids - {task.pid}:
            faults.append(f"exec processes left: {sorted(pids - {task.pid})}")
    except DockyardError as exc:
        faults.append(f"target {t.cid}: {exc}")
    try:
        await wait_until_async(lambda: fd_count(t.shim) <= fds, 10, "the shim's fds")
    except AssertionError:
        faults.append(f"shim fds {fds} -> {fd_count(t.shim)}")
    except FileNotFoundError:
        faults.append("the shim is gone")
        return faults
    if fds_into(t.shim, t.scratch):
        faults.append(f"the shim holds {fds_into(t.shim, t.scratch)}")
    if any(t.victim.iterdir()):
        faults.append(f"wrote {list(t.victim.iterdir())} on the host")
    return faults


# ----- the corpus ----------------------------------------------------------------------------------


def _set(key: str, value: Any) -> Edit:
    """Set a dotted path of the process ("user.uid", "cwd")."""
    def change(process: dict[str, Any], t: Target) -> None:
        obj, last = at_path(process, key)
        obj[last] = value(t) if callable(value) else value
    return change


def _fifo(name: str) -> Callable[[Target], str]:
    def make(t: Target) -> str:
        path = t.scratch / f"{name}-{secrets.token_hex(3)}"
        os.mkfifo(path)
        return str(path)
    return make


def _node(name: str, major: int, minor: int, kind: int = stat.S_IFCHR) -> Callable[[Target], str]:
    """A device node in the scratch dir (the host may have no /dev/mem)."""
    def make(t: Target) -> str:
        path = t.scratch / f"{name}-{secrets.token_hex(3)}"
        os.mknod(path, kind | 0o600, os.makedev(major, minor))
        return str(path)
    return make


def _file(t: Target, name: str) -> str:
    path = t.scratch / f"{name}-{secrets.token_hex(3)}"
    path.touch()
    return str(path)


def _stdio(stdin: Callable[[Target], str] | str = "", stdout: Callable[[Target], str] | str = "",
           stderr: Callable[[Target], str] | str = "") -> Callable[[Target], tuple[str, str, str]]:
    def paths(t: Target) -> tuple[str, str, str]:
        got = [p(t) if callable(p) else p for p in (stdin, stdout, stderr)]
        return got[0], got[1], got[2]
    return paths


ALL_CAPS = ["CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_CHOWN"]
SHOW_CWD = ["sh", "-c", "touch dy-exec-cwd-probe"]

EXEC_CASES: list[ExecCase] = [
    ExecCase("plain", None, "ran"),
    # --- args
    ExecCase("args-empty", _set("args", []), "InvalidArgument", "args"),
    ExecCase("args-missing", lambda p, t: p.pop("args") and None, "InvalidArgument", "args"),
    ExecCase("args-nul", _set("args", ["/bin/true\0x"]), "InvalidArgument", "NUL"),
    ExecCase("args-empty-string", _set("args", [""]), "NotFound"),
    ExecCase("args-missing-binary", _set("args", ["/no/such/binary"]), "NotFound", "/no/such/binary"),
    ExecCase("args-directory", _set("args", ["/etc"]), "FailedPrecondition", "directory"),
    ExecCase("args-huge-one", _set("args", ["echo", "x" * 200_000]), "InvalidArgument", "limit"),
    ExecCase("args-huge-many", _set("args", ["echo", *(["y" * 1000] * 3000)]), "InvalidArgument", "limit"),
    ExecCase("args-not-strings", _set("args", ["true", 5]), "InvalidArgument", "args"),
    # --- env
    ExecCase("env-without-equals", _set("env", [PATH_ENV, "JUSTAWORD"]), "ran"),
    ExecCase("env-nul", _set("env", [PATH_ENV, "A=b\0c"]), "InvalidArgument", "NUL"),
    ExecCase("env-huge", _set("env", [PATH_ENV] + [f"V{i}=" + "x" * 100 for i in range(30000)]),
             "InvalidArgument", "limit"),
    ExecCase("env-is-string", _set("env", "A=b"), "InvalidArgument", "env"),
    # --- cwd
    ExecCase("cwd-relative", _set("cwd", "tmp"), "InvalidArgument", "cwd"),
    ExecCase("cwd-missing", _set("cwd", "/no/such/dir"), "InvalidArgument", "cwd"),
    ExecCase("cwd-a-file", _set("cwd", "/etc/passwd"), "InvalidArgument", "cwd"),
    ExecCase("cwd-nul", _set("cwd", "/tm\0p"), "InvalidArgument", "NUL"),
    ExecCase("cwd-via-up-symlink", _set("cwd", "/evil/tmp"), "ran"),
    # Through /evil, the victim's path: were the walk to leave the rootfs, the probe would land there.
    ExecCase("cwd-via-up-symlink-to-host", lambda p, t: p.update(cwd=f"/evil{t.victim}", args=SHOW_CWD),
             "InvalidArgument", "cwd"),
    ExecCase("cwd-dotdot", lambda p, t: p.update(cwd=f"/../../..{t.victim}", args=SHOW_CWD), "InvalidArgument",
             "cwd"),
    # --- user
    ExecCase("uid-minus-one", _set("user.uid", 2**32 - 1), "InvalidArgument", "uid"),
    ExecCase("gid-minus-one", _set("user.gid", 2**32 - 1), "InvalidArgument", "gid"),
    ExecCase("uid-negative", _set("user.uid", -1), "InvalidArgument", "uid"),
    ExecCase("uid-string", _set("user.uid", "nobody"), "InvalidArgument", "uid"),
    ExecCase("uid-unknown-ran", _set("user.uid", 70000), "ran"),
    ExecCase("username-ignored", _set("user.username", "nobody"), "ran"),
    ExecCase("username-not-string", _set("user.username", 5), "ran|InvalidArgument"),
    ExecCase("gids-70000", _set("user.additionalGids", list(range(70000))), "InvalidArgument", "additionalGids"),
    ExecCase("gids-minus-one", _set("user.additionalGids", [2**32 - 1]), "InvalidArgument", "additionalGids"),
    ExecCase("umask-bad", _set("user.umask", 0o7777), "InvalidArgument", "umask"),
    # --- capabilities: an exec may hold more than the init's bounding set (runc and Docker's
    # `exec --privileged` give the process what it lists), never an unknown one.
    ExecCase("caps-unknown", _set("capabilities.bounding", ["CAP_BOGUS"]), "InvalidArgument", "CAP_BOGUS"),
    ExecCase("caps-more-than-init", _set("capabilities", {k: ALL_CAPS for k in
                                                          ("bounding", "effective", "permitted")}), "ran"),
    ExecCase("caps-not-list", _set("capabilities.effective", "CAP_CHOWN"), "InvalidArgument", "capabilities"),
    ExecCase("ambient-not-permitted", _set("capabilities", {"ambient": ["CAP_CHOWN"]}), "ran"),
    # --- rlimits
    ExecCase("rlimit-unknown", _set("rlimits", [{"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}]),
             "InvalidArgument", "RLIMIT_BOGUS"),
    ExecCase("rlimit-soft-above-hard", _set("rlimits", [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 20}]),
             "InvalidArgument", "soft"),
    ExecCase("rlimit-above-nr-open", _set("rlimits", [{"type": "RLIMIT_NOFILE", "hard": 2**40, "soft": 2**40}]),
             "InvalidArgument", "RLIMIT_NOFILE"),
    ExecCase("rlimit-nofile-zero", _set("rlimits", [{"type": "RLIMIT_NOFILE", "hard": 0, "soft": 0}]),
             "InvalidArgument|FailedPrecondition|ran"),
    ExecCase("rlimit-negative", _set("rlimits", [{"type": "RLIMIT_CORE", "hard": -1, "soft": -1}]),
             "InvalidArgument", "rlimits"),
    # --- terminal
    ExecCase("terminal-console-size", lambda p, t: p.update(terminal=True, consoleSize={"height": 40, "width": 100}),
             "ran", terminal=True),
    ExecCase("terminal-huge-size", lambda p, t: p.update(terminal=True, consoleSize={"height": 2**20, "width": 1}),
             "InvalidArgument", "consoleSize", terminal=True),
    ExecCase("terminal-request-only", None, "ran", terminal=True),
    ExecCase("terminal-spec-only", _set("terminal", True), "ran"),
    # --- LSM labels: applied by nobody here, so refused (as for the init) rather than ignored
    ExecCase("apparmor", _set("apparmorProfile", "dy-profile"), "FailedPrecondition", "AppArmor"),
    ExecCase("selinux", _set("selinuxLabel", "system_u:system_r:container_t:s0"), "FailedPrecondition", "SELinux"),
    # --- no_new_privs off under an init that has it: the exec's own choice (runc's)
    ExecCase("nnp-false", _set("noNewPrivileges", False), "ran"),
    ExecCase("oom-score-out-of-range", _set("oomScoreAdj", 5000), "InvalidArgument", "oomScoreAdj"),
    # --- the exec id (a path component for some shims, so containerd's identifier rule)
    ExecCase("id-reused", None, "AlreadyExists", twice=True),
    ExecCase("id-empty", None, "InvalidArgument", "exec id", exec_id=lambda i: ""),
    ExecCase("id-10k", None, "InvalidArgument", "exec id", exec_id=lambda i: "e" * 10240),
    ExecCase("id-slash", None, "InvalidArgument", "exec id", exec_id=lambda i: f"a/{i}"),
    ExecCase("id-dotdot", None, "InvalidArgument", "exec id", exec_id=lambda i: ".."),
    ExecCase("id-dotdot-path", None, "InvalidArgument", "exec id", exec_id=lambda i: f"../../{i}"),
    ExecCase("id-nul", None, "InvalidArgument", "exec id", exec_id=lambda i: f"{i}\0x"),
    ExecCase("id-newline", None, "InvalidArgument", "exec id", exec_id=lambda i: f"{i}\n"),
    # --- stdio paths
    ExecCase("stdout-directory", None, "InvalidArgument", "directory", stdio=_stdio(stdout=lambda t: str(t.scratch))),
    ExecCase("stdin-directory", None, "InvalidArgument", "directory", stdio=_stdio(stdin=lambda t: str(t.scratch))),
    ExecCase("stdout-proc-self-mem", None, "InvalidArgument", "/proc/self/mem", stdio=_stdio(stdout="/proc/self/mem")),
    ExecCase("stdin-proc-self-mem", None, "InvalidArgument", "/proc/self/mem", stdio=_stdio(stdin="/proc/self/mem")),
    ExecCase("stdout-proc-sys", None, "InvalidArgument", "procfs", stdio=_stdio(stdout="/proc/sys/kernel/hostname")),
    ExecCase("stdin-sys", None, "InvalidArgument", "sysfs", stdio=_stdio(stdin="/sys/kernel/address_bits")),
    ExecCase("stdout-file-uri-proc", None, "InvalidArgument", "procfs",
             stdio=_stdio(stdout="file:///proc/sys/kernel/hostname")),
    ExecCase("stdout-dev-mem", None, "InvalidArgument", "memory device", stdio=_stdio(stdout=_node("mem", 1, 1))),
    ExecCase("stdin-block-device", None, "InvalidArgument", "block device",
             stdio=_stdio(stdin=_node("sda", 8, 0, stat.S_IFBLK))),
    ExecCase("stdout-dev-null-node", None, "ran", stdio=_stdio(stdout=_node("null", 1, 3))),
    ExecCase("stdout-regular-file", None, "ran", stdio=_stdio(stdout=lambda t: _file(t, "out"))),
    ExecCase("stdout-missing", None, "NotFound", stdio=_stdio(stdout="/no/such/fifo")),
    ExecCase("stdout-dev-null", None, "ran", stdio=_stdio(stdin="/dev/null", stdout="/dev/null", stderr="/dev/null")),
    ExecCase("stdio-fifos-nobody-opens", None, "ran", stdio=_stdio(_fifo("in"), _fifo("out"), _fifo("err"))),
    ExecCase("stdout-unknown-scheme", None, "InvalidArgument", "scheme", stdio=_stdio(stdout="gopher://x")),
    ExecCase("stdout-file-uri-relative", None, "InvalidArgument", stdio=_stdio(stdout="file://rel/x")),
    # --- many at once
    ExecCase("many-1000", None, "ran", count=1000),
]


# ----- the driver ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def target(c: Client, d: DaemonProcess) -> Any:
    cid = await start_target(c, d)
    try:
        with tempfile.TemporaryDirectory(prefix="dy-exec-") as scratch, \
                tempfile.TemporaryDirectory(prefix="dy-victim-") as victim:
            yield Target(cid, await shim_of(c, cid), Path(scratch), Path(victim))
    finally:
        await stop_neighbour(c, cid)


async def run_all(d: DaemonProcess, cases: list[ExecCase], verbose: bool = False) -> list[Outcome]:
    out = []
    async with d.client() as c, target(c, d) as t:
        for case in cases:
            o = await run_case(c, t, case)
            out.append(o)
            if verbose:
                print(f"{'FAULT' if o.faults else 'ok   '} {o.case}: {o.result[:150]} {o.faults or ''}", flush=True)
    return out


def main() -> int:
    from tests.compat.runtimes import daemon_with_runtime, import_busybox

    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    cases = [c for c in EXEC_CASES if args.k in c.name]
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        outcomes = asyncio.run(run_all(d, cases, args.v))
        log = d.log()[d.log_start:]
    return report(outcomes, log, first_traceback=True)


if __name__ == "__main__":
    sys.exit(main())
