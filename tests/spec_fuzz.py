"""Hostile OCI runtime specs through containerd's API: Containers/Create with the spec, then
Tasks/Create, Start, Wait and Delete, as `ctr` or any gRPC client can do. Each case is judged on
what an outside client and the host must never see.

    python3 -m tests.spec_fuzz                 # every case against a fresh daemon; a table, exit 1 on a fault
    python3 -m tests.spec_fuzz -k cgroup -v    # only the cases whose name has "cgroup"

A fault is: a status other than the case expects (UNKNOWN or INTERNAL for a caller's mistake
above all), a message with Python's words (`grpc_fuzz.PYTHON_WORDS`) or longer than 4 KiB,
anything left behind once the container is deleted (a shim, a mount under the daemon's dirs, a
cgroup named after the container or the case's own cgroups path, a bundle dir), a file written
outside the rootfs (`Context.victim`, a host path the escape cases aim at), or a neighbour
container (running throughout, `Context.neighbour`) no longer running. The regressions it found
are tests in tests/integration/test_spec_inputs.py.

Cgroups: the cases only ever name cgroups under Dockyard's own parent (`dockyard/`); the host's
(e.g. `process_api`) are aimed at with `..`, which must be refused before anything is written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dock import runner
from dock.client import Client
from dockyard_common import mounts as hostmounts
from dockyard_common.errors import DockyardError, NotFound
from dockyard_common.types import Mount
from tests.conformance.mounts import mounts_under
from tests.daemon import DaemonProcess, shims_in_bundles
from tests.grpc_fuzz import PYTHON_WORDS
from tests.integration.test_isolation import busybox_spec, make_container  # make_container: exec_fuzz's too
from tests.waiting import wait_until_async

CGROUPS = Path("/sys/fs/cgroup")
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Context:
    """What a case may aim at: its container id, a host path that must never appear (`victim`),
    a running container that must stay running (`neighbour`, its cgroups path), and a scratch
    cgroup the run made under our parent (`scratch`, relative to `dockyard/`)."""

    cid: str
    victim: Path
    neighbour: str
    scratch: str


Change = Callable[[dict[str, Any], Context], "bytes | None"]


@dataclass(frozen=True)
class Case:
    """`change` edits the spec in place (or returns raw bytes to send instead); `expect` is
    "ran" or the error kind the client must get (InvalidArgument, NotFound, ...; "a|b" for
    either, where the host decides), `words` a part of its message; `tamper` edits the
    container's snapshot (mounted) before Tasks/Create."""

    name: str
    change: Change
    expect: str
    words: str = ""
    tamper: Callable[[Path, Context], None] | None = None
    cgroup: Callable[[Context], str] | None = None  # a cgroups path (under dockyard/) that must go


@dataclass
class Outcome:
    case: str
    result: str  # "ran (exit N)" or "<Kind>: <message>"
    faults: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.result.split(":", 1)[0] if not self.result.startswith("ran") else "ran"


def base_spec(cid: str, *args: str) -> dict[str, Any]:
    return busybox_spec(cid, *(args or ("true",)))


# ----- running one case ------------------------------------------------------------------------------


def _tamper(mounts: list[Mount], edit: Callable[[Path, Context], None], ctx: Context) -> None:
    with tempfile.TemporaryDirectory(prefix="dy-spec-") as tmp, hostmounts.mounted(mounts, Path(tmp)) as root:
        edit(root, ctx)


def cgroups_named(name: str) -> list[Path]:
    """Cgroups called `name` anywhere under our parent, in every hierarchy."""
    found = []
    for top in CGROUPS.glob("*/dockyard"):
        for here, dirs, _ in os.walk(top):
            found += [Path(here, d) for d in dirs if d == name]
    if (CGROUPS / "dockyard").is_dir():
        for here, dirs, _ in os.walk(CGROUPS / "dockyard"):
            found += [Path(here, d) for d in dirs if d == name]
    return found


