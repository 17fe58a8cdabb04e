"""What the runtime says about tasks, as values: no protobuf (the services convert at the edge).

The numbers of `Status` are containerd's (`containerd.v1.types.Status`), so converting is a cast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockyard_common.types import AnyValue, Mount, Status

__all__ = ["AnyValue", "CreateOptions", "ExecOptions", "Exit", "Mount", "ProcessInfo", "Status", "TaskState"]


@dataclass(frozen=True, slots=True)
class TaskState:
    """One process of a task (the init when `exec_id` is "") as its shim reports it."""

    id: str  # the container id
    exec_id: str
    pid: int
    status: Status
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at_ns: int | None = None  # ns since the epoch (the wire's precision); None: not sent


@dataclass(frozen=True, slots=True)
class Exit:
    """How a process ended (Wait, Delete): `exited_at_ns` is None when nobody knows."""

    pid: int
    exit_status: int
    exited_at_ns: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    info: AnyValue | None = None  # runtime-specific details, passed on untouched


@dataclass
class CreateOptions:
    rootfs: list[Mount] = field(default_factory=list)
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    options: bytes = b""  # the runtime options Any, serialised (the shim's stdin at start)
    task_options: AnyValue | None = None  # the request's options, passed to the shim's Create


@dataclass(frozen=True)
class ExecOptions:
    spec: AnyValue | None  # the OCI process spec, passed on untouched
    terminal: bool = False
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
