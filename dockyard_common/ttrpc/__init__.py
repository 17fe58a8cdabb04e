"""containerd's ttrpc (v1.1) in asyncio: the shim's server and the daemon's client to shims.

No grpc, no threads: the shim imports this. See `server` and `client` for the contracts,
`wire` for the framing.
"""

from dockyard_common.ttrpc.client import TTRPCClient
from dockyard_common.ttrpc.errors import ConnectionClosed, TTRPCError
from dockyard_common.ttrpc.metadata import Metadata
from dockyard_common.ttrpc.server import RequestContext, TTRPCServer, inline
from dockyard_common.ttrpc.sockets import PeerCredentials, parse_address

__all__ = [
    "ConnectionClosed",
    "Metadata",
    "PeerCredentials",
    "RequestContext",
    "TTRPCClient",
    "TTRPCError",
    "TTRPCServer",
    "inline",
    "parse_address",
]