def cgroup_dirs(rel: str) -> list[Path]:
    """The directories of cgroups path `rel` (under our parent) that exist, v1 and v2."""
    rel = rel.strip("/")
    return [p for p in [CGROUPS / "dockyard" / rel, *CGROUPS.glob(f"*/dockyard/{rel}")] if p.is_dir()]


async def _run_task(c: Client, cid: str, mounts: list[Mount]) -> str:
    await c.tasks.create(cid, mounts)
    try:
        await c.tasks.start(cid)
        status = await asyncio.wait_for(c.tasks.wait(cid), 20)
        return f"ran (exit {status.code})"
    finally:
        with contextlib.suppress(DockyardError):
            await c.tasks.kill(cid, 9)
        with contextlib.suppress(DockyardError, TimeoutError):
            await asyncio.wait_for(c.tasks.wait(cid), 10)
        with contextlib.suppress(NotFound):
            await c.tasks.delete(cid)


async def run_case(c: Client, d: DaemonProcess, case: Case, neighbour: str, scratch: str) -> Outcome:
    cid = f"s-{case.name[:40]}-{secrets.token_hex(3)}"
    ctx = Context(cid, Path("/tmp", f"dy-victim-{secrets.token_hex(4)}"), neighbour, scratch)
    spec = base_spec(cid)
    raw = case.change(spec, ctx)
    value = raw if raw is not None else json.dumps(spec).encode()
    shims = shims_in_bundles(d)
    out = Outcome(case.name, "")
    try:
        mounts = await make_container(c, cid, value)
        if case.tamper is not None:
            await asyncio.to_thread(_tamper, mounts, case.tamper, ctx)
        out.result = await _run_task(c, cid, mounts)
    except DockyardError as exc:
        out.result = f"{type(exc).__name__}: {exc.message}"
        if PYTHON_WORDS.search(exc.message):
            out.faults.append("Python's words in the message")
        if len(exc.message) > 4096:
            out.faults.append(f"a message of {len(exc.message)} characters")
    finally:
        with contextlib.suppress(DockyardError):
            await runner.remove_container(c, cid)
    if out.kind not in case.expect.split("|"):
        out.faults.append(f"expected {case.expect}")
    if case.words and case.words not in out.result:
        out.faults.append(f"the message lacks {case.words!r}")
    out.faults += await leftovers(c, d, shims, ctx, case)
    return out


async def leftovers(c: Client, d: DaemonProcess, shims: set[int], ctx: Context, case: Case) -> list[str]:
    faults = []
    try:
        await wait_until_async(lambda: not shims_in_bundles(d) - shims, 10, "the shim to exit")
    except AssertionError:
        faults.append(f"shims left: {sorted(shims_in_bundles(d) - shims)}")
    if mounts_under(str(d.base)):
        faults.append(f"mounts left: {mounts_under(str(d.base))}")
    if cgroups_named(ctx.cid):
        faults.append(f"cgroups left: {cgroups_named(ctx.cid)}")
    if case.cgroup is not None and cgroup_dirs(case.cgroup(ctx)):
        faults.append(f"cgroups left: {cgroup_dirs(case.cgroup(ctx))}")
    bundles = [p for p in (d.state / "tasks").glob("[!.]*/*") if p.name != ctx.neighbour]
    if bundles or list((d.state / "tasks").glob("[!.]*/.[!.]*")):
        faults.append(f"bundle dirs left: {bundles}")
    if ctx.victim.exists():
        faults.append(f"wrote {ctx.victim} on the host")
    try:
        task = await c.tasks.get(ctx.neighbour)
        if task.status.name != "RUNNING":
            faults.append(f"neighbour {ctx.neighbour} is {task.status.name}")
    except DockyardError as exc:
        faults.append(f"neighbour {ctx.neighbour}: {exc}")
    return faults


# ----- the neighbour and the scratch cgroup -------------------------------------------------------------


