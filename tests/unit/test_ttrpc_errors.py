"""The grpc-free status table (dockyard_common.codes) shared by the gRPC edge, ttrpc and the SDK,
and the shim's no-grpc rule."""

from __future__ import annotations

import errno
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard_common import errors
from dockyard_common.codes import CODES, Code, code_for, error_from_status
from dockyard_common.ttrpc import errors as ttrpc_errors

REPO = Path(__file__).resolve().parents[2]


def test_code_numbers_are_grpcs() -> None:
    import grpc

    assert {c.name: c.value for c in Code} == {c.name: c.value[0] for c in grpc.StatusCode}


def test_grpc_edge_and_ttrpc_use_the_one_table() -> None:
    from supervisor.services import status

    for kind, code in CODES.items():
        assert status.code_for(kind("x")).value[0] == code
        assert ttrpc_errors.code_for(kind("x")) == code


@pytest.mark.parametrize("kind", list(CODES))
def test_every_domain_error_round_trips(kind: type[errors.DockyardError]) -> None:
    err = kind("thing x")
    code = code_for(err)
    back = error_from_status(code, str(err))
    assert type(back) is kind
    assert back.message == "thing x"
    assert str(back) == str(err)


def test_subclasses_and_raw_statuses() -> None:
    assert ttrpc_errors.code_for(ttrpc_errors.ConnectionClosed("ttrpc: closed")) == Code.UNAVAILABLE
    assert ttrpc_errors.code_for(ttrpc_errors.TTRPCError(Code.PERMISSION_DENIED, "no")) == Code.PERMISSION_DENIED
    assert ttrpc_errors.code_for(FileNotFoundError(errno.ENOENT, "x")) == Code.NOT_FOUND
    assert ttrpc_errors.code_for(FileExistsError(errno.EEXIST, "x")) == Code.ALREADY_EXISTS
    assert ttrpc_errors.code_for(PermissionError(errno.EACCES, "x")) == Code.PERMISSION_DENIED
    assert ttrpc_errors.code_for(ValueError("x")) == Code.UNKNOWN
    # a subclass with no code of its own takes its base kind's
    assert code_for(ttrpc_errors.ConnectionClosed("closed")) == Code.UNAVAILABLE
    # codes with no domain kind arrive as Unknown, message intact
    err = error_from_status(Code.PERMISSION_DENIED, "denied")
    assert type(err) is errors.Unknown and err.message == "denied"
    # a message without the suffix (as Go's errdefs may send) is kept whole
    assert error_from_status(Code.NOT_FOUND, "container not created").message == "container not created"


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
