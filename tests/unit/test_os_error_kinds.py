"""dockyard_common.errors.from_os_error: one errno table for every module that acts on a caller's
paths (dock cp's copy in and out, layer apply), so what is the caller's mistake is never "internal"."""

from __future__ import annotations

import errno
import os

import pytest

from dockyard_common.errors import (
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    from_os_error,
    unexpected,
)
from supervisor.archive import apply
from supervisor.runtime import copy


@pytest.mark.parametrize(("code", "kind"), [
    (errno.ENOSPC, ResourceExhausted), (errno.EDQUOT, ResourceExhausted), (errno.EMFILE, ResourceExhausted),
    (errno.ENFILE, ResourceExhausted), (errno.ENOMEM, ResourceExhausted),
    (errno.ENOENT, NotFound),
    (errno.EROFS, FailedPrecondition), (errno.EACCES, FailedPrecondition), (errno.EPERM, FailedPrecondition),
    (errno.EBUSY, FailedPrecondition), (errno.ETXTBSY, FailedPrecondition),
    (errno.ENOTDIR, InvalidArgument), (errno.EISDIR, InvalidArgument), (errno.ELOOP, InvalidArgument),
    (errno.ENAMETOOLONG, InvalidArgument), (errno.EEXIST, InvalidArgument), (errno.EINVAL, InvalidArgument),
    (errno.EIO, Internal),
])
def test_kinds(code: int, kind: type) -> None:
    err = from_os_error("copy /x", OSError(code, os.strerror(code)))
    assert type(err) is kind
    assert str(err).startswith(f"copy /x: {os.strerror(code)}")


@pytest.mark.parametrize("module", [copy, apply])
def test_modules_share_the_table(module: object) -> None:
    # /proc/self/environ gone, /proc/sys read-only: as they appeared in a `dock cp` fuzz round
    assert isinstance(module._os_error("/proc/self/environ", FileNotFoundError(errno.ENOENT, "gone")),  # type: ignore[attr-defined]
                      NotFound)
    assert isinstance(module._os_error("apply", OSError(errno.EROFS, "Read-only file system")),  # type: ignore[attr-defined]
                      FailedPrecondition)


def test_an_unexpected_error_in_words() -> None:
    """What no handler mapped reaches the caller without Python's "[Errno 24]": a daemon out of
    open files said `internal error: [Errno 24] Too many open files: '/run/.../address'`."""
    err = unexpected(OSError(errno.EMFILE, os.strerror(errno.EMFILE), "/run/x/address"))
    assert isinstance(err, ResourceExhausted) and str(err) == "Too many open files: /run/x/address: resource exhausted"
    err = unexpected(OSError(errno.EIO, os.strerror(errno.EIO)))
    assert isinstance(err, Internal) and str(err) == "Input/output error: internal"
    assert str(unexpected(RuntimeError())) == "unexpected failure: internal"
    kept = NotFound("x")
    assert unexpected(kept) is kept