async def start_neighbour(c: Client) -> str:
    cid = f"neighbour-{secrets.token_hex(3)}"
    mounts = await make_container(c, cid, json.dumps(base_spec(cid, "sleep", "3600")).encode())
    await c.tasks.create(cid, mounts)
    await c.tasks.start(cid)
    return cid


async def stop_neighbour(c: Client, cid: str) -> None:
    with contextlib.suppress(DockyardError):
        await c.tasks.kill(cid, 9)
        await asyncio.wait_for(c.tasks.wait(cid), 20)
    with contextlib.suppress(DockyardError):
        await runner.remove_container(c, cid)


@contextlib.contextmanager
def scratch_cgroup() -> Any:
    """An empty cgroup of our own under dockyard/ (v2, or every v1 hierarchy), removed after."""
    name = f"dy-scratch-{secrets.token_hex(3)}"
    tops = [CGROUPS / "dockyard"] if (CGROUPS / "cgroup.controllers").exists() else \
        [p for p in CGROUPS.glob("*/dockyard")]
    made = []
    for top in tops:
        top.mkdir(exist_ok=True)
        (top / name).mkdir()
        made.append(top / name)
    try:
        yield name
    finally:
        for p in made:
            with contextlib.suppress(FileNotFoundError):
                p.rmdir()


# ----- the corpus ------------------------------------------------------------------------------------


def at_path(doc: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    """The object holding a dotted path's last key ("process.cwd": spec["process"], "cwd"),
    made on the way as needed."""
    *parents, last = path.split(".")
    obj = doc
    for p in parents:
        obj = obj.setdefault(p, {})
    return obj, last


def _set(path: str, value: Any) -> Change:
    """Set a dotted path of the spec ("process.cwd", "linux.cgroupsPath")."""
    def change(spec: dict[str, Any], ctx: Context) -> None:
        obj, last = at_path(spec, path)
        obj[last] = value(ctx) if callable(value) else value
    return change


def _append(path: str, item: Any) -> Change:
    def change(spec: dict[str, Any], ctx: Context) -> None:
        obj, last = at_path(spec, path)
        obj.setdefault(last, []).append(item(ctx) if callable(item) else item)
    return change


def _raw(data: bytes) -> Change:
    return lambda spec, ctx: data


def _both(*changes: Change) -> Change:
    def change(spec: dict[str, Any], ctx: Context) -> bytes | None:
        out = None
        for ch in changes:
            out = ch(spec, ctx) or out
        return out
    return change


def _symlink(name: str, target: str) -> Callable[[Path, Context], None]:
    def edit(root: Path, ctx: Context) -> None:
        (root / name).symlink_to(target)
    return edit


def _victim_mount(prefix: str, mtype: str = "tmpfs") -> Change:
    """A mount whose destination aims at the victim through `prefix` (a symlink in the rootfs)."""
    return _append("mounts", lambda ctx: {"destination": f"{prefix}{ctx.victim}", "type": mtype, "source": mtype})


def _fifo_in_tmp(spec: dict[str, Any], ctx: Context) -> None:
    path = Path(tempfile.gettempdir(), f"dy-fifo-{secrets.token_hex(3)}")
    os.mkfifo(path)  # removed by `cleanup_fifos` after the case
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "network"]
    spec["linux"]["namespaces"].append({"type": "network", "path": str(path)})


def _ns_path(ns_type: str, path: str) -> Change:
    """The spec's namespace of `ns_type` given by `path` (joined rather than made)."""
    def change(spec: dict[str, Any], ctx: Context) -> None:
        for ns in spec["linux"]["namespaces"]:
            if ns["type"] == ns_type:
                ns["path"] = path
    return change


def _without_namespace(ns_type: str) -> Change:
    def change(spec: dict[str, Any], ctx: Context) -> None:
        spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != ns_type]
    return change


NOT_NS = "/etc/hostname"  # a file that is not a namespace
UP = "../" * 12

