"""Creating container processes: fork, the handshake, and running a `plan.Plan` in the children.

Contract (for the shim's task service)::

    spec = parse_spec(config_json)                       # InvalidArgument on a bad spec
    proc = create_container(bundle, spec, rootfs_mounts, StdioFds(stdin, stdout, stderr),
                            cgroup_hook=cgroup.add_process)
    # the init exists, is PID 1 of its namespaces, sits in its cgroup, and waits
    proc.pid              # its PID as the shim sees it (the shim is its parent)
    proc.console          # pty master when process.terminal, else None
    proc.start()          # exec the spec's process; raises if the exec fails
    ...                   # the shim's reaper collects the exit (or proc.wait() outside the shim)
    ex = exec_process(proc.pid, parse_process(process_json), StdioFds(...))   # already running

Processes: the caller (the shim) forks *stage 1*, which joins/creates the namespaces and forks
the *init*, then exits; the init is re-parented to the caller, which must therefore be a child
subreaper (`create_container` makes it one). The caller reaps stage 1 itself before returning,
so a SIGCHLD-driven reaper only ever sees container processes.

Handshake (habit 8): typed JSON messages, one per packet of a SOCK_SEQPACKET socketpair, so
two processes sharing the child end never read each other's bytes::

    parent → stage 1   {"type": "go"}                cgroup joined (the hook ran)
    stage 1 → parent   {"type": "map-ids"}            user namespace made: write uid/gid maps
    parent → stage 1   {"type": "ids-mapped"}
    stage 1 → parent   {"type": "pid", "pid": N}      the init exists; stage 1 exits
    parent → init      {"type": "continue"}           stage 1 reaped: the shim is the parent
    init → parent      {"type": "console"} + fd       (terminal) the pty master
    init → parent      {"type": "ready"}              everything but the exec is done
    parent → init      {"type": "start"}              (`start()`)
    init               execs; the socket is close-on-exec, so EOF means "exec'd"
    any child → parent {"type": "error", "kind": ..., "message": ..., "step": ...}

Errors raised in the parent: the DockyardError kind the child raised (NotFound for a missing
executable, InvalidArgument for a mount escaping the rootfs, ...), Internal for kernel errors
(with the call and arguments), DeadlineExceeded when a child does not answer in time. On any
failure before `ready`, every process made so far is killed and reaped; the mounts lived only in
the container's mount namespace, so nothing is left behind.

Seccomp: `linux.seccomp`'s BPF program is built through libseccomp (ctypes) or taken from the
cache before the fork (`seccomp.prepare`), and loaded by the init; SCMP_ACT_NOTIFY (a seccomp
agent) is refused with InvalidArgument.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import dockyard_common.errors as errors
from dockyard_common import linux as L
from dockyard_common.errors import DeadlineExceeded, DockyardError, Internal
from dockyard_common.mountinfo import mountinfo
from dockyard_common.mounts import mount_rootfs
from dockyard_common.types import Mount
from shim.init import hostcheck, seccomp
from shim.init import plan as P
from shim.init import process as proc_attrs
from shim.init import rootfs as R
from shim.init.spec import NAMESPACE_TYPES, Process, Spec

CgroupHook = Callable[[int], None]

_MAX_MSG = 65536
_KINDS: dict[str, type[DockyardError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, DockyardError)
}


@dataclass(frozen=True)
class StdioFds:
    """The fds (in the caller) that become the process's 0, 1 and 2; None means /dev/null.

    `extra` fds become 3, 4, ... in the container (runc's --preserve-fds). The caller keeps
    ownership of all of them (close your copies after `create_container` returns).
    """

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    extra: tuple[int, ...] = ()


# ----- the sync channel ----------------------------------------------------------------------------


class _Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, msg: dict[str, Any], fds: Sequence[int] = ()) -> None:
        data = json.dumps(msg).encode()
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.send(data)

    def recv(self) -> tuple[dict[str, Any] | None, list[int]]:
        """One message and the fds it carried; (None, []) at EOF (the other side is gone)."""
        data, fds, _, _ = socket.recv_fds(self.sock, _MAX_MSG, 4)
        for fd in fds:
            os.set_inheritable(fd, False)
        if not data:
            return None, fds
        return json.loads(data), fds

    def expect(self, kind: str) -> dict[str, Any]:
        msg, _ = self.recv()
        if msg is None:
            # The parent went away: nobody wants this container any more.
            os._exit(1)
        if msg.get("type") != kind:
            raise Internal(f"sync: expected {kind!r}, got {msg!r}")
        return msg


# Steps that hand the kernel a value of the spec as it is: a refusal (EINVAL, EPERM, ...) is about that
# value, so the client hears InvalidArgument, not Internal (a mount or a namespace failing is ours).
_SPEC_VALUE_STEPS = (P.SetRlimits, P.SetOomScoreAdj, P.SetHostname, P.SetDomainname, P.Sysctl, P.SetUmask,
                     P.SetUser, P.Chdir, P.MountSpec, P.JoinNamespace, P.Exec)
_SPEC_VALUE_ERRNOS = frozenset({errno.EINVAL, errno.EPERM, errno.ERANGE, errno.EOVERFLOW, errno.E2BIG, errno.EACCES,
                                errno.ENOTDIR, errno.ENOENT, errno.ELOOP, errno.ENAMETOOLONG, errno.EISDIR,
                                errno.ENODEV, errno.ENOTBLK, errno.ENXIO, errno.ENOEXEC})
# Steps whose errors carry the system call and its Python arguments: the client gets the errno's words.
_BARE_ERRNO_STEPS = (P.MountSpec, P.JoinNamespace)
_MAX_MESSAGE = 1024  # a failed setgroups would quote 65536 gids


def _error_message(exc: BaseException, step: P.Step | None) -> dict[str, Any]:
    where = _describe(step) if step is not None else "init"
    kind = "Internal"
    if isinstance(exc, DockyardError):
        kind, text = type(exc).__name__, exc.message
    elif isinstance(exc, OSError):
        text = exc.strerror or os.strerror(exc.errno or 0)
        if isinstance(step, _BARE_ERRNO_STEPS) and exc.errno:
            text = os.strerror(exc.errno)
        if isinstance(step, _SPEC_VALUE_STEPS) and exc.errno in _SPEC_VALUE_ERRNOS:
            kind = "InvalidArgument"
        elif isinstance(step, P.ForkInit) and exc.errno == errno.EAGAIN:
            kind, text = "FailedPrecondition", f"{text} (is linux.resources.pids.limit too low?)"
        elif exc.errno == errno.EMFILE:
            # The child closed every fd it inherited: only the spec's own limit leaves none to open.
            kind, text = "InvalidArgument", f"{text} (is process.rlimits RLIMIT_NOFILE too low?)"
        text = f"{where}: {text}"
    else:
        text = f"{where}: {exc or type(exc).__name__}"
    return {"type": "error", "kind": kind, "message": text[:_MAX_MESSAGE], "step": where}


def _describe(step: P.Step) -> str:
    match step:
        case P.MountSpec(mount=m):
            options = f" (options {','.join(m.options)})" if m.options else ""
            return f"mount {m.type or 'bind'} on {m.destination}{options}"
        case P.JoinNamespace(type=t, path=p):
            return f"join {t} namespace {p}"
        case P.Unshare(types=types):
            return f"unshare {','.join(types)}"
        case P.MaskPath(path=p) | P.ReadonlyPath(path=p):
            return f"{step.name} {p}"
        case P.Sysctl(key=k):
            return f"sysctl {k}"
    return step.name


def _raise_from(msg: dict[str, Any]) -> NoReturn:
    cls = _KINDS.get(str(msg.get("kind")), Internal)
    raise cls(str(msg.get("message") or "container init failed"))


def _raise_early_error(chan: _Channel) -> None:
    """Raise the error stage 1 already reported, if it did (it runs ahead of the cgroup join)."""
    chan.sock.setblocking(False)
    try:
        msg, fds = chan.recv()
    except (BlockingIOError, InterruptedError):
        return
    finally:
        chan.sock.setblocking(True)
    for fd in fds:
        os.close(fd)
    if msg is not None and msg.get("type") == "error":
        _raise_from(msg)


# ----- the children ----------------------------------------------------------------------------------


@dataclass
class _Context:
    plan: P.Plan
    rootfs_mounts: Sequence[Mount] = ()
    in_userns: bool = False
    new_cgroupns: bool = False
    uid: int = 0
    executable: str = ""
    chan: _Channel | None = None
    step: P.Step | None = None


def _arrange_fds(stdio: StdioFds, sync_fd: int) -> int:
    """Put stdio on 0-2, extra fds on 3.., the sync socket after them; close everything else.

    Returns the sync socket's new fd (close-on-exec; every other kept fd is inherited by exec).
    """
    sources: dict[int, int] = {}
    for target, fd in enumerate((stdio.stdin, stdio.stdout, stdio.stderr)):
        sources[target] = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC) if fd is None else fd
    for i, fd in enumerate(stdio.extra):
        sources[3 + i] = fd
    sync_target = 3 + len(stdio.extra)
    sources[sync_target] = sync_fd
    # Dup everything above every target first, so no dup2 below clobbers a source not yet moved.
    floor = max([sync_target, *sources.values()]) + 1
    moved = {t: fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for t, fd in sources.items()}
    for target, fd in moved.items():
        os.dup2(fd, target, inheritable=target != sync_target)
    L.close_range(sync_target + 1)
    return sync_target


def _child(plan: P.Plan, ctx: _Context, stdio: StdioFds, sync_fd: int) -> NoReturn:
    """Stage 1 (and, through ForkInit, the init). Never returns."""
    # No cyclic GC in the child: a collected object of the parent's could close an fd number
    # that now means something else.
    gc.disable()
    _drop_signal_handlers()
    code = 1
    try:
        # Not dumpable until the exec: processes in the container must not ptrace us or open
        # /proc/<pid>/exe, mem or fd of a process that still holds the shim's memory and
        # interpreter (runc's CVE-2019-5736 lesson). The exec resets it.
        L.prctl(L.PR_SET_DUMPABLE, 0)
        ctx.step = plan.stage1[0]
        sync = _arrange_fds(stdio, sync_fd)
        ctx.chan = _Channel(socket.socket(fileno=sync))
        for step in plan.stage1[1:]:
            ctx.step = step
            _run_step(step, ctx)
        code = 0
    except BaseException as e:  # everything goes to the parent, nothing propagates
        with contextlib.suppress(BaseException):
            if ctx.chan is not None:
                ctx.chan.send(_error_message(e, ctx.step))
    os._exit(code)


def _drop_signal_handlers() -> None:
    """The shim's Python signal handlers hand work to its event loop through fds the child
    closes: a signal here (SIGCHLD of a helper the child spawns) must not run them (a write to
    the closed wakeup fd aborts the interpreter)."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        with contextlib.suppress(ValueError, OSError, TypeError):
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)


