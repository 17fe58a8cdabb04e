"""CNI CHECK with Debian's portmap 1.1.1, which CHECKs IPv6 chains it never made for an
IPv4-only container (containernetworking/plugins#819): that one failure is not a fault and must
not hide the plugins after it; any other failure still is. Plugins here are small scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.network.cni import CNIPluginError, CNIRunner

V6_BUG = {"code": 999, "msg": "could not check ipv6 dnat: chain CNI-DN-x not found in iptables table nat"}
CONFLIST = {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "portmap"}, {"type": "firewall"}]}


def plugin(d: Path, name: str, error: dict[str, object] | None) -> None:
    out = d / name
    body = f"cat > /dev/null\necho $CNI_COMMAND >> {d}/ran-{name}\n"
    if error is not None:
        body += f"echo '{json.dumps(error)}'\nexit 1\n"
    out.write_text("#!/bin/sh\n" + body)
    out.chmod(0o755)


def result(address: str) -> dict[str, object]:
    return {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": address, "interface": 0}]}


async def test_portmaps_ipv6_check_bug_is_ignored_for_an_ipv4_container(tmp_path: Path) -> None:
    plugin(tmp_path, "portmap", V6_BUG)
    plugin(tmp_path, "firewall", None)
    await CNIRunner([tmp_path]).check(CONFLIST, "c", "/x", "eth0", result("10.88.0.2/16"))
    assert (tmp_path / "ran-firewall").read_text() == "CHECK\n"  # the next plugin was CHECKed


async def test_it_is_a_fault_with_ipv6_or_from_another_plugin(tmp_path: Path) -> None:
    plugin(tmp_path, "portmap", V6_BUG)
    plugin(tmp_path, "firewall", None)
    with pytest.raises(CNIPluginError, match="could not check ipv6"):
        await CNIRunner([tmp_path]).check(CONFLIST, "c", "/x", "eth0", result("fd00::2/64"))
    plugin(tmp_path, "portmap", {"code": 999, "msg": "could not check ipv4 dnat"})
    with pytest.raises(CNIPluginError, match="ipv4"):
        await CNIRunner([tmp_path]).check(CONFLIST, "c", "/x", "eth0", result("10.88.0.2/16"))
    assert not (tmp_path / "ran-firewall").exists()