CASES: list[Case] = [
    # --- the spec document itself
    Case("not-json", _raw(b"{not json"), "InvalidArgument", "not valid JSON"),
    Case("json-array", _raw(b"[1, 2]"), "InvalidArgument"),
    Case("process-is-5", _set("process", 5), "InvalidArgument", "process"),
    Case("mounts-is-object", _set("mounts", {"a": 1}), "InvalidArgument", "mounts"),
    Case("deeply-nested", _raw(b'{"ociVersion": "1.0.2", "annotations": ' + b"[" * 100000 + b"]" * 100000 + b"}"),
         "InvalidArgument"),
    Case("huge-annotation", _set("annotations", {"x": "y" * (8 << 20)}), "ran"),
    Case("no-root", lambda s, c: s.pop("root") and None, "InvalidArgument", "root.path"),
    Case("huge-spec", _set("process.env", [PATH_ENV, "X=" + "y" * (12 << 20)]), "InvalidArgument", "process.env"),
    # --- linux.cgroupsPath
    Case("cgroup-dotdot-host", _set("linux.cgroupsPath", "../../process_api"), "InvalidArgument", "escapes"),
    Case("cgroup-abs-dotdot", _set("linux.cgroupsPath", "/default/../../../process_api"), "InvalidArgument"),
    Case("cgroup-dockyard-dotdot", _set("linux.cgroupsPath", "/dockyard/../process_api"), "InvalidArgument"),
    Case("cgroup-systemd", _set("linux.cgroupsPath", "system.slice:dy:x"), "InvalidArgument", "systemd"),
    Case("cgroup-not-string", _set("linux.cgroupsPath", 5), "InvalidArgument", "cgroupsPath"),
    Case("cgroup-nul", _set("linux.cgroupsPath", "/default/a\0b"), "InvalidArgument"),
    Case("cgroup-root", _set("linux.cgroupsPath", "/"), "InvalidArgument"),
    Case("cgroup-long-name", _set("linux.cgroupsPath", "/default/" + "c" * 300), "InvalidArgument", "too long"),
    Case("cgroup-long-path", _set("linux.cgroupsPath", "/default/" + "/".join(["d" * 200] * 30)),
         "InvalidArgument"),
    Case("cgroup-empty-is-default", _set("linux.cgroupsPath", ""), "ran"),
    Case("cgroup-abs-host-like", _set("linux.cgroupsPath", lambda ctx: f"/sys/fs/cgroup/{ctx.cid}"), "ran",
         cgroup=lambda ctx: f"sys/fs/cgroup/{ctx.cid}"),
    Case("cgroup-neighbours", _both(_set("linux.cgroupsPath", lambda ctx: f"/default/{ctx.neighbour}"),
                                    _set("process.args", ["/no/such/binary"])), "FailedPrecondition", "in use"),
    Case("cgroup-below-neighbour", _set("linux.cgroupsPath", lambda ctx: f"/default/{ctx.neighbour}/sub"),
         "FailedPrecondition", "in use"),
    Case("cgroup-namespace-level", _both(_set("linux.cgroupsPath", "/default"),
                                         _set("process.args", ["/no/such/binary"])), "FailedPrecondition", "in use"),
    Case("cgroup-scratch-empty", _set("linux.cgroupsPath", lambda ctx: f"/{ctx.scratch}"), "ran"),
    # --- mounts
    Case("mount-via-abs-symlink", _victim_mount("/evil"), "ran", tamper=_symlink("evil", "/")),
    Case("mount-via-up-symlink", _victim_mount("/evil"), "InvalidArgument", "escapes", tamper=_symlink("evil", UP)),
    Case("bind-via-up-symlink", _append("mounts", lambda ctx: {"destination": f"/evil{ctx.victim}", "type": "bind",
                                                               "source": "/etc/hostname", "options": ["rbind"]}),
         "InvalidArgument", "escapes", tamper=_symlink("evil", UP)),
    Case("mount-dotdot", _victim_mount("/../../.."), "InvalidArgument", "escapes"),
    Case("mount-relative", _append("mounts", {"destination": "tmp/x", "type": "tmpfs", "source": "tmpfs"}),
         "InvalidArgument", "absolute"),
    Case("mount-nul", _append("mounts", {"destination": "/tmp/a\0b", "type": "tmpfs", "source": "tmpfs"}),
         "InvalidArgument"),
    Case("bind-missing-source", _append("mounts", {"destination": "/mnt", "type": "bind", "source": "/no/such/dy",
                                                   "options": ["rbind"]}), "NotFound", "/no/such/dy"),
    Case("bind-proc-self", _append("mounts", {"destination": "/mnt", "type": "bind", "source": "/proc/self",
                                              "options": ["rbind"]}), "ran"),
    Case("mount-unknown-type", _append("mounts", {"destination": "/mnt", "type": "nosuchfs", "source": "x"}),
         "InvalidArgument", "nosuchfs"),
    Case("mount-bad-option", _append("mounts", {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                                "options": ["size=banana"]}), "InvalidArgument", "size=banana"),
    Case("mount-unknown-option", _append("mounts", {"destination": "/mnt", "type": "tmpfs", "source": "tmpfs",
                                                    "options": ["nosuchoption"]}), "InvalidArgument"),
    Case("mount-no-type", _append("mounts", {"destination": "/mnt", "source": "x"}), "InvalidArgument", "type"),
    Case("mount-over-root", _append("mounts", {"destination": "/", "type": "tmpfs", "source": "tmpfs"}),
         "NotFound", "executable file not found"),
    Case("mount-onto-file-via-symlink", _victim_mount("/evil"), "InvalidArgument",
         tamper=_symlink("evil", "/bin/busybox")),
    Case("masked-via-symlink", _append("linux.maskedPaths", lambda ctx: f"/evil{ctx.victim}"), "ran",
         tamper=_symlink("evil", UP)),
    Case("readonly-via-symlink", _append("linux.readonlyPaths", "/evil/etc"), "ran", tamper=_symlink("evil", UP)),
    Case("masked-relative", _append("linux.maskedPaths", "proc/kcore"), "InvalidArgument"),
    # --- process
    Case("args-empty", _set("process.args", []), "InvalidArgument", "args"),
    Case("args-missing-binary", _set("process.args", ["/no/such/binary"]), "NotFound", "/no/such/binary"),
    Case("args-not-in-path", _set("process.args", ["nosuchcommand"]), "NotFound", "nosuchcommand"),
    Case("args-empty-string", _set("process.args", [""]), "NotFound"),
    Case("args-directory", _set("process.args", ["/etc"]), "FailedPrecondition", "directory"),
    Case("args-nul", _set("process.args", ["/bin/true\0x"]), "InvalidArgument"),
    Case("cwd-relative", _set("process.cwd", "tmp"), "InvalidArgument", "cwd"),
    # A missing cwd is made, as runc does (Docker's WORKDIR relies on it), inside the rootfs only.
    Case("cwd-missing", _both(_set("process.cwd", "/no/such/dir"), _set("process.args", ["test", "-d", "."])),
         "ran", "exit 0"),
    Case("cwd-missing-readonly-root", _both(_set("process.cwd", "/made/here"), _set("root.readonly", True)),
         "ran", "exit 0"),
    Case("cwd-missing-via-up-symlink", _set("process.cwd", lambda ctx: f"/evil{ctx.victim}/sub"), "ran", "exit 0",
         tamper=_symlink("evil", UP)),
    Case("cwd-missing-via-abs-symlink", _set("process.cwd", lambda ctx: f"/evil{ctx.victim}"), "ran", "exit 0",
         tamper=_symlink("evil", "/")),
    Case("cwd-file-in-the-way", _set("process.cwd", "/etc/passwd/sub"), "InvalidArgument", "not a directory"),
    Case("cwd-symlink-loop", _set("process.cwd", "/loop/x"), "InvalidArgument", "cwd",
         tamper=_symlink("loop", "/loop")),
    Case("cwd-via-up-symlink", _set("process.cwd", "/evil"), "ran", tamper=_symlink("evil", UP)),
    Case("cwd-nul", _set("process.cwd", "/tm\0p"), "InvalidArgument"),
    Case("env-without-equals", _append("process.env", "JUSTAWORD"), "ran"),
    Case("env-nul", _append("process.env", "A=b\0c"), "InvalidArgument"),
    Case("env-huge", _set("process.env", [PATH_ENV] + [f"V{i}=" + "x" * 100 for i in range(30000)]),
         "InvalidArgument", "process.env"),
    Case("rlimit-unknown", _append("process.rlimits", {"type": "RLIMIT_BOGUS", "hard": 1, "soft": 1}),
         "InvalidArgument", "RLIMIT_BOGUS"),
    Case("rlimit-soft-above-hard", _set("process.rlimits", [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 20}]),
         "InvalidArgument", "soft"),
    Case("rlimit-above-nr-open", _set("process.rlimits", [{"type": "RLIMIT_NOFILE", "hard": 2**40,
                                                           "soft": 2**40}]), "InvalidArgument", "RLIMIT_NOFILE"),
    Case("uid-too-big", _set("process.user.uid", 2**32), "InvalidArgument", "uid"),
    Case("uid-minus-one", _set("process.user.uid", 2**32 - 1), "InvalidArgument", "uid"),
    Case("gid-minus-one", _set("process.user.gid", 2**32 - 1), "InvalidArgument", "gid"),
    Case("uid-negative", _set("process.user.uid", -1), "InvalidArgument", "uid"),
    Case("gids-minus-one", _set("process.user.additionalGids", [2**32 - 1]), "InvalidArgument", "additionalGids"),
    Case("gids-huge-list", _set("process.user.additionalGids", list(range(70000))), "InvalidArgument",
         "additionalGids"),
    Case("gids-long-list", _set("process.user.additionalGids", list(range(1000))), "ran"),
    Case("caps-unknown", _set("process.capabilities.bounding", ["CAP_BOGUS"]), "InvalidArgument", "CAP_BOGUS"),
    Case("nnp-without-caps", _both(_set("process.noNewPrivileges", True), _set("process.capabilities", {})), "ran"),
    Case("apparmor-without-apparmor", _set("process.apparmorProfile", "dy-profile"), "FailedPrecondition",
         "AppArmor"),
    Case("selinux-without-selinux", _set("process.selinuxLabel", "system_u:system_r:container_t:s0"),
         "FailedPrecondition", "SELinux"),
    Case("oom-score-out-of-range", _set("process.oomScoreAdj", 5000), "InvalidArgument", "oomScoreAdj"),
    Case("console-without-terminal", _set("process.consoleSize", {"height": 10, "width": 10}), "ran"),
    # --- root, hostname, sysctls
    Case("root-missing", _set("root.path", "/no/such/rootfs"), "NotFound", "rootfs"),
    Case("root-escapes-bundle", _set("root.path", "../../../.."), "InvalidArgument", "root.path"),
    Case("root-host", _set("root.path", "/"), "InvalidArgument", "root.path"),
    Case("root-nul", _set("root.path", "root\0fs"), "InvalidArgument"),
    Case("hostname-long", _set("hostname", "h" * 100), "InvalidArgument", "hostname"),
    Case("hostname-nul", _set("hostname", "a\0b"), "InvalidArgument", "hostname"),
    Case("sysctl-ipc-ok", _set("linux.sysctl", {"kernel.shmmax": "65536"}), "ran"),
    Case("sysctl-not-namespaced", _set("linux.sysctl", {"vm.swappiness": "17"}), "InvalidArgument", "vm.swappiness"),
    Case("sysctl-kernel-global", _set("linux.sysctl", {"kernel.panic": "0"}), "InvalidArgument", "kernel.panic"),
    Case("sysctl-unknown-net", _set("linux.sysctl", {"net.nosuch.thing": "1"}), "InvalidArgument", "net.nosuch"),
    Case("sysctl-directory", _set("linux.sysctl", {"net.ipv4": "1"}), "InvalidArgument", "net.ipv4"),
    Case("sysctl-nul", _set("linux.sysctl", {"net.ipv4.ip_forward\0": "1"}), "InvalidArgument"),
    Case("sysctl-net-host-netns", _both(_set("linux.sysctl", {"net.ipv4.ip_forward": "1"}),
                                        _without_namespace("network")), "InvalidArgument", "network namespace"),
    Case("sysctl-net-joined-host-netns", _both(_set("linux.sysctl", {"net.ipv4.ip_forward": "1"}),
                                               _ns_path("network", "/proc/self/ns/net")), "InvalidArgument",
         "the host's"),
    # --- namespaces
    Case("ns-path-not-a-namespace", _ns_path("network", NOT_NS), "InvalidArgument", "not a namespace"),
    Case("ns-path-missing", _ns_path("network", "/no/such/ns"), "NotFound", "/no/such/ns"),
    Case("ns-path-fifo", _fifo_in_tmp, "InvalidArgument", "not a namespace"),
    Case("ns-path-wrong-type", _ns_path("network", "/proc/self/ns/pid"), "InvalidArgument", "pid namespace"),
    # A path that is not a mount namespace at all: were the refusal ever missing, setns fails
    # rather than the rootfs being built in the namespace named (/proc/1/ns/mnt: the host's).
    Case("ns-mount-by-path", _ns_path("mount", "/proc/self/ns/net"), "InvalidArgument", "mount namespace"),
    Case("ns-duplicate", _append("linux.namespaces", {"type": "pid"}), "InvalidArgument", "duplicate"),
    Case("ns-relative-path", _ns_path("network", "ns/net"), "InvalidArgument", "absolute"),
    # --- devices
    Case("device-outside-dev", _append("linux.devices", {"path": "/etc/dy-null", "type": "c", "major": 1,
                                                         "minor": 3}), "InvalidArgument", "/dev"),
    Case("device-dev-itself", _append("linux.devices", {"path": "/dev/", "type": "c", "major": 1, "minor": 3}),
         "InvalidArgument", "/dev"),
    Case("device-dotdot", _append("linux.devices", {"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 3}),
         "InvalidArgument", "/dev"),
    Case("device-bad-major", _append("linux.devices", {"path": "/dev/x", "type": "c", "major": 2**40, "minor": 3}),
         "InvalidArgument", "major"),
    Case("device-bad-type", _append("linux.devices", {"path": "/dev/x", "type": "z", "major": 1, "minor": 3}),
         "InvalidArgument", "type"),
    # --- resources
    Case("resources-negative-shares", _set("linux.resources.cpu", {"shares": -5}), "InvalidArgument", "shares"),
    Case("resources-huge-shares", _set("linux.resources.cpu", {"shares": 2**62}), "ran|InvalidArgument"),
    Case("resources-bad-cpus", _set("linux.resources.cpu", {"cpus": "0-100000"}), "InvalidArgument"),
    Case("resources-memory-1-byte", _set("linux.resources.memory", {"limit": 1}), "FailedPrecondition",
         "memory.limit"),
    Case("resources-pids-1", _set("linux.resources.pids", {"limit": 1}), "FailedPrecondition", "pids.limit"),
    Case("resources-unified-bad", _set("linux.resources.unified", {"memory.max": "banana"}), "InvalidArgument",
         "unified"),
    Case("resources-unified-core", _set("linux.resources.unified", {"cgroup.procs": "1"}), "InvalidArgument"),
    Case("resources-is-list", _set("linux.resources", [1]), "InvalidArgument", "resources"),
    # --- user namespaces
    Case("uidmap-overlapping", _both(
        _append("linux.namespaces", {"type": "user"}),
        _set("linux.uidMappings", [{"containerID": 0, "hostID": 100000, "size": 1000},
                                   {"containerID": 500, "hostID": 300000, "size": 1000}]),
        _set("linux.gidMappings", [{"containerID": 0, "hostID": 100000, "size": 1000}])),
        "InvalidArgument", "uidMappings"),
    Case("uidmap-absurd-size", _both(
        _append("linux.namespaces", {"type": "user"}),
        _set("linux.uidMappings", [{"containerID": 0, "hostID": 2**32 - 2, "size": 2**32 - 1}]),
        _set("linux.gidMappings", [{"containerID": 0, "hostID": 100000, "size": 1000}])),
        "InvalidArgument", "uidMappings"),
    # --- seccomp
    Case("seccomp-unknown-syscall", _set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["no_such_syscall_dy"], "action": "SCMP_ACT_ERRNO"}]}), "ran"),
    Case("seccomp-unknown-action", _set("linux.seccomp", {"defaultAction": "SCMP_ACT_BOGUS"}), "InvalidArgument",
         "SCMP_ACT_BOGUS"),
    Case("seccomp-unknown-arch", _set("linux.seccomp", {"defaultAction": "SCMP_ACT_ALLOW",
                                                        "architectures": ["SCMP_ARCH_BOGUS"]}),
         "InvalidArgument", "SCMP_ARCH_BOGUS"),
    Case("seccomp-is-string", _set("linux.seccomp", "x"), "InvalidArgument", "seccomp"),
    # --- hooks
    Case("hook-relative", _set("hooks", {"prestart": [{"path": "bin/true"}]}), "InvalidArgument", "hooks"),
    Case("hook-missing", _set("hooks", {"createRuntime": [{"path": "/no/such/hook"}]}), "FailedPrecondition",
         "hooks"),
]