def _init(ctx: _Context) -> NoReturn:
    code = 127
    try:
        for step in ctx.plan.init:
            ctx.step = step
            _run_step(step, ctx)
    except BaseException as e:
        with contextlib.suppress(BaseException):
            assert ctx.chan is not None
            ctx.chan.send(_error_message(e, ctx.step))
    os._exit(code)


def _become_root() -> None:
    # setgroups fails after setgroups=deny (a rootless parent); the groups are then fixed anyway.
    with contextlib.suppress(OSError):
        L.setgroups([])
    L.setresgid(0, 0, 0)
    L.setresuid(0, 0, 0)


def _join_container(pid: int) -> bool:
    """setns into every namespace of `pid` that differs from ours; True if a user ns was joined."""
    fds: dict[str, int] = {}
    try:
        # Open them all first: after joining the mount namespace /proc/<pid> may not resolve.
        for ns_type in P.JOIN_ORDER:
            name = NAMESPACE_TYPES[ns_type]
            theirs, ours = f"/proc/{pid}/ns/{name}", f"/proc/self/ns/{name}"
            try:
                a, b = os.stat(theirs), os.stat(ours)
            except FileNotFoundError:
                if ns_type in ("time", "cgroup"):
                    continue  # an older kernel
                raise
            if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
                fds[ns_type] = os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)
        # Root joins the user namespace last: a namespace the container shares with the host's
        # side (a network namespace the daemon made) needs privilege over it that the container's
        # root lacks. Anyone else joins it first, to gain privilege over the container's own.
        order = [t for t in P.JOIN_ORDER if t != "user"]
        order = [*order, "user"] if os.geteuid() == 0 else ["user", *order]
        for ns_type in order:
            if ns_type in fds:
                L.setns(fds[ns_type], P.CLONE_FLAGS[ns_type])
                if ns_type == "user":
                    _become_root()
    finally:
        for fd in fds.values():
            os.close(fd)
    return "user" in fds


