"""One rule for device numbers (`dockyard_common.devices`): the kernel's 12-bit major, 20-bit minor,
checked with the same words by an OCI spec's devices, its cgroup rules and a layer's device entries."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from dockyard_common.devices import DEV_MAJOR_MAX, DEV_MINOR_MAX, check_device_number
from dockyard_common.errors import InvalidArgument
from shim.cgroups import Resources
from shim.init.spec import default_spec, parse_spec
from supervisor.archive.apply import apply_layer
from tests.unit.archive_fixtures import build_tar, char_device

RANGES = f"(major 0-{DEV_MAJOR_MAX}, minor 0-{DEV_MINOR_MAX})"


def test_the_limits_are_the_kernels() -> None:
    assert (DEV_MAJOR_MAX, DEV_MINOR_MAX) == (4095, 1048575)


@pytest.mark.parametrize(("major", "minor"), [(0, 0), (4095, 1048575), (None, None), (None, 5), (8, None)])
def test_numbers_that_fit(major: int | None, minor: int | None) -> None:
    check_device_number(major, minor, "here")


@pytest.mark.parametrize(("major", "minor"), [(4096, 0), (0, 1 << 20), (-1, 0), (0, -1), (1 << 40, None)])
def test_numbers_that_do_not_fit(major: int | None, minor: int | None) -> None:
    with pytest.raises(ValueError, match=rf"^here: device number {major}:{minor} is out of range \(major"):
        check_device_number(major, minor, "here")
    with pytest.raises(InvalidArgument):
        check_device_number(major, minor, "here", InvalidArgument)


def test_every_place_that_takes_a_device_says_the_same(tmp_path: Path) -> None:
    spec: dict[str, Any] = default_spec()
    spec["linux"]["devices"] = [{"path": "/dev/x", "type": "c", "major": 4096, "minor": 1}]
    with pytest.raises(InvalidArgument) as a:
        parse_spec(spec)
    with pytest.raises(InvalidArgument) as b:
        Resources.from_oci({"devices": [{"allow": True, "type": "c", "major": 4096, "minor": 1}]})
    with pytest.raises(InvalidArgument) as c:
        apply_layer(io.BytesIO(build_tar([char_device("x", 4096, 1)], format=tarfile.GNU_FORMAT)),  # type: ignore[arg-type]
                    tmp_path, whiteout_mode="delete")
    assert a.value.message == f"spec: linux.devices[0]: device number 4096:1 is out of range {RANGES}"
    assert b.value.message == f"linux.resources.devices: device number 4096:1 is out of range {RANGES}"
    assert c.value.message == f"tar entry 'x': device number 4096:1 is out of range {RANGES}"
    assert list(tmp_path.iterdir()) == []
