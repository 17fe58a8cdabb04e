"""Status codes and the one table between them and the domain's error kinds, without grpc.

gRPC and ttrpc both carry `google.rpc.Status`, whose `code` uses the numbers of
google/rpc/code.proto. The daemon's gRPC edge (`supervisor.services.status`) turns these
numbers into `grpc.StatusCode`; the shim's ttrpc and the CLI use them as they are. The shim
must not import grpc, hence plain integers here.

    code_for(NotFound("x"))                 -> Code.NOT_FOUND
    error_from_status(5, "x: not found")    -> NotFound("x")
"""

from __future__ import annotations

import enum

from dockyard_common import errors


class Code(enum.IntEnum):
    """gRPC status code numbers (google/rpc/code.proto)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


CODES: dict[type[errors.DockyardError], Code] = {
    errors.NotFound: Code.NOT_FOUND,
    errors.AlreadyExists: Code.ALREADY_EXISTS,
    errors.InvalidArgument: Code.INVALID_ARGUMENT,
    errors.OutOfRange: Code.OUT_OF_RANGE,
    errors.FailedPrecondition: Code.FAILED_PRECONDITION,
    errors.Unavailable: Code.UNAVAILABLE,
    errors.Aborted: Code.ABORTED,
    errors.ResourceExhausted: Code.RESOURCE_EXHAUSTED,
    errors.Unimplemented: Code.UNIMPLEMENTED,
    errors.Internal: Code.INTERNAL,
    errors.Cancelled: Code.CANCELLED,
    errors.DeadlineExceeded: Code.DEADLINE_EXCEEDED,
    errors.Unknown: Code.UNKNOWN,
}
_KINDS: dict[int, type[errors.DockyardError]] = {code: kind for kind, code in CODES.items()}


def code_for(err: errors.DockyardError) -> Code:
    """The code an error is sent with: its kind's, or the nearest base kind's (OutOfRange is
    an InvalidArgument yet has a code of its own), else UNKNOWN."""
    for kind in type(err).__mro__:
        if kind in CODES:
            return CODES[kind]
    return Code.UNKNOWN


def error_from_status(code: int, message: str) -> errors.DockyardError:
    """The domain error for a non-OK status (the client's side of the mapping).

    The kind suffix the server appended ("...: not found") is stripped so the error's own
    `__str__` does not repeat it. Codes without a domain kind become Unknown.
    """
    kind = _KINDS.get(code, errors.Unknown)
    suffix = ": " + kind.kind
    if message.endswith(suffix):
        message = message[: -len(suffix)]
    return kind(message)
