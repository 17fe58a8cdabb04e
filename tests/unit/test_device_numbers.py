"""Device numbers past the kernel's dev_t (12 bits of major, 20 of minor) are refused where they
enter, naming the field: an OCI spec's linux.devices and linux.resources, before any mknod or
cgroup write could fail with Python's words ("Python int too large to convert to C int")."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from shim.cgroups import Resources
from shim.init.spec import default_spec, parse_spec

BAD = [(1 << 40, 1), (1 << 31, 0), (4096, 0), (0, 1 << 20), (0, -3)]


@pytest.mark.parametrize(("major", "minor"), BAD)
def test_spec_devices_out_of_range(major: int, minor: int) -> None:
    s: dict[str, Any] = default_spec()
    s["process"]["terminal"] = False
    s["linux"]["devices"] = [{"path": "/dev/x", "type": "c", "major": major, "minor": minor}]
    with pytest.raises(InvalidArgument) as info:
        parse_spec(s)
    message = str(info.value)
    assert "linux.devices[0]" in message and "out of range" in message and "Python" not in message


def test_spec_devices_at_the_limits_parse() -> None:
    s: dict[str, Any] = default_spec()
    s["linux"]["devices"] = [{"path": "/dev/x", "type": "b", "major": 4095, "minor": (1 << 20) - 1}]
    dev = parse_spec(s).linux.devices[0]
    assert (dev.major, dev.minor) == (4095, (1 << 20) - 1)


@pytest.mark.parametrize(("major", "minor"), [(1 << 40, 1), (4096, 0), (0, 1 << 20), (-2, 0)])
def test_cgroup_device_rules_out_of_range(major: int, minor: int) -> None:
    with pytest.raises(InvalidArgument, match=r"linux\.resources\.devices: device number .* out of range"):
        Resources.from_oci({"devices": [{"allow": True, "type": "c", "major": major, "minor": minor}]})


def test_cgroup_device_rules_any_is_minus_one() -> None:
    r = Resources.from_oci({"devices": [{"allow": False, "type": "c", "major": -1, "minor": -1}]})
    assert r.devices[0].v1_line() == "c *:* rwm"


def test_throttle_devices_out_of_range() -> None:
    with pytest.raises(InvalidArgument, match=r"throttleReadBpsDevice: device number 8:1048576 is out of range"):
        Resources.from_oci({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 1 << 20, "rate": 1}]}})
