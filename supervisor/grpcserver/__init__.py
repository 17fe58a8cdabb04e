"""Our own HTTP/2 gRPC server (see server.py for why); grpcio stays the client and the API."""

from supervisor.grpcserver.server import Server

__all__ = ["Server"]
