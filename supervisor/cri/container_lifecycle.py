"""StartContainer, StopContainer, RemoveContainer and what follows a container's exit.

Start makes the task (and its shim) from the stored spec; a start that fails is recorded as an
exit (StartError). Once the init has exited and the container was stopped, its exit (code, time,
reason) is kept in the record and the task deleted; a container whose init exits by itself keeps
its task until StopContainer, RemoveContainer or its pod's stop (`on_exit` records it). Stop and
Remove of a container that is not there succeed, as the CRI asks.

    await ctrs.start(cid)
    await ctrs.stop(cid, timeout=10)    # stop signal, SIGKILL after 10 s: EXITED
    await ctrs.remove(cid)              # the record, snapshot and task go
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import replace

from dockyard_common import containerlog
from dockyard_common.aio import uninterrupted
from dockyard_common.errors import DeadlineExceeded, DockyardError, FailedPrecondition, NotFound
from dockyard_common.netlabels import CONTAINER as JOIN_NETWORK
from dockyard_common.types import Status
from supervisor.cri.container_records import KILL_WAIT, KIND_CONTAINER, ContainerStore, reason_of
from supervisor.cri.container_types import ContainerConfig
from supervisor.cri.inputs import check_log_file
from supervisor.cri.sandbox import KIND_LABEL
from supervisor.cri.sandbox_types import NamespaceMode, SandboxState
from supervisor.runtime.types import CreateOptions

log = logging.getLogger("dockyard.cri")

START_ERROR_CODE = 128  # containerd's exit code for a container that could not start


class ContainerLifecycle(ContainerStore):
    async def start(self, cid: str) -> None:
        found = await self._find(cid)
        cid = found.record.id
        async with self._lock(cid):
            found = await self._find(cid)
            state = await self._task_state(cid)
            if found.meta.started or state is not None:
                raise FailedPrecondition(f"container {cid} is {self._view(found, state).state.name}, not CREATED")
            pod = await self.pods.status(found.meta.pod_id)
            if pod.state != SandboxState.READY:
                raise FailedPrecondition(f"pod sandbox {pod.id} of container {cid} is not ready")
            labels: dict[str, str] = {}
            if pod.config.namespaces.network != NamespaceMode.NODE:
                labels[JOIN_NETWORK] = pod.id  # the wiring joins the pod's namespace, resolv.conf, hosts
            if found.meta.log_path:
                # again: the path may have been replaced since the create (the shim opens it)
                await asyncio.to_thread(check_log_file, found.meta.log_path)
                labels[containerlog.LABEL_DRIVER] = containerlog.DRIVER
                labels[containerlog.LABEL_PATH] = found.meta.log_path
            assert found.record.spec is not None
            try:
                await self.volumes.ensure(cid, found.config)
                mounts = await self.d.snapshots.mounts(self.namespace, self.snapshotter, cid)
                task = await self.d.tasks.create(self.namespace, cid, found.record.runtime_name,
                                                 found.record.spec.value, CreateOptions(rootfs=mounts),
                                                 labels=labels)
                try:
                    await task.start()
                except BaseException:
                    with contextlib.suppress(DockyardError):
                        await uninterrupted(self.d.tasks.delete(self.namespace, cid))
                    raise
            except DockyardError as exc:
                now = time.time_ns()
                found.meta = replace(found.meta, started=True, started_at_ns=now, finished_at_ns=now,
                                     exit_code=START_ERROR_CODE, reason="StartError", message=exc.message)
                await self._save(found)
                raise
            found.meta = replace(found.meta, started=True, started_at_ns=time.time_ns())
            await self._save(found)
        log.info("container %s started", cid)

    async def stop(self, cid: str, timeout: float) -> None:
        """The image's stop signal (SIGTERM unless it names one), then SIGKILL after `timeout`
        seconds (at once if 0); a missing container is no error."""
        try:
            found = await self._find(cid)
        except NotFound:
            return
        async with self._lock(found.record.id):
            await self._stop(found.record.id, timeout)

    async def _stop(self, cid: str, timeout: float) -> None:
        try:
            task = self.d.tasks.get(self.namespace, cid)
        except NotFound:
            return
        state = await task.state()
        if state.status != Status.STOPPED:
            if timeout > 0:
                stop_signal = (await self._find(cid)).meta.stop_signal
                with contextlib.suppress(NotFound, FailedPrecondition):
                    await task.kill(stop_signal)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(task.wait(), timeout)
            if (await task.state()).status != Status.STOPPED:
                with contextlib.suppress(NotFound, FailedPrecondition):
                    await task.kill(signal.SIGKILL, all=True)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(task.wait(), KILL_WAIT)
            state = await task.state()
            if state.status != Status.STOPPED:
                raise DeadlineExceeded(f"container {cid}: its process did not end after SIGKILL")
        # The exit goes into the record; the task and its shim go.
        found = await self._find(cid)
        oom = await self._oom_killed(found.record)
        found.meta = replace(found.meta, started=True, finished_at_ns=state.exited_at_ns or time.time_ns(),
                             exit_code=state.exit_status, reason=reason_of(state.exit_status, oom))
        await self._save(found)
        with contextlib.suppress(NotFound):
            await self.d.tasks.delete(self.namespace, cid)

    async def remove(self, cid: str) -> None:
        """Kill it if it runs, then remove its task, snapshot and record; a missing container is no error."""
        try:
            found = await self._find(cid)
        except NotFound:
            return
        async with self._lock(found.record.id):
            await self._remove(found.record.id)
        log.info("container %s removed", found.record.id)

    async def _remove(self, cid: str) -> None:
        await self._stop(cid, 0)
        try:
            config: ContainerConfig | None = (await self._find(cid)).config
        except NotFound:
            config = None  # a record we cannot read: whatever is found of its volumes goes
        await self.volumes.remove(cid, config)
        with contextlib.suppress(NotFound):
            await self.d.snapshots.remove(self.namespace, self.snapshotter, cid)
        with contextlib.suppress(NotFound):
            await self.d.containers.delete(self.namespace, cid)
        await self.d.on_deleted(self.namespace, cid)

    async def sweep_image_volumes(self) -> None:
        """At daemon start: image volumes of containers whose record is gone are removed."""
        async def live() -> set[str]:
            return {c.id for c in await self.d.containers.list(self.namespace)}
        await self.volumes.sweep(live)

    async def on_exit(self, namespace: str, cid: str) -> None:
        """A task's init exited (the runtime's exit monitor tells every one): for a container of
        ours the exit goes into its record and the task, with its shim, goes, as containerd's CRI
        does at TaskExit. Kubelet keeps exited containers for a while; their shims need not live."""
        if namespace != self.namespace:
            return
        try:
            record = await self.d.containers.get(namespace, cid)
        except NotFound:
            return
        if record.labels.get(KIND_LABEL) != KIND_CONTAINER:
            return
        async with self._lock(cid):
            state = await self._task_state(cid)
            if state is not None and state.status == Status.STOPPED:
                await self._stop(cid, 0)  # nothing to kill: records the exit, deletes the task

    async def stop_pod(self, pod_id: str) -> None:
        """StopPodSandbox: every container of the pod is killed (containerd's timeout 0)."""
        for found in await self._all(pod_id):
            async with self._lock(found.record.id):
                await self._stop(found.record.id, 0)

    async def remove_pod(self, pod_id: str) -> None:
        for found in await self._all(pod_id):
            async with self._lock(found.record.id):
                await self._remove(found.record.id)
