"""MethodTable: the one generic handler every service is registered through (see its module)."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2_grpc
from dockyard_api.containerd.services.version.v1 import version_pb2_grpc
from supervisor.services.method_table import MethodTable


@dataclass
class Details:
    method: str


def test_generated_registration_lands_in_one_table() -> None:
    table = MethodTable()
    namespace_pb2_grpc.add_NamespacesServicer_to_server(namespace_pb2_grpc.NamespacesServicer(), table)
    version_pb2_grpc.add_VersionServicer_to_server(version_pb2_grpc.VersionServicer(), table)
    for method in ("/containerd.services.namespaces.v1.Namespaces/List",
                   "/containerd.services.namespaces.v1.Namespaces/Delete",
                   "/containerd.services.version.v1.Version/Version"):
        handler = table.service(Details(method))  # type: ignore[arg-type]
        assert handler is not None and handler.unary_unary is not None, method
    assert table.service(Details("/containerd.services.version.v1.Version/Nope")) is None  # type: ignore[arg-type]
    assert table.service(Details("/no.Such/Method")) is None  # type: ignore[arg-type]


def test_generic_only_registration_is_still_served() -> None:
    """Code generated before registered methods existed only adds generic handlers."""
    table = MethodTable()
    handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: req)
    table.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("old.Service", {"Call": handler}),))
    assert table.service(Details("/old.Service/Call")) is handler  # type: ignore[arg-type]
    assert table.service(Details("/old.Service/Other")) is None  # type: ignore[arg-type]
