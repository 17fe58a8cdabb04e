"""The grpc-free status table of the ttrpc layer, and the shim's no-grpc rule."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard_common import errors
from dockyard_common.ttrpc import errors as codes

REPO = Path(__file__).resolve().parents[2]


def test_code_table_equals_the_grpc_edge() -> None:
    import grpc

    from supervisor.services import status

    assert {kind: code.value[0] for kind, code in status.CODES.items()} == codes.CODES
    # and the numbers are gRPC's
    for name in ("OK", "CANCELLED", "UNKNOWN", "NOT_FOUND", "UNIMPLEMENTED", "UNAVAILABLE", "UNAUTHENTICATED"):
        assert getattr(codes, name) == getattr(grpc.StatusCode, name).value[0]


@pytest.mark.parametrize("kind", list(codes.CODES))
def test_every_domain_error_round_trips(kind: type[errors.DockyardError]) -> None:
    err = kind("thing x")
    code = codes.code_for(err)
    back = codes.error_from_status(code, str(err))
    assert type(back) is kind
    assert back.message == "thing x"
    assert str(back) == str(err)


def test_subclasses_and_raw_statuses() -> None:
    assert codes.code_for(codes.ConnectionClosed("ttrpc: closed")) == codes.UNAVAILABLE
    assert codes.code_for(codes.TTRPCError(codes.PERMISSION_DENIED, "no")) == codes.PERMISSION_DENIED
    assert codes.code_for(FileNotFoundError(errno.ENOENT, "x")) == codes.NOT_FOUND
    assert codes.code_for(FileExistsError(errno.EEXIST, "x")) == codes.ALREADY_EXISTS
    assert codes.code_for(PermissionError(errno.EACCES, "x")) == codes.PERMISSION_DENIED
    assert codes.code_for(ValueError("x")) == codes.UNKNOWN
    # codes with no domain kind arrive as Unknown, message intact
    err = codes.error_from_status(codes.PERMISSION_DENIED, "denied")
    assert type(err) is errors.Unknown and err.message == "denied"
    # a message without the suffix (as Go's errdefs may send) is kept whole
    assert codes.error_from_status(codes.NOT_FOUND, "container not created").message == "container not created"


def test_shim_ttrpc_imports_no_grpc_and_starts_no_threads() -> None:
    code = (
        "import sys, threading\n"
        "import dockyard_common.ttrpc, dockyard_common.ttrpc.server, dockyard_common.ttrpc.client\n"
        "from dockyard_api.containerd.runtime.v2.task import shim_pb2\n"
        "bad = sorted(m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', '_grpc', 'grpc_')))\n"
        "assert not bad, bad\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
