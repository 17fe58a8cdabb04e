"""CRI containers (CreateContainer, StartContainer, StopContainer, RemoveContainer,
ContainerStatus, ListContainers, ExecSync, the stats): a container of the CRI namespace inside a
pod sandbox, run by the normal runtime (a shim per container) in the pod's namespaces
(supervisor/cri/container_spec.py says how the config maps).

    ctrs = CriContainers(deps, pods, exec_dir)
    cid = await ctrs.create(pod_id, config)      # record + snapshot: CREATED
    await ctrs.start(cid)                        # the task is made and started: RUNNING
    out = await ctrs.exec_sync(cid, ["ls"], 10)  # ExecResult(stdout, stderr, exit_code)
    await ctrs.stop(cid, timeout=10)             # stop signal, SIGKILL after 10 s: EXITED
    await ctrs.remove(cid)                       # the record, snapshot and task go

As under containerd, Create makes only the record and the snapshot; Start makes the task. Ids
may be given as unique prefixes (as crictl users type them). The log (`<pod log_directory>/
<log_path>`, CRI format) is written by the shim (containerlog.py).

`CriContainers` is made of one part per concern, each a module, all over the stored records:
    container_records.py    the record and its metadata, lookup by id or prefix, the CRI view
    container_create.py     CreateContainer
    container_lifecycle.py  StartContainer, StopContainer, RemoveContainer, exits, a pod's stop
    container_status.py     ContainerStatus, ListContainers
    container_stats.py      ContainerStats, ListContainerStats (shims asked with a deadline)
    container_update.py     UpdateContainerResources, ReopenContainerLog
    container_exec.py       ExecSync, and the starting point of every exec
"""

from __future__ import annotations

from pathlib import Path

from supervisor.cri.container_create import ContainerCreation
from supervisor.cri.container_exec import PROCESS_TYPE_URL as PROCESS_TYPE_URL
from supervisor.cri.container_exec import ContainerExec
from supervisor.cri.container_exec import ExecResult as ExecResult
from supervisor.cri.container_lifecycle import ContainerLifecycle
from supervisor.cri.container_records import KILL_WAIT as KILL_WAIT
from supervisor.cri.container_stats import ContainerMeasures
from supervisor.cri.container_update import ContainerUpdates
from supervisor.cri.sandbox import PodSandboxes, SandboxDeps


class CriContainers(ContainerCreation, ContainerLifecycle, ContainerMeasures, ContainerUpdates, ContainerExec):
    def __init__(self, deps: SandboxDeps, pods: PodSandboxes, exec_dir: Path, volumes_dir: Path | None = None) -> None:
        super().__init__(deps, pods, exec_dir, volumes_dir)
        pods.members = self
