"""/network/attach and /network/detach: the runtime's NetworkChanges as events of ours
(dockyard.network.v1.NetworkAttach / NetworkDetach) on the daemon's exchange."""

from __future__ import annotations

from collections.abc import Callable

from dockyard_api.dockyard.network.v1 import events_pb2 as pb
from supervisor.events import Exchange
from supervisor.network.wiring import NetworkChange
from supervisor.services.events import publish
from supervisor.services.network import attachment_to_pb

ATTACH_TOPIC = "/network/attach"
DETACH_TOPIC = "/network/detach"


def publisher(exchange: Exchange) -> Callable[[NetworkChange], None]:
    """An observer for ContainerNetworks that publishes each change."""

    def changed(change: NetworkChange) -> None:
        att = attachment_to_pb(change.attachment)
        if change.attached:
            publish(exchange, change.namespace, ATTACH_TOPIC,
                    pb.NetworkAttach(container_id=change.container_id, attachment=att))
        else:
            publish(exchange, change.namespace, DETACH_TOPIC,
                    pb.NetworkDetach(container_id=change.container_id, attachment=att))

    return changed