def _run_step(step: P.Step, ctx: _Context) -> None:
    chan = ctx.chan
    assert chan is not None
    match step:
        case P.AwaitCgroup():
            chan.expect("go")
        case P.SetRlimits(rlimits=rlimits):
            proc_attrs.set_rlimits(rlimits)
        case P.SetOomScoreAdj(value=value):
            proc_attrs.set_oom_score_adj(value)
        case P.JoinNamespace(type=ns_type, path=path):
            fd = hostcheck.open_namespace(path, ns_type)
            try:
                L.setns(fd, P.CLONE_FLAGS[ns_type])
            finally:
                os.close(fd)
        case P.Unshare():
            L.unshare(step.flags)
        case P.MapIds():
            chan.send({"type": "map-ids"})
            chan.expect("ids-mapped")
        case P.BecomeRoot():
            _become_root()
        case P.SetPropagation(target=target, flags=flags):
            R.set_propagation(target, flags)
        case P.IsolateRootfsParent(rootfs=rootfs):
            R.isolate_rootfs_parent(os.path.realpath(rootfs))
        case P.MountRootfs(rootfs=rootfs):
            mount_rootfs(ctx.rootfs_mounts, rootfs)
        case P.JoinContainer(pid=pid):
            ctx.in_userns = _join_container(pid)
        case P.ForkInit():
            pid = os.fork()
            if pid == 0:
                _init(ctx)
            chan.send({"type": "pid", "pid": pid})
        case P.AwaitContinue():
            chan.expect("continue")
        case P.Setsid():
            os.setsid()
        case P.BindRootfs(rootfs=rootfs):
            R.bind_rootfs(os.path.realpath(rootfs))
        case P.MountSpec():
            R.mount_spec(step, in_userns=ctx.in_userns, new_cgroupns=ctx.new_cgroupns)
        case P.CreateDevices(rootfs=rootfs, devices=devices, bind_from_host=bind):
            R.create_devices(rootfs, devices, bind_from_host=bind)
        case P.DevSymlinks(rootfs=rootfs):
            R.dev_symlinks(rootfs)
        case P.PivotRoot(rootfs=rootfs):
            R.pivot_root(rootfs)
        case P.MakeCwd(cwd=cwd):
            R.make_cwd(cwd)
        case P.ReadonlyRoot():
            R.readonly_root()
        case P.SetHostname(hostname=name):
            L.sethostname(name)
        case P.SetDomainname(domainname=name):
            L.setdomainname(name)
        case P.LoopbackUp():
            L.link_up("lo")
        case P.Sysctl(key=key, value=value):
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
        case P.ReadonlyPath(path=path):
            R.readonly_path(path)
        case P.MaskPath(path=path):
            R.mask_path(path)
        case P.OpenConsole(size=size):
            master = proc_attrs.open_console(size, ctx.uid)
            chan.send({"type": "console"}, [master])
            os.close(master)
        case P.NoNewPrivs():
            proc_attrs.set_no_new_privs()
        case P.DropBoundingSet(keep=keep):
            proc_attrs.drop_bounding_set(keep)
        case P.SetUser(uid=uid, gid=gid, additional_gids=gids, setgroups=setgroups):
            proc_attrs.set_user(uid, gid, gids, setgroups=setgroups)
        case P.SetCapabilities(effective=e, permitted=p, inheritable=i, ambient=a):
            proc_attrs.set_capabilities(e, p, i, a)
        case P.SetUmask(umask=mask):
            os.umask(mask)
        case P.Chdir(cwd=cwd):
            try:
                os.chdir(cwd)
            except OSError as e:
                raise OSError(e.errno, f"chdir to process.cwd {cwd!r}: {e.strerror}") from None
        case P.LookupExecutable(arg0=arg0, path=path):
            ctx.executable = proc_attrs.lookup_executable(arg0, path)
        case P.Seccomp(program=program):
            seccomp.install(program)
        case P.AwaitStart():
            chan.send({"type": "ready"})
            msg, _ = chan.recv()
            if msg is None:
                os._exit(0)  # deleted before start
            if msg.get("type") != "start":
                raise Internal(f"sync: expected 'start', got {msg!r}")
        case P.Exec(args=args, env=env):
            # Ignored signals stay ignored across exec, and Python ignores SIGPIPE and
            # SIGXFSZ: give the container the defaults (and an empty mask) it would get from runc.
            for sig in (signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            try:
                os.execve(ctx.executable, list(args), proc_attrs.exec_env(env, ctx.uid))
            except OSError as e:
                hint = " (process.args and process.env together are over the kernel's limit)" \
                    if e.errno == errno.E2BIG else ""
                raise OSError(e.errno, f"exec {args[0]!r}: {e.strerror}{hint}") from None
        case _:
            raise Internal(f"container init: no executor for step {step.name}")


# ----- the parent ------------------------------------------------------------------------------------


def _exit_code(status: int) -> int:
    # containerd's convention: a process killed by signal N exits 128+N.
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


class ContainerProcess:
    """A container process the shim created: the init of a container, or an exec'd process.

    `pid` is the process as the caller sees it. Lifecycle: created (waiting) → `start()` →
    running; `close()` before `start()` lets it exit; the caller reaps it (`wait()` here, or the
    shim's reaper). `exit_status` is set when this object reaped the process.
    """

    def __init__(self, pid: int, chan: _Channel, console: int | None) -> None:
        self.pid = pid
        self.console = console
        self.started = False
        self.exit_status: int | None = None
        self._chan: _Channel | None = chan

    def start(self, timeout: float = 30.0) -> None:
        """Exec the process. Raises the child's error if the exec fails (the process is then
        reaped here, `exit_status` set) and FailedPrecondition when already started or closed."""
        if self.started or self._chan is None:
            raise errors.FailedPrecondition(f"process {self.pid}: already started or closed")
        chan = self._chan
        try:
            chan.sock.settimeout(timeout)
            chan.send({"type": "start"})
            msg, _ = chan.recv()
        except TimeoutError:
            raise DeadlineExceeded(f"process {self.pid}: no answer to start within {timeout}s") from None
        finally:
            self.close()
        if msg is None:
            self.started = True
            return
        with contextlib.suppress(ChildProcessError):
            self.exit_status = _exit_code(os.waitpid(self.pid, 0)[1])
        _raise_from(msg if msg.get("type") == "error" else {"message": f"sync: unexpected {msg!r}"})

    def close(self) -> None:
        """Drop the sync socket; an init still waiting for start then exits."""
        if self._chan is not None:
            self._chan.sock.close()
            self._chan = None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def wait(self) -> int:
        """Reap the process (blocking) and return its exit status (128+N for signal N)."""
        if self.exit_status is None:
            self.exit_status = _exit_code(os.waitpid(self.pid, 0)[1])
        return self.exit_status


def _write_id_maps(pid: int, step: P.MapIds) -> None:
    def write(name: str, text: str) -> None:
        path = f"/proc/{pid}/{name}"
        try:
            with open(path, "w") as f:
                f.write(text)
        except OSError as e:
            # The kernel refuses what the spec maps (a host id the shim may not map, say).
            kind = errors.InvalidArgument if e.errno in (errno.EINVAL, errno.EPERM) else Internal
            where = "linux.uidMappings" if name == "uid_map" else "linux.gidMappings"
            raise kind(f"spec: {where}: the kernel refused {text.strip()!r}: {e.strerror}") from None

    if step.deny_setgroups:
        # Without CAP_SETGID in the parent namespace the kernel only accepts a gid_map once
        # setgroups is denied (so a process cannot drop groups that restrict it).
        write("setgroups", "deny")
    write("uid_map", "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in step.uid_mappings))
    write("gid_map", "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in step.gid_mappings))


def _reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _ensure_subreaper() -> None:
    # The init is a grandchild (forked by stage 1 for the PID namespace): as a subreaper the
    # caller adopts it when stage 1 exits, and can wait for it.
    if not L.is_child_subreaper():
        L.set_child_subreaper(True)


def _launch(plan: P.Plan, ctx: _Context, stdio: StdioFds, cgroup_hook: CgroupHook | None,
            timeout: float, bundle: str | None = None) -> ContainerProcess:
    _ensure_subreaper()
    for step in plan.init:
        if isinstance(step, P.Seccomp):
            try:
                # Now: after pivot_root the container has no libseccomp (nor the cache).
                seccomp.prepare(step.program, bundle)
            except OSError as e:
                raise errors.FailedPrecondition(f"seccomp profile given but {e.strerror}") from None
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    map_step = next((s for s in plan.stage1 if isinstance(s, P.MapIds)), None)
    stage1 = os.fork()
    if stage1 == 0:
        sync_fd = child_sock.detach()
        parent_sock.detach()
        _child(plan, ctx, stdio, sync_fd)
    child_sock.close()
    chan = _Channel(parent_sock)
    init_pid = 0
    console: int | None = None
    deadline = time.monotonic() + timeout
    try:
        if cgroup_hook is not None:
            try:
                cgroup_hook(stage1)
            except BaseException:
                _raise_early_error(chan)  # a stage 1 that failed first explains the failure better
                raise
        # A stage 1 that already failed is gone: its report is read below.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            chan.send({"type": "go"})
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            parent_sock.settimeout(remaining)
            msg, fds = chan.recv()
            if msg is None:
                raise Internal("container init exited before it was ready")
            kind = msg.get("type")
            if kind == "error":
                _raise_from(msg)
            elif kind == "map-ids" and map_step is not None:
                _write_id_maps(stage1, map_step)
                chan.send({"type": "ids-mapped"})
            elif kind == "pid":
                init_pid = int(msg["pid"])
                # Reaping stage 1 completes the init's re-parenting to us before it goes on.
                status = os.waitpid(stage1, 0)[1]
                stage1 = 0
                if _exit_code(status) != 0:
                    raise Internal(f"container init: stage 1 exited with {_exit_code(status)}")
                chan.send({"type": "continue"})
            elif kind == "console" and fds:
                console = fds[0]
            elif kind == "ready":
                break
            else:
                raise Internal(f"sync: unexpected message {msg!r}")
        parent_sock.settimeout(None)
        return ContainerProcess(init_pid, chan, console)
    except BaseException as e:
        for pid in (stage1, init_pid):
            if pid:
                _reap(pid)
        parent_sock.close()
        if console is not None:
            os.close(console)
        if isinstance(e, TimeoutError):
            raise DeadlineExceeded(f"container init: not ready within {timeout}s") from None
        if isinstance(e, OSError):
            raise Internal(f"container init: {e}") from None
        raise


def create_container(bundle: Path | str, spec: Spec, rootfs_mounts: Sequence[Mount], stdio: StdioFds,
                     cgroup_hook: CgroupHook | None = None, *, timeout: float = 30.0) -> ContainerProcess:
    """Create the container's init from `spec` and the bundle at `bundle`; it waits for `start()`.

    `rootfs_mounts` (the snapshot's mounts; empty when <bundle>/<root.path> is already populated)
    are mounted onto the rootfs inside the container's mount namespace. `cgroup_hook(pid)` is
    called with the first child's PID before it does anything: move it into the container's
    cgroup; every container process descends from it. Blocks until the init is ready (this is
    the shim: no event loop work happens meanwhile) or `timeout` passes. What the spec asks that
    this host or shim cannot honour (`hostcheck`) is refused before anything is forked.
    """
    bundle = os.path.abspath(bundle)
    if not os.path.isdir(bundle):
        raise errors.NotFound(f"bundle {bundle}")
    hostcheck.check_on_host(spec)
    plan = P.plan_create(spec, bundle, has_rootfs_mounts=bool(rootfs_mounts), rootless=os.geteuid() != 0,
                         last_cap=L.last_cap())
    rootfs = P.rootfs_path(bundle, spec)
    if not os.path.isdir(rootfs):
        raise errors.NotFound(f"rootfs {rootfs}")
    assert spec.process is not None
    ctx = _Context(
        plan=plan,
        rootfs_mounts=list(rootfs_mounts),
        in_userns=spec.linux.namespace("user") is not None,
        new_cgroupns=spec.new_namespace("cgroup"),
        uid=spec.process.user.uid,
    )
    return _launch(plan, ctx, stdio, cgroup_hook, timeout, bundle)


def join_cgroups_of(target_pid: int) -> CgroupHook:
    """A cgroup hook moving a process into every cgroup `target_pid` is in (for exec)."""

    def hook(pid: int) -> None:
        mounts = mountinfo()
        with open("/proc/cgroups") as f:
            subsystems = {line.split()[0] for line in f if line.strip() and not line.startswith("#")}
        with open(f"/proc/{target_pid}/cgroup") as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f if line.strip()]
        for _, controllers, path in lines:
            wanted = set(controllers.split(",")) if controllers else set()
            for point, fstype, superopts in mounts:
                have = {o for o in superopts.split(",") if o in subsystems or o.startswith("name=")}
                if (fstype == "cgroup2" and not wanted) or (fstype == "cgroup" and wanted and have == wanted):
                    procs = os.path.join(point + path.rstrip("/"), "cgroup.procs")
                    try:
                        with open(procs, "w") as out:
                            out.write(str(pid))
                    except OSError as e:
                        raise Internal(f"join cgroup {procs}: {e.strerror}") from None
                    break

    return hook


def exec_process(container_pid: int, process: Process, stdio: StdioFds, cgroup_hook: CgroupHook | None = None,
                 *, seccomp: dict[str, Any] | None = None, timeout: float = 30.0) -> ContainerProcess:
    """Run `process` inside the running container whose init is `container_pid`; returns it
    started. `cgroup_hook` defaults to joining the init's cgroups. Errors as `create_container`."""
    try:
        os.kill(container_pid, 0)
    except ProcessLookupError:
        raise errors.NotFound(f"container process {container_pid}") from None
    plan = P.plan_exec(process, container_pid, seccomp=seccomp, last_cap=L.last_cap())
    ctx = _Context(plan=plan, uid=process.user.uid)
    proc = _launch(plan, ctx, stdio, cgroup_hook or join_cgroups_of(container_pid), timeout)
    proc.start(timeout)
    return proc


__all__ = ["ContainerProcess", "StdioFds", "create_container", "exec_process", "join_cgroups_of"]
