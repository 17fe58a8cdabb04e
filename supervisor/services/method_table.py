"""Every service's methods in one table, served through grpc's generic-handler path.

The generated `add_*_to_server` functions (grpcio-tools ≥ 1.62) also register each method
with the aio server as a "registered method". grpcio's aio server then keeps one pending
request task per registered method and, for every call it accepts, waits on all of them
(`asyncio.wait` over ~85 tasks here): ~90 µs of CPU per call, and 20-40% of throughput in
bench/rpc.py. Handing the servers' registration functions a `MethodTable` instead of the
server keeps every method on the one generic path, found by a single dict lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import grpc


class MethodTable(grpc.GenericRpcHandler):
    """Stands in for the server in `add_*_to_server(servicer, table)` calls; then
    `server.add_generic_rpc_handlers((table,))` serves them all."""

    def __init__(self) -> None:
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        # Code generated before registered methods existed only calls add_generic_rpc_handlers.
        self._generic: list[grpc.GenericRpcHandler] = []

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            self._methods[f"/{service}/{name}"] = handler

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        found = self._methods.get(handler_call_details.method)  # type: ignore[attr-defined]
        if found is not None:
            return found
        for generic in self._generic:
            found = generic.service(handler_call_details)
            if found is not None:
                return found
        return None
