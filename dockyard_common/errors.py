"""The error hierarchy of the domain.

Domain code raises these; the gRPC edge maps them to status codes in one place
(`supervisor.services.status`), and the client SDK maps status codes back. Messages
follow containerd's style (`namespace "x": not found`) so `ctr` prints them once.
No grpc import here: the domain must not depend on the transport.
"""

from __future__ import annotations

import errno
import os


class DockyardError(Exception):
    """Base of every error the daemon reports to a client.

    `kind` is the suffix containerd's clients strip from a description ("not found"),
    appended by `__str__` only when the message does not already end with it.
    """

    kind = "unknown"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        if self.message.endswith(": " + self.kind):
            return self.message
        return f"{self.message}: {self.kind}"


class NotFound(DockyardError):
    kind = "not found"


class AlreadyExists(DockyardError):
    kind = "already exists"


class InvalidArgument(DockyardError):
    kind = "invalid argument"


class OutOfRange(InvalidArgument):
    """A read or write at an offset past what there is (gRPC's OUT_OF_RANGE). An InvalidArgument,
    so callers that catch bad arguments catch it too. containerd words these itself without a
    kind suffix ("read past object length 5 bytes"), so the message is sent as it is."""

    kind = "out of range"

    def __str__(self) -> str:
        return self.message


class FailedPrecondition(DockyardError):
    kind = "failed precondition"


class Unavailable(DockyardError):
    kind = "unavailable"


class Aborted(DockyardError):
    kind = "aborted"


class ResourceExhausted(DockyardError):
    kind = "resource exhausted"


class Unimplemented(DockyardError):
    kind = "not implemented"


NotImplementedYet = Unimplemented  # old name, kept until its last users move


class Internal(DockyardError):
    kind = "internal"


class Cancelled(DockyardError):
    kind = "context canceled"


class DeadlineExceeded(DockyardError):
    kind = "context deadline exceeded"


class Unknown(DockyardError):
    kind = "unknown"


# Out of a resource the host or the daemon has: space, quota, open files, memory.
EXHAUSTED_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def unexpected(exc: BaseException) -> DockyardError:
    """An exception no handler turned into a domain error, for a caller to read: an OSError in
    the system's words without Python's ("[Errno 24] ..."), ResourceExhausted when the host or
    the daemon is out of something (open files: a daemon run with a low limit), else Internal."""
    if isinstance(exc, DockyardError):
        return exc
    text = error_text(exc) or "unexpected failure"
    return ResourceExhausted(text) if isinstance(exc, OSError) and exc.errno in EXHAUSTED_ERRNOS else Internal(text)


def error_text(exc: BaseException) -> str:
    """An exception in words for a message: an OSError as the system says it ("Too many open
    files: /run/x"), without Python's "[Errno 24]" and quotes; anything else as str() does."""
    if not isinstance(exc, OSError) or not exc.strerror:
        return str(exc)
    text = exc.strerror
    for name in (exc.filename, exc.filename2):
        if name is not None:
            text += f": {os.fsdecode(name) if isinstance(name, str | bytes) else name}"
    return text


def from_os_error(what: str, exc: OSError) -> DockyardError:
    """The error kind an OSError met while acting on a caller's paths or data stands for, with
    `what` and the system's words: out of space is ResourceExhausted, a missing path NotFound, a
    path the caller cannot write (read-only, no permission, busy) FailedPrecondition, a path of the
    wrong shape (not a directory, a directory, a loop, too long, exists) InvalidArgument; only the
    rest is Internal. One table, so a `dock cp` to /proc/sys or from a vanished /proc file is the
    caller's mistake in every module that acts on such paths, never "internal"."""
    detail = exc.strerror or str(exc)
    code = exc.errno
    if code in EXHAUSTED_ERRNOS:
        return ResourceExhausted(f"{what}: {detail}")
    if code == errno.ENOENT:
        return NotFound(f"{what}: {detail}")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.EBUSY, errno.ETXTBSY):
        return FailedPrecondition(f"{what}: {detail}")
    if code in (errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ELOOP, errno.EMLINK,
                errno.EINVAL, errno.EXDEV, errno.ENXIO, errno.ENODEV, errno.ENOTEMPTY, errno.EFBIG):
        return InvalidArgument(f"{what}: {detail}")
    return Internal(f"{what}: {detail}")
