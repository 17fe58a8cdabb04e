"""One container in the shim: its init, its exec'd processes, its cgroup and OOM watch.

The kernel work is synchronous on purpose (the shim has no threads): `create` forks the init
and waits for it to be ready, `start_exec` forks and execs, cgroup calls read small files. Each
new PID is registered before the caller next awaits, so the reaper can never see an exit it
cannot attribute (see `reaper`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from dockyard_common import attachsock
from dockyard_common.errors import AlreadyExists, DockyardError, FailedPrecondition, Internal, InvalidArgument, NotFound
from dockyard_common.jsonutil import json_object
from dockyard_common.types import Mount
from shim import state
from shim.cgroups import CgroupManager, EventWatch, Resources, new_manager
from shim.cgroups.base import DeviceRule
from shim.init import Spec, create_container, exec_process, parse_process, parse_spec
from shim.init.hostcheck import check_on_host, check_process
from shim.logfile import LogConfig
from shim.process import ExecProcess, InitProcess, Process, Status
from shim.stdio import ProcessIO, StdioPaths
from shim.stdiocheck import check_stdio

if TYPE_CHECKING:
    from shim.attach import AttachServer

log = logging.getLogger("dockyard.shim")


# runc appends these device cgroup rules to every container's (specconv.AllowedDevices): mknod of
# anything, and the standard /dev nodes the init creates. Without them the spec's usual "deny
# all" would stop the init at its first mknod. (path, type, major, minor, access)
_RUNC_ALLOWED_DEVICES: tuple[tuple[str, str, int | None, int | None, str], ...] = (
    ("", "c", None, None, "m"), ("", "b", None, None, "m"),
    ("/dev/null", "c", 1, 3, "rwm"), ("/dev/random", "c", 1, 8, "rwm"), ("/dev/full", "c", 1, 7, "rwm"),
    ("/dev/tty", "c", 5, 0, "rwm"), ("/dev/zero", "c", 1, 5, "rwm"), ("/dev/urandom", "c", 1, 9, "rwm"),
    ("", "c", 136, None, "rwm"), ("", "c", 5, 2, "rwm"), ("", "c", 10, 200, "rwm"),
)


def container_resources(spec: Spec) -> Resources:
    """The cgroup resources runc would set: the spec's, then its default device allowances
    (minus those for a path the spec lists itself)."""
    res = Resources.from_oci(spec.linux.resources)
    own = {d.path for d in spec.linux.devices}
    extra = tuple(DeviceRule(True, t, major, minor, access)
                  for path, t, major, minor, access in _RUNC_ALLOWED_DEVICES if not path or path not in own)
    return dataclasses.replace(res, devices=(*res.devices, *extra))


def _oom_killed(cgroup: CgroupManager) -> bool:
    try:
        return cgroup.oom_events().oom_kill > 0
    except (DockyardError, OSError):
        return False


def _read_spec(bundle: str) -> Spec:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise NotFound(f"bundle {bundle}: config.json") from None
    spec = parse_spec(data)
    if spec.process is None:
        raise InvalidArgument(f"bundle {bundle}: config.json has no process")
    return spec


class Container:
    def __init__(self, id: str, namespace: str, bundle: str, spec: Spec, cgroup: CgroupManager | None,
                 init: InitProcess) -> None:
        self.id = id
        self.namespace = namespace
        self.bundle = bundle
        self.spec = spec
        self.cgroup = cgroup
        self.init = init
        self.execs: dict[str, ExecProcess] = {}
        self.oom: EventWatch | None = None
        self.attach: AttachServer | None = None  # the init's attach socket (shim.attach)

    # ----- creation ------------------------------------------------------------------------------

    @classmethod
    def create(cls, id: str, namespace: str, bundle: str, rootfs: Sequence[Mount], paths: StdioPaths
               ) -> Container:
        """Make the cgroup, open stdio, create the init (waiting for Start). Nothing stays
        behind on failure."""
        spec = _read_spec(bundle)
        assert spec.process is not None
        # The spec decides whether there is a terminal (ctr sets both, as runc requires).
        paths = StdioPaths(paths.stdin, paths.stdout, "" if spec.process.terminal else paths.stderr,
                           spec.process.terminal)
        check_on_host(spec)  # before the cgroup: a refusal leaves nothing to undo
        check_stdio(paths)
        cgroup = new_manager()
        try:
            cgroup.create(spec.linux.cgroups_path or f"/{namespace}/{id}", container_resources(spec))
        except OSError as e:  # e.g. a level the kernel refuses to make: never a bare errno to the client
            raise Internal(f"creating cgroup {spec.linux.cgroups_path or f'/{namespace}/{id}'}: {e.strerror}") from None
        io: ProcessIO | None = None
        try:
            state.write_file(bundle, state.CGROUP, cgroup.path)
            io = ProcessIO.open(paths, LogConfig.from_bundle(bundle), namespace, id,
                                open_stdin=spec.annotations.get(attachsock.OPEN_STDIN) == "true")
            handle = create_container(bundle, spec, rootfs, io.child_fds(), cgroup_hook=cgroup.add_process)
        except Internal as exc:
            if io is not None:
                io.close()
            oom_killed = _oom_killed(cgroup)
            cgroup.delete(force=True)
            if oom_killed:
                raise FailedPrecondition(f"the container's init was killed by the OOM killer before it was ready "
                                         f"(is linux.resources.memory.limit too low?): {exc.message}") from None
            raise
        except BaseException:
            if io is not None:
                io.close()
            cgroup.delete(force=True)
            raise
        io.attach(handle.console)
        init = InitProcess(id, paths, handle, io)
        state.save_init(bundle, handle.pid)
        return cls(id, namespace, bundle, spec, cgroup, init)

    # ----- lookup --------------------------------------------------------------------------------

    def process(self, exec_id: str) -> Process:
        if not exec_id:
            return self.init
        p = self.execs.get(exec_id)
        if p is None:
            raise NotFound(f"process does not exist {exec_id}")
        return p

    def find(self, pid: int) -> Process | None:
        if self.init.pid == pid:
            return self.init
        for p in self.execs.values():
            if p.pid == pid:
                return p
        return None

    def status_of(self, p: Process) -> Status:
        return p.status_in(self.init.status) if isinstance(p, ExecProcess) else p.status

    @property
    def shares_host_pids(self) -> bool:
        return not self.spec.new_namespace("pid")

    # ----- init ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.init.start()

    def pause(self) -> None:
        self.init.require("pause", Status.RUNNING)
        self._cgroup().freeze()
        self.init.pause()

    def resume(self) -> None:
        self.init.require("resume", Status.PAUSED)
        self._cgroup().thaw()
        self.init.resume()

    def kill(self, exec_id: str, sig: int, all: bool) -> None:
        p = self.process(exec_id)
        if all and not exec_id:
            if p.exited:
                raise NotFound("process already finished")
            self._cgroup().kill_all(sig)
            return
        p.kill(sig)
        if p is self.init and self.init.status == Status.PAUSED and sig == signal.SIGKILL:
            # A frozen task acts on SIGKILL only once thawed (v1): let it die, as `kill --all` does.
            self._cgroup().thaw()

    def init_exited(self) -> None:
        """The init is gone: its PID namespace took every container process with it, except when
        it shared the host's; then finish them off, as runc's shim does."""
        if self.shares_host_pids and self.cgroup is not None:
            try:
                self.cgroup.kill_all(signal.SIGKILL)
            except DockyardError as exc:
                log.warning("container %s: killing leftover processes: %s", self.id, exc)
        state.save_exit(self.bundle, state.ExitRecord(self.init.pid, self.init.exit_status, self.init.exited_at))

    def _cgroup(self) -> CgroupManager:
        if self.cgroup is None:
            raise NotFound("cgroup does not exist")
        return self.cgroup

    # ----- exec ----------------------------------------------------------------------------------

    def add_exec(self, exec_id: str, paths: StdioPaths, spec_json: bytes) -> ExecProcess:
        if not exec_id:
            raise InvalidArgument("exec id must not be empty")
        if exec_id in self.execs:
            raise AlreadyExists(f"id {exec_id}")
        self.init.require("exec in", Status.RUNNING, Status.CREATED)
        check_process(parse_process(spec_json))  # a bad spec fails Exec, not Start
        check_stdio(paths)
        p = ExecProcess(exec_id, paths, spec_json)
        self.execs[exec_id] = p
        return p

    def start_exec(self, p: ExecProcess) -> None:
        p.require("start", Status.CREATED)
        self.init.require("exec in", Status.RUNNING, Status.CREATED)
        process = parse_process(p.spec_json)
        paths = StdioPaths(p.paths.stdin, p.paths.stdout, "" if process.terminal else p.paths.stderr,
                           process.terminal)
        check_stdio(paths)  # again: a path may have been made or replaced since Exec
        io = ProcessIO.open(paths, None, self.namespace, self.id)
        try:
            handle = exec_process(self.init.pid, process, io.child_fds(),
                                  cgroup_hook=self.cgroup.add_process if self.cgroup else None,
                                  seccomp=self.spec.linux.seccomp)
        except BaseException:
            io.close()
            raise
        io.attach(handle.console)
        p.io, p.handle, p.paths = io, handle, paths
        p.set_running(handle.pid)

    # ----- cgroup --------------------------------------------------------------------------------

    def pids(self) -> list[tuple[int, str]]:
        """(pid, exec id or "") of every process in the container's cgroup."""
        by_pid = {p.pid: p.id for p in self.execs.values() if p.pid and not p.exited}
        return [(pid, by_pid.get(pid, "")) for pid in self._cgroup().pids()]

    def stats(self) -> Message:
        from shim.cgroups.metrics import to_metrics

        return to_metrics(self._cgroup().stats())

    def update(self, resources: dict[str, Any]) -> None:
        self._cgroup().apply(Resources.from_oci(resources))

    # ----- the end -------------------------------------------------------------------------------

    def remove_exec(self, exec_id: str) -> None:
        self.execs.pop(exec_id, None)

    def destroy_cgroup(self) -> None:
        """Remove the cgroup, killing whatever is still in it."""
        if self.cgroup is not None:
            try:
                self.cgroup.delete(force=True)
            except DockyardError as exc:
                log.warning("container %s: removing cgroup %s: %s", self.id, self.cgroup.path, exc)


def parse_resources(data: bytes) -> dict[str, Any]:
    """The LinuxResources JSON of an UpdateTaskRequest."""
    return json_object(data, "resources", InvalidArgument) if data else {}

