"""containerd's ttrpc (v1.1) in asyncio: the shim's server and the daemon's client to shims.

No grpc, no threads: the shim imports this. See `server` and `client` for the contracts,
`wire` for the framing.
"""

from shim.ttrpc.client import TTRPCClient
from shim.ttrpc.errors import ConnectionClosed, TTRPCError
from shim.ttrpc.metadata import Metadata
from shim.ttrpc.server import RequestContext, TTRPCServer, inline
from shim.ttrpc.sockets import PeerCredentials, parse_address

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
