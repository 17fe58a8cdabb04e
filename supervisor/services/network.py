"""dockyard.network.v1.Networks: networks and a container's attachment (our extension).

Conversion only: the NetworkManager decides and raises error kinds; `rpc` maps them.
"""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from dockyard_api.dockyard.network.v1 import network_pb2 as pb
from dockyard_api.dockyard.network.v1 import network_pb2_grpc as pb_grpc
from supervisor.network.attachments import Attachment, NetworkManager
from supervisor.network.networks import Network
from supervisor.services.context import namespace_of
from supervisor.services.status import rpc


def network_to_pb(net: Network) -> pb.Network:
    msg = pb.Network(
        name=net.name, id=net.id, subnets=[str(s) for s in net.subnets], gateway=net.gateway or "",
        bridge=net.bridge or "", internal=net.internal, labels=net.labels, managed=net.managed,
        path=str(net.path),
        plugins=[str(p.get("type")) for p in net.conflist.get("plugins", []) if isinstance(p, dict)],
    )
    if net.created is not None:
        ts = timestamp_pb2.Timestamp()
        ts.FromNanoseconds(int(net.created * 1e9))
        msg.created_at.CopyFrom(ts)
    return msg


def attachment_to_pb(att: Attachment) -> pb.Attachment:
    return pb.Attachment(
        container_id=att.container_id, netns_path=str(att.netns_path),
        interfaces=[pb.Interface(network=i.network, name=i.ifname, addresses=i.addresses, gateway=i.gateway or "",
                                 mac=i.mac or "") for i in att.interfaces],
        ports=[pb.PortMapping(host_ip=p.host_ip, host_port=p.host_port, container_port=p.container_port,
                              protocol=p.protocol) for p in att.ports],
    )


class NetworksService(pb_grpc.NetworksServicer):
    def __init__(self, manager: NetworkManager) -> None:
        self.manager = manager

    @rpc
    async def Create(self, request: pb.CreateNetworkRequest,
                     context: grpc.aio.ServicerContext) -> pb.CreateNetworkResponse:
        net = await self.manager.create_network(
            request.name, subnet=request.subnet or None, gateway=request.gateway or None,
            internal=request.internal, labels=dict(request.labels))
        return pb.CreateNetworkResponse(network=network_to_pb(net))

    @rpc
    async def List(self, request: pb.ListNetworksRequest, context: grpc.aio.ServicerContext) -> pb.ListNetworksResponse:
        networks, problems = await self.manager.list_networks()
        return pb.ListNetworksResponse(
            networks=[network_to_pb(n) for n in networks],
            problems=[pb.NetworkProblem(path=str(p.path), message=p.message) for p in problems])

    @rpc
    async def Inspect(self, request: pb.InspectNetworkRequest,
                      context: grpc.aio.ServicerContext) -> pb.InspectNetworkResponse:
        net, users = await self.manager.inspect_network(request.name)
        return pb.InspectNetworkResponse(
            network=network_to_pb(net),
            containers=[pb.NetworkUser(namespace=ns, container_id=cid) for ns, cid in users])

    @rpc
    async def Remove(self, request: pb.RemoveNetworkRequest,
                     context: grpc.aio.ServicerContext) -> pb.RemoveNetworkResponse:
        await self.manager.remove_network(request.name)
        return pb.RemoveNetworkResponse()

    @rpc
    async def Prune(self, request: pb.PruneNetworksRequest,
                    context: grpc.aio.ServicerContext) -> pb.PruneNetworksResponse:
        return pb.PruneNetworksResponse(removed=await self.manager.prune_networks())

    @rpc
    async def Attachment(self, request: pb.AttachmentRequest,
                         context: grpc.aio.ServicerContext) -> pb.AttachmentResponse:
        att = self.manager.get(namespace_of(context), request.container_id)
        return pb.AttachmentResponse(attachment=attachment_to_pb(att))
