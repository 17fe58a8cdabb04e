"""ContainerStatus and ListContainers: the CRI's view of containers, from their records and
their tasks' states (a shim that does not answer in time is listed UNKNOWN by the runtime, not
waited for).

    view = await ctrs.status(cid)                              # CriContainer
    running = await ctrs.list(state=ContainerState.RUNNING)    # sorted by creation
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import Any

from dockyard_common.errors import Internal
from dockyard_common.jsonutil import json_value
from dockyard_common.types import Status
from supervisor.cri.container_records import ContainerStore, reason_of
from supervisor.cri.container_types import ContainerState, CriContainer


class ContainerViews(ContainerStore):
    async def status(self, cid: str) -> CriContainer:
        found = await self._find(cid)
        state = await self._task_state(found.record.id, reported=True)
        view = self._view(found, state)
        if state is not None and state.status == Status.STOPPED and await self._oom_killed(found.record):
            view.reason = reason_of(view.exit_code, oom_killed=True)
        return view

    async def info(self, container: CriContainer) -> dict[str, Any]:
        """containerd's verbose status info: what the container is made of."""
        record = await self.d.containers.get(self.namespace, container.id)
        spec = json_value(record.spec.value, f"container {container.id}: its stored spec", Internal) \
            if record.spec else {}
        return {"sandboxID": container.pod_id, "pid": container.pid, "image": container.image,
                "snapshotKey": record.snapshot_key, "snapshotter": record.snapshotter,
                "runtimeType": record.runtime_name, "config": container.config.to_json(), "runtimeSpec": spec}

    async def list(self, cid: str = "", state: ContainerState | None = None, pod_id: str = "",
                   selector: Mapping[str, str] | None = None) -> builtins.list[CriContainer]:
        """The containers matching every filter given: an id (or prefix), a state, a pod (or prefix), labels."""
        records = [f for f in await self._all() if f.record.id.startswith(cid) and f.meta.pod_id.startswith(pod_id)]
        states = {s.id: s for s in await self.d.tasks.states(self.namespace)} if records else {}
        out = []
        for found in records:
            view = self._view(found, states.get(found.record.id))
            if state is not None and view.state != state:
                continue
            if selector and any(view.config.labels.get(k) != v for k, v in selector.items()):
                continue
            out.append(view)
        return sorted(out, key=lambda c: c.created_at_ns)
