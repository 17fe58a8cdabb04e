"""A spec → the ordered steps that create its container (pure: no I/O, testable without root).

The container init runs in two processes (see `create.py`):

* **stage 1** — the child the shim forks. It joins or creates the namespaces. A new PID
  namespace only applies to the children of the process that unshares it, so stage 1 ends by
  forking the init and exiting.
* **init** — the grandchild, PID 1 of the new PID namespace (the shim, a subreaper, adopts it).
  It builds the root filesystem, sets the process attributes and waits for `start` to exec.

Each step is a small frozen dataclass; `why` on each class documents why it sits where it does
(runc's order: ``nsexec.c`` for stage 1, ``standard_init_linux.go``/``rootfs_linux.go`` for the
init). The executor lives in `create.py`; host-dependent choices (cgroup v1 or v2, a ramfs root,
whether a path is a directory) are made there, at run time.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, replace
from typing import Any

from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument
from dockyard_common.mountopts import PROPAGATION_FLAGS, MountOptions, parse_mount_options
from shim.init.seccomp import Program, compile_profile
from shim.init.spec import Device, IDMapping, Process, Rlimit, Spec, SpecMount

# The unshare(2) flag of each OCI namespace type.
CLONE_FLAGS: dict[str, int] = {
    "user": L.CLONE_NEWUSER,
    "mount": L.CLONE_NEWNS,
    "cgroup": L.CLONE_NEWCGROUP,
    "uts": L.CLONE_NEWUTS,
    "ipc": L.CLONE_NEWIPC,
    "network": L.CLONE_NEWNET,
    "pid": L.CLONE_NEWPID,
    "time": L.CLONE_NEWTIME,
}

# The order namespaces are joined in: user first (joining it grants the capabilities needed to
# join the namespaces it owns), mount last (after it the host's /proc paths may be gone).
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# runc's default devices: created in every container whose /dev is not bound from the host.
DEFAULT_DEVICES: tuple[Device, ...] = (
    Device("/dev/null", "c", 1, 3, 0o666, 0, 0),
    Device("/dev/zero", "c", 1, 5, 0o666, 0, 0),
    Device("/dev/full", "c", 1, 7, 0o666, 0, 0),
    Device("/dev/random", "c", 1, 8, 0o666, 0, 0),
    Device("/dev/urandom", "c", 1, 9, 0o666, 0, 0),
    Device("/dev/tty", "c", 5, 0, 0o666, 0, 0),
)


class Step:
    """One step: its annotated class attributes are its fields (with their defaults).

    A hand-rolled record rather than a dataclass: the plan has ~40 step kinds and generating
    each dataclass costs the shim's start time (habit: start time per shim is a feature).
    Steps are values: equal when of the same kind with equal fields; never mutated.
    """

    _fields: tuple[str, ...] = ()
    why = ""

    def __init_subclass__(cls) -> None:
        cls._fields = tuple(inspect.get_annotations(cls))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self._fields):
            raise TypeError(f"{self.name}: too many arguments")
        values = dict(zip(self._fields, args, strict=False))
        for key, value in kwargs.items():
            if key not in self._fields or key in values:
                raise TypeError(f"{self.name}: bad argument {key!r}")
            values[key] = value
        self.__dict__.update(values)

    @property
    def name(self) -> str:
        return type(self).__name__

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._values() == self._values()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(f'{f}={getattr(self, f)!r}' for f in self._fields)})"


# ----- stage 1 ---------------------------------------------------------------------------------------


class ArrangeFds(Step):
    why = ("First: stdio onto 0-2, extra fds onto 3.., the sync socket next; every other fd the shim "
           "held (its ttrpc socket, epoll, other containers' pipes) is closed before anything else runs.")


class AwaitCgroup(Step):
    why = ("The parent moves this process into the container's cgroup before it creates namespaces or "
           "forks, so every later process starts inside the cgroup, a cgroup namespace is rooted there, "
           "and the kernel memory of the namespaces and mounts (~250 KiB) is charged to the container, "
           "not to the shim's cgroup. Making them while the join waits would save ~5 ms (measured).")


class SetRlimits(Step):
    rlimits: tuple[Rlimit, ...] = ()
    why = "Before the user namespace: raising a hard limit needs CAP_SYS_RESOURCE in the host's namespace."


class SetOomScoreAdj(Step):
    value: int = 0
    why = "Before the user namespace: lowering the score needs CAP_SYS_RESOURCE in the host's namespace."


class JoinNamespace(Step):
    type: str = ""
    path: str = ""
    why = "Namespaces given by path are joined before new ones are made (user first, mount last)."


class Unshare(Step):
    types: tuple[str, ...] = ()
    why = "Create the namespaces listed without a path."

    @property
    def flags(self) -> int:
        flags = 0
        for t in self.types:
            flags |= CLONE_FLAGS[t]
        return flags


class MapIds(Step):
    uid_mappings: tuple[IDMapping, ...] = ()
    gid_mappings: tuple[IDMapping, ...] = ()
    deny_setgroups: bool = False
    why = ("Right after unsharing the user namespace: the parent (privileged in the host namespace) "
           "writes uid_map/gid_map; nothing can be owned by the namespace until they exist.")


class BecomeRoot(Step):
    why = "Switch to the namespace's uid/gid 0 so the mounts and files made next belong to container root."


class SetPropagation(Step):
    target: str = "/"
    flags: int = L.MS_SLAVE | L.MS_REC
    why = ("Before any mount in a new mount namespace: an rslave (or rprivate) root stops our mounts "
           "propagating back into the host, which a shared host root would otherwise do.")


class IsolateRootfsParent(Step):
    rootfs: str = ""
    why = ("With a shared root propagation (kept so binds of the host's shared mounts stay their peers, "
           "as runc keeps them), before the rootfs is mounted: the mount holding the rootfs directory "
           "becomes a slave, so the snapshot's mounts made on it do not propagate to the host.")


class MountRootfs(Step):
    rootfs: str = ""
    why = ("The snapshot's mounts go onto the bundle's rootfs inside a private mount namespace, with "
           "the host's privileges (before a user namespace), so they vanish with the container.")


class ForkInit(Step):
    why = "Last in stage 1: the init must be a child for a new PID namespace (it becomes PID 1)."


# ----- init ----------------------------------------------------------------------------------------


class AwaitContinue(Step):
    why = "The parent has the init's PID and has reaped stage 1, so the shim is now the init's parent."


class Setsid(Step):
    why = "A session of its own: signals to the shim's process group must not reach the container."


class BindRootfs(Step):
    rootfs: str = ""
    why = ("pivot_root needs the new root to be a mount point whose parent mount is not shared: make "
           "the parent private, then bind the rootfs onto itself.")


class MountSpec(Step):
    rootfs: str = ""
    mount: SpecMount = SpecMount("/")
    kind: str = "fs"  # fs (a filesystem by type) | bind | cgroup
    options: MountOptions = MountOptions()
    source: str = ""  # for binds: the absolute host path
    why = "The spec's mounts, in the spec's order (later ones may mount inside earlier ones)."


class CreateDevices(Step):
    rootfs: str = ""
    devices: tuple[Device, ...] = ()
    bind_from_host: bool = False
    why = ("After the mounts (/dev is a fresh tmpfs by then). In a user namespace mknod is refused, so "
           "the host's nodes are bind-mounted instead.")


class DevSymlinks(Step):
    rootfs: str = ""
    why = "/dev/fd, stdin, stdout, stderr and ptmx (to the devpts instance) as runc makes them."


class PivotRoot(Step):
    rootfs: str = ""
    why = ("After every mount that needs host paths (bind sources, host devices). The old root is "
           "made rslave then detached so its unmount cannot propagate to the host.")


class MakeCwd(Step):
    cwd: str = "/"
    why = ("After pivot_root, so the walk cannot leave the container's root, and before the root is made "
           "read-only: a missing cwd is made (mode 0755, owned by container root), as runc does and "
           "Docker's WORKDIR relies on. Only the init's: an exec's cwd must exist.")


class ReadonlyRoot(Step):
    why = "After pivot_root and every mount under it, which need a writable root for their mount points."


class SetHostname(Step):
    hostname: str = ""
    why = "In the new UTS namespace, once it exists."


class SetDomainname(Step):
    domainname: str = ""
    why = "In the new UTS namespace, once it exists."


class LoopbackUp(Step):
    why = "A fresh network namespace has only `lo`, down; runc brings it up."


class Sysctl(Step):
    key: str = ""
    value: str = ""
    why = "Through the container's /proc/sys, before readonly paths make it read-only."


class ReadonlyPath(Step):
    path: str = ""
    why = "After sysctls (which write /proc/sys) and after pivot_root (paths are the container's)."


class MaskPath(Step):
    path: str = ""
    why = "Last of the filesystem steps, so nothing later remounts over a mask."


class OpenConsole(Step):
    size: tuple[int, int] | None = None
    why = ("A pty from the container's own devpts, after pivot_root; the master goes to the parent "
           "over the sync socket, the slave becomes stdio and the controlling terminal.")


class NoNewPrivs(Step):
    why = "Before exec; must precede seccomp for an unprivileged filter."


class DropBoundingSet(Step):
    keep: frozenset[int] = frozenset()
    why = "Needs CAP_SETPCAP, so it comes before the user switch drops it."


class SetUser(Step):
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    setgroups: bool = True
    why = ("After everything that needs root; keep-caps spans the switch so the capability sets can "
           "still be set from the spec afterwards.")


class SetCapabilities(Step):
    effective: frozenset[int] = frozenset()
    permitted: frozenset[int] = frozenset()
    inheritable: frozenset[int] = frozenset()
    ambient: frozenset[int] = frozenset()
    why = "After the user switch (which would clear them); ambient last, it needs permitted and inheritable."


class SetUmask(Step):
    umask: int = 0o022
    why = "Just before exec; earlier steps create files with explicit modes."


class Chdir(Step):
    cwd: str = "/"
    why = "As the container user, so a cwd it cannot enter fails here rather than after exec."


class LookupExecutable(Step):
    arg0: str = ""
    path: str = DEFAULT_PATH
    why = ("In the container's root, as its user and in its cwd: a missing executable is reported at "
           "create time, not as a silent exit after start.")


class Seccomp(Step):
    program: Program = Program(0x7FFF0000, (), ())
    why = ("As late as possible, so the filter need not allow the init's own syscalls: the very last "
           "step with no_new_privs; without it, loading needs CAP_SYS_ADMIN, so just before the "
           "capabilities are dropped (runc's two positions).")


class AwaitStart(Step):
    why = "Create and start are two phases: report ready, then wait for the parent's start message."


class Exec(Step):
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    why = "The end: the sync socket is close-on-exec, so its EOF tells the parent the exec succeeded."


@dataclass(frozen=True)
class Plan:
    stage1: tuple[Step, ...]
    init: tuple[Step, ...]

    def names(self) -> list[str]:
        return [s.name for s in (*self.stage1, *self.init)]


# ----- building plans --------------------------------------------------------------------------------


def rootfs_path(bundle: str, spec: Spec) -> str:
    return os.path.normpath(os.path.join(bundle, spec.root.path))


def _cap_set(names: tuple[str, ...], last_cap: int) -> frozenset[int]:
    # Capabilities the running kernel does not know are skipped, as runc does.
    return frozenset(n for n in (L.CAPABILITIES[name] for name in names) if n <= last_cap)


def _process_steps(process: Process, *, in_userns_denied: bool, last_cap: int,
                   seccomp: dict[str, Any] | None) -> list[Step]:
    steps: list[Step] = []
    if process.terminal:
        steps.append(OpenConsole(size=process.console_size))
    if process.no_new_privileges:
        steps.append(NoNewPrivs())
    filter_step = Seccomp(compile_profile(seccomp)) if seccomp else None
    if filter_step is not None and not process.no_new_privileges:
        steps.append(filter_step)
    caps = process.capabilities
    steps.append(DropBoundingSet(keep=_cap_set(caps.bounding, last_cap) if caps else frozenset()))
    user = process.user
    steps.append(SetUser(uid=user.uid, gid=user.gid, additional_gids=user.additional_gids,
                         setgroups=not in_userns_denied))
    if caps:
        steps.append(SetCapabilities(
            effective=_cap_set(caps.effective, last_cap),
            permitted=_cap_set(caps.permitted, last_cap),
            inheritable=_cap_set(caps.inheritable, last_cap),
            ambient=_cap_set(caps.ambient, last_cap),
        ))
    else:
        steps.append(SetCapabilities())
    steps.append(SetUmask(umask=0o022 if user.umask is None else user.umask))
    steps.append(Chdir(cwd=process.cwd))
    steps.append(LookupExecutable(arg0=process.args[0], path=process.getenv("PATH") or DEFAULT_PATH))
    if filter_step is not None and process.no_new_privileges:
        steps.append(filter_step)
    return steps


def _mount_step(rootfs: str, bundle: str, m: SpecMount, index: int) -> MountSpec:
    where = f"mounts[{index}] ({m.destination})"
    opts = parse_mount_options(m.options, where)
    if m.type == "bind" and not opts.is_bind:
        opts = replace(opts, flags=opts.flags | L.MS_BIND)
    if opts.is_bind:
        if not m.source:
            raise InvalidArgument(f"spec: {where}: a bind mount needs a source")
        source = m.source if os.path.isabs(m.source) else os.path.normpath(os.path.join(bundle, m.source))
        return MountSpec(rootfs=rootfs, mount=m, kind="bind", options=opts, source=source)
    if m.type == "cgroup":
        return MountSpec(rootfs=rootfs, mount=m, kind="cgroup", options=opts)
    if not m.type:
        raise InvalidArgument(f"spec: {where}: a mount needs a type")
    return MountSpec(rootfs=rootfs, mount=m, kind="fs", options=opts, source=m.source or m.type)


def _devices(spec: Spec) -> tuple[Device, ...]:
    by_path = {d.path: d for d in DEFAULT_DEVICES}
    for d in spec.linux.devices:
        by_path[d.path] = d
    return tuple(by_path.values())


def plan_create(spec: Spec, bundle: str, *, has_rootfs_mounts: bool, rootless: bool = False,
                last_cap: int = 40) -> Plan:
    """The steps creating `spec`'s container from `bundle`.

    `rootless`: the shim is not root in the host user namespace (gid_map then needs
    setgroups=deny). `last_cap`: the kernel's highest capability (see `linux.last_cap()`).
    Raises InvalidArgument for a spec that cannot be run.
    """
    if spec.process is None:
        raise InvalidArgument("spec: process: missing")
    if not os.path.isabs(bundle):
        raise InvalidArgument(f"bundle {bundle!r}: not an absolute path")
    linux = spec.linux
    if linux.namespace("mount") is None:
        raise InvalidArgument("spec: linux.namespaces: a mount namespace is required")
    process = spec.process
    rootfs = rootfs_path(bundle, spec)
    new_userns = spec.new_namespace("user")
    userns = linux.namespace("user")
    in_userns = userns is not None
    deny_setgroups = new_userns and rootless
    # The snapshot's mounts need the host's privileges (an overlay of root-owned layers, ID-mapped
    # clones of them), which container root lacks: mount them in a transient mount namespace made
    # before the user namespace is made or joined; the container's own, made next, copies them.
    premount = in_userns and has_rootfs_mounts and spec.new_namespace("mount")

    stage1: list[Step] = [ArrangeFds(), AwaitCgroup()]
    if process.rlimits:
        stage1.append(SetRlimits(process.rlimits))
    if process.oom_score_adj is not None:
        stage1.append(SetOomScoreAdj(process.oom_score_adj))
    for ns_type in JOIN_ORDER:
        ns = linux.namespace(ns_type)
        # With `premount` a user namespace is joined last: as host root, joining the others
        # (a network namespace the daemon made, say) needs no privilege over them.
        if ns is not None and ns.path and not (premount and ns_type == "user"):
            stage1.append(JoinNamespace(type=ns_type, path=ns.path))
    new_types = [t for t in CLONE_FLAGS if spec.new_namespace(t) and t != "user"]
    if premount:
        stage1 += [Unshare(("mount",)), SetPropagation(), MountRootfs(rootfs)]
    if new_userns:
        stage1 += [
            Unshare(("user",)),
            MapIds(linux.uid_mappings, linux.gid_mappings, deny_setgroups),
            BecomeRoot(),
        ]
    elif userns is not None:
        if premount:
            stage1.append(JoinNamespace(type="user", path=userns.path))
        stage1.append(BecomeRoot())
    if new_types:
        stage1.append(Unshare(tuple(new_types)))
    propagation = L.MS_SLAVE | L.MS_REC
    if linux.rootfs_propagation:
        propagation = PROPAGATION_FLAGS[linux.rootfs_propagation]
    if not new_userns and not premount:
        # runc applies rootfsPropagation to / right after unshare. A shared one keeps the copies
        # of the host's shared mounts its peers (a bidirectional bind propagates both ways);
        # anything else starts rslave, so nothing we mount reaches the host, and is set in init.
        shared = bool(propagation & L.MS_SHARED)
        stage1.append(SetPropagation(flags=propagation) if shared else SetPropagation())
        if has_rootfs_mounts:
            if shared:
                stage1.append(IsolateRootfsParent(rootfs))
            stage1.append(MountRootfs(rootfs))
    stage1.append(ForkInit())

    init: list[Step] = [
        AwaitContinue(),
        Setsid(),
        SetPropagation(flags=propagation),
        BindRootfs(rootfs),
    ]
    for i, m in enumerate(spec.mounts):
        init.append(_mount_step(rootfs, bundle, m, i))
    dev_bound = any(isinstance(s, MountSpec) and s.kind == "bind" and s.mount.destination.rstrip("/") == "/dev"
                    for s in init)
    if not dev_bound:
        init.append(CreateDevices(rootfs, _devices(spec), bind_from_host=in_userns))
        init.append(DevSymlinks(rootfs))
    init.append(PivotRoot(rootfs))
    if propagation & L.MS_SHARED:
        # runc re-applies a shared propagation to the new root after pivot_root.
        init.append(SetPropagation(flags=propagation))
    if os.path.normpath(process.cwd) != "/":  # the root always exists: no walk
        init.append(MakeCwd(process.cwd))
    if spec.root.readonly:
        init.append(ReadonlyRoot())
    if spec.hostname:
        init.append(SetHostname(spec.hostname))
    if spec.domainname:
        init.append(SetDomainname(spec.domainname))
    if spec.new_namespace("network"):
        init.append(LoopbackUp())
    for key, value in sorted(linux.sysctl.items()):
        init.append(Sysctl(key, value))
    init += [ReadonlyPath(p) for p in linux.readonly_paths]
    init += [MaskPath(p) for p in linux.masked_paths]
    init += _process_steps(process, in_userns_denied=deny_setgroups, last_cap=last_cap, seccomp=linux.seccomp)
    init += [AwaitStart(), Exec(process.args, process.env)]
    return Plan(tuple(stage1), tuple(init))


class JoinContainer(Step):
    pid: int = 0
    why = "Join every namespace of the running container (user first) the shim is not already in."


def plan_exec(process: Process, container_pid: int, *, seccomp: dict[str, Any] | None = None,
              last_cap: int = 40) -> Plan:
    """The steps running `process` inside the running container whose init is `container_pid`."""
    if container_pid <= 0:
        raise InvalidArgument(f"exec: container pid {container_pid}: not a process")
    stage1: list[Step] = [ArrangeFds(), AwaitCgroup()]
    if process.rlimits:
        stage1.append(SetRlimits(process.rlimits))
    if process.oom_score_adj is not None:
        stage1.append(SetOomScoreAdj(process.oom_score_adj))
    stage1 += [JoinContainer(pid=container_pid), ForkInit()]
    init: list[Step] = [AwaitContinue(), Setsid()]
    init += _process_steps(process, in_userns_denied=False, last_cap=last_cap, seccomp=seccomp)
    init += [AwaitStart(), Exec(process.args, process.env)]
    return Plan(tuple(stage1), tuple(init))
