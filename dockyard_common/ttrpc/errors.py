"""Status codes on the ttrpc wire, and their mapping to the domain errors — without grpc.

ttrpc carries a `google.rpc.Status` whose `code` uses gRPC's numbering. The gRPC edge of the
daemon maps domain errors with `grpc.StatusCode` (`supervisor.services.status.CODES`); the shim
must not import grpc, so the same table lives here as plain integers (a unit test keeps the
two tables equal).
"""

from __future__ import annotations

import errno

from dockyard_common import errors

# gRPC code numbers (google/rpc/code.proto).
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

CODES: dict[type[errors.DockyardError], int] = {
    errors.NotFound: NOT_FOUND,
    errors.AlreadyExists: ALREADY_EXISTS,
    errors.InvalidArgument: INVALID_ARGUMENT,
    errors.OutOfRange: OUT_OF_RANGE,
    errors.FailedPrecondition: FAILED_PRECONDITION,
    errors.Unavailable: UNAVAILABLE,
    errors.Aborted: ABORTED,
    errors.ResourceExhausted: RESOURCE_EXHAUSTED,
    errors.Unimplemented: UNIMPLEMENTED,
    errors.Internal: INTERNAL,
    errors.Cancelled: CANCELLED,
    errors.DeadlineExceeded: DEADLINE_EXCEEDED,
    errors.Unknown: UNKNOWN,
}
_KINDS: dict[int, type[errors.DockyardError]] = {code: kind for kind, code in CODES.items()}


class TTRPCError(Exception):
    """A raw status: raise it from a handler to send an exact code and message.

    Domain errors are the usual way to fail; this is for codes with no domain kind
    (PERMISSION_DENIED, OUT_OF_RANGE, ...) or for messages that must be sent verbatim.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"ttrpc status {self.code}: {self.message}"


class ConnectionClosed(errors.Unavailable):
    """The ttrpc connection is gone (ttrpc's ErrClosed): every pending and later call fails with it.

    A subclass of Unavailable so callers treat it as such, yet can tell it apart from an
    UNAVAILABLE status a server sent (containerd ignores ErrClosed after Shutdown, for example).
    """


def code_for(exc: BaseException) -> int:
    """The status code a handler's exception is sent with.

    Domain errors by the table; other exceptions the way ttrpc's convertCode judges Go errors
    (a missing file is NOT_FOUND, an existing one ALREADY_EXISTS, ...), else UNKNOWN.
    """
    if isinstance(exc, TTRPCError):
        return exc.code
    if isinstance(exc, errors.DockyardError):
        for kind in type(exc).__mro__:
            if kind in CODES:
                return CODES[kind]
        return UNKNOWN
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOENT:
            return NOT_FOUND
        if exc.errno == errno.EEXIST:
            return ALREADY_EXISTS
        if exc.errno in (errno.EACCES, errno.EPERM):
            return PERMISSION_DENIED
    if isinstance(exc, EOFError):
        return OUT_OF_RANGE
    return UNKNOWN


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
