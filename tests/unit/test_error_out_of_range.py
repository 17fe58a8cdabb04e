"""OutOfRange (issue 18): the content service's OUT_OF_RANGE comes from the one error mapping."""

from __future__ import annotations

import grpc

from dockyard_common import errors
from dockyard_common.codes import Code, error_from_status
from dockyard_common.ttrpc import errors as ttrpc_errors
from supervisor.services import status


def test_out_of_range_maps_both_ways_with_containerds_wording() -> None:
    err = errors.OutOfRange("read past object length 5 bytes")
    assert status.code_for(err) == grpc.StatusCode.OUT_OF_RANGE
    assert ttrpc_errors.code_for(err) == Code.OUT_OF_RANGE == grpc.StatusCode.OUT_OF_RANGE.value[0]
    assert str(err) == "read past object length 5 bytes"  # sent as containerd words it, no kind suffix
    back = error_from_status(Code.OUT_OF_RANGE, str(err))
    assert type(back) is errors.OutOfRange and str(back) == str(err)
    # callers that catch bad arguments (the SDK did map OUT_OF_RANGE to InvalidArgument) still do
    assert isinstance(back, errors.InvalidArgument)
    # a Go server's errdefs suffix is stripped, not doubled
    assert error_from_status(Code.OUT_OF_RANGE, "x: out of range").message == "x"
    # a plain InvalidArgument keeps its own code
    assert status.code_for(errors.InvalidArgument("bad")) == grpc.StatusCode.INVALID_ARGUMENT


def test_services_set_no_status_codes_of_their_own() -> None:
    from pathlib import Path

    services = Path(status.__file__).parent
    offenders = [p.name for p in services.glob("*.py")
                 if p.name != "status.py" and "context.abort(" in p.read_text()]
    assert offenders == [], "status codes are set by services/status.py only"
