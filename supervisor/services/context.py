"""Reading containerd's call metadata: the namespace and the lease a call acts in."""

from __future__ import annotations

import grpc

from dockyard_common.errors import FailedPrecondition
from supervisor import identifiers

NAMESPACE_KEY = "containerd-namespace"
LEASE_KEY = "containerd-lease"


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str:
    for k, v in context.invocation_metadata() or ():
        if k == key:
            return v if isinstance(v, str) else v.decode()
    return ""


def namespace_of(context: grpc.aio.ServicerContext) -> str:
    """The call's namespace; containerd refuses a namespaced call without one."""
    ns = _metadata(context, NAMESPACE_KEY)
    if not ns:
        raise FailedPrecondition("namespace is required")
    return identifiers.validate_namespace(ns)


def lease_of(context: grpc.aio.ServicerContext) -> str:
    """The lease new resources of this call attach to, or "" for none."""
    return _metadata(context, LEASE_KEY)
