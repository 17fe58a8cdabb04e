"""UpdateContainerResources and ReopenContainerLog: changes to a container after its creation
(its cgroup limits; the log file its shim writes).

    await ctrs.update_resources(cid, resources)   # the running task's cgroup and the stored spec
    await ctrs.reopen_log(cid)                    # after kubelet rotated the log file
"""

from __future__ import annotations

import json
from dataclasses import replace

from dockyard_common.errors import FailedPrecondition, Internal, NotFound, Unimplemented
from dockyard_common.jsonutil import json_value
from dockyard_common.ocispec import RESOURCES_TYPE_URL
from dockyard_common.types import AnyValue, Status
from supervisor.cri.container_records import METADATA_EXTENSION, ContainerStore, meta_value
from supervisor.cri.container_spec import container_spec_resources
from supervisor.cri.container_types import Resources
from supervisor.cri.inputs import check_resources
from supervisor.cri.sandbox import SPEC_TYPE_URL


class ContainerUpdates(ContainerStore):
    async def update_resources(self, cid: str, resources: Resources) -> None:
        """UpdateContainerResources: the running task's cgroup, and the stored spec for a later start."""
        check_resources(resources)
        found = await self._find(cid)
        cid = found.record.id
        async with self._lock(cid):
            found = await self._find(cid)
            assert found.record.spec is not None
            spec = json_value(found.record.spec.value, f"container {cid}: its stored spec", Internal)
            config = replace(found.config, resources=resources)
            updated = container_spec_resources(spec, config)
            try:
                task = self.d.tasks.get(self.namespace, cid)
            except NotFound:
                task = None
            if task is not None and (await task.state()).status != Status.STOPPED:
                await task.update(AnyValue(RESOURCES_TYPE_URL, json.dumps(updated).encode()), {})
            found.record.spec = AnyValue(SPEC_TYPE_URL, json.dumps(spec).encode())
            found.meta = replace(found.meta, config=config.to_json())
            found.record.extensions[METADATA_EXTENSION] = meta_value(found.meta)
            found.record = await self.d.containers.update(self.namespace, found.record,
                                                          ["spec", f"extensions.{METADATA_EXTENSION}"])

    async def reopen_log(self, cid: str) -> None:
        """ReopenContainerLog: kubelet renamed the log file; the shim that writes it opens the
        path again (a new file). FailedPrecondition unless the container runs, as containerd."""
        found = await self._find(cid)
        cid = found.record.id
        state = await self._task_state(cid)
        if state is None or state.status not in (Status.RUNNING, Status.PAUSED):
            raise FailedPrecondition(f"container {cid} is not running: its log cannot be reopened")
        if not found.meta.log_path:
            raise FailedPrecondition(f"container {cid} has no log path: there is no log to reopen")
        try:
            await self.d.tasks.get(self.namespace, cid).reopen_log()
        except Unimplemented:
            raise FailedPrecondition(f"container {cid}: the shim of runtime {found.record.runtime_name!r} "
                                     "cannot reopen container logs") from None
