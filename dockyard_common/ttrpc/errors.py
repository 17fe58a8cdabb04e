"""Status codes on the ttrpc wire: raw statuses, a closed connection, and what a handler's
exception is sent as.

ttrpc carries a `google.rpc.Status` whose `code` uses gRPC's numbering; the table between
codes and domain errors is `dockyard_common.codes`, the one the daemon's gRPC edge uses too.
"""

from __future__ import annotations

import errno

from dockyard_common import errors
from dockyard_common.codes import Code, error_from_status
from dockyard_common.codes import code_for as code_for_error

__all__ = ["ConnectionClosed", "TTRPCError", "code_for", "error_from_status"]


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
        return code_for_error(exc)
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOENT:
            return Code.NOT_FOUND
        if exc.errno == errno.EEXIST:
            return Code.ALREADY_EXISTS
        if exc.errno in (errno.EACCES, errno.EPERM):
            return Code.PERMISSION_DENIED
    if isinstance(exc, EOFError):
        return Code.OUT_OF_RANGE
    return Code.UNKNOWN