# ----- the driver ------------------------------------------------------------------------------------


def cleanup_fifos() -> None:
    for p in Path(tempfile.gettempdir()).glob("dy-fifo-*"):
        with contextlib.suppress(OSError):
            p.unlink()


async def run_all(d: DaemonProcess, cases: list[Case], verbose: bool = False) -> list[Outcome]:
    """Every case in turn, beside one neighbour container and one scratch cgroup. The daemon's
    base dir becomes searchable (0711) so a remapped root reaches its bundle (user namespace cases)."""
    d.base.chmod(0o711)
    out = []
    async with d.client() as c:
        neighbour = await start_neighbour(c)
        try:
            with scratch_cgroup() as scratch:
                for case in cases:
                    o = await run_case(c, d, case, neighbour, scratch)
                    cleanup_fifos()
                    out.append(o)
                    if verbose:
                        print(f"{'FAULT' if o.faults else 'ok   '} {o.case}: {o.result[:150]} {o.faults or ''}",
                              flush=True)
        finally:
            await stop_neighbour(c, neighbour)
    return out


def main() -> int:
    from tests.compat.runtimes import daemon_with_runtime, import_busybox

    ap = argparse.ArgumentParser()
    ap.add_argument("-k", default="")
    ap.add_argument("--skip", default="", help="comma-separated case names not to run")
    ap.add_argument("-v", action="store_true")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    cases = [c for c in CASES if args.k in c.name and c.name not in skip]
    with daemon_with_runtime("dockyard") as d:
        import_busybox(d)
        outcomes = asyncio.run(run_all(d, cases, args.v))
        log = d.log()[d.log_start:]
    return report(outcomes, log)


def report(outcomes: Sequence[Any], log: str, first_traceback: bool = False) -> int:
    """Print a run's faulty cases (each outcome has .case, .result, .faults) and the count of
    tracebacks in the daemon's log; the exit status: 1 when there was either."""
    faults = [o for o in outcomes if o.faults]
    print(f"{len(outcomes)} cases, {len(faults)} with faults; daemon log tracebacks: {log.count('Traceback')}")
    for o in faults:
        print(f"  {o.case}: {o.result[:200]}\n      {'; '.join(o.faults)}")
    if first_traceback and "Traceback" in log:
        start = log.index("Traceback")
        print("first traceback:\n" + log[max(0, start - 500):start + 3000])
    return 1 if faults or "Traceback" in log else 0


if __name__ == "__main__":
    sys.exit(main())
