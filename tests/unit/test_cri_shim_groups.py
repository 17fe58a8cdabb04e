"""Pods sharing shims: the group a new pod takes (supervisor/cri/shimgroups.py), the config key
`[cri] pods_per_shim`, and the daemon's gate between a group's joiners and its last leaver
(supervisor/runtime/shimgate.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from supervisor.config import Config, ConfigError, load
from supervisor.cri.shimgroups import DEFAULT_PODS_PER_SHIM, group_name, pick_group
from supervisor.runtime.shimgate import ShimGate

RUNC = "io.containerd.runc.v2"


def test_one_pod_a_shim_names_no_group() -> None:
    assert pick_group(RUNC, [group_name(RUNC, 0)], 1) == ""


def test_a_pod_takes_the_first_group_with_room() -> None:
    g0, g1, g2 = (group_name(RUNC, i) for i in range(3))
    assert pick_group(RUNC, [], 3) == g0
    assert pick_group(RUNC, [g0, g0], 3) == g0
    assert pick_group(RUNC, [g0, g0, g0], 3) == g1
    # a place freed in group 0 is taken before a new group is started
    assert pick_group(RUNC, [g0, g0, g1, g1, g1, g2], 3) == g0
    assert pick_group(RUNC, [g0, g0, g0, g2], 3) == g1
    # pods with a shim of their own (no group), and other runtimes' groups, take no place
    assert pick_group(RUNC, ["", "", group_name("other", 0), group_name("other", 0)], 2) == g0
    assert pick_group("other", [group_name("other", 0)] * 2, 2) == group_name("other", 1)


def config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load(path, {})


def test_pods_per_shim_config(tmp_path: Path) -> None:
    assert config(tmp_path, "").cri_pods_per_shim == DEFAULT_PODS_PER_SHIM == Config().cri_pods_per_shim
    assert config(tmp_path, "[cri]\npods_per_shim = 1\n").cri_pods_per_shim == 1
    for bad, says in (("0", "cri.pods_per_shim must be 1-64 (1: a shim per pod), not 0"),
                      ("65", "cri.pods_per_shim must be 1-64"), ('"4"', "cri.pods_per_shim must be a int")):
        with pytest.raises(ConfigError, match=r"^.*" + says.replace("(", r"\(").replace(")", r"\)")):
            config(tmp_path, f"[cri]\npods_per_shim = {bad}\n")


async def test_a_leaver_waits_for_joiners_and_holds_new_ones_off() -> None:
    gate = ShimGate()
    order: list[str] = []
    joined = asyncio.Event()
    release_joiner = asyncio.Event()

    async def joiner(name: str, hold: asyncio.Event | None = None, group: str = "g") -> None:
        async with gate.joining(group):
            order.append(f"{name} in")
            joined.set()
            if hold is not None:
                await hold.wait()
        order.append(f"{name} out")

    async def leaver() -> None:
        async with gate.leaving("g"):
            order.append("leaver in")
            await asyncio.sleep(0)
        order.append("leaver out")

    first = asyncio.create_task(joiner("j1", release_joiner))
    await joined.wait()
    leaving = asyncio.create_task(leaver())
    await asyncio.sleep(0)
    late = asyncio.create_task(joiner("j2"))  # arrives while the leaver waits: queues behind it
    other = asyncio.create_task(joiner("other-group", group="h"))
    await asyncio.sleep(0)
    assert "leaver in" not in order and "j2 in" not in order
    await other
    assert "other-group out" in order  # another group's joiner was not held
    release_joiner.set()
    await asyncio.gather(first, leaving, late)
    assert order.index("j1 out") < order.index("leaver in") < order.index("leaver out") < order.index("j2 in")
    assert gate.idle()


async def test_other_groups_are_not_held() -> None:
    gate = ShimGate()
    async with gate.leaving("a"):
        async with asyncio.timeout(1):
            async with gate.joining("b"):
                pass
    assert gate.idle()
