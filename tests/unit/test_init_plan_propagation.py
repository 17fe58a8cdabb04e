"""The root propagation steps of the container init (shim.init.plan): a shared rootfsPropagation
is applied right after unshare, as runc does, with the rootfs's parent mount made a slave first
so the snapshot's mounts stay ours; anything else starts rslave. No root needed."""

from __future__ import annotations

import pytest

from dockyard_common import linux as L
from shim.init import plan as P
from tests.unit.test_init_plan import BUNDLE, make_spec, names


def stage1_propagations(plan: P.Plan) -> list[int]:
    return [s.flags for s in plan.stage1 if isinstance(s, P.SetPropagation)]


@pytest.mark.parametrize(("propagation", "flags"), [("rshared", L.MS_SHARED | L.MS_REC), ("shared", L.MS_SHARED)])
def test_shared_root_is_applied_before_the_rootfs_is_mounted(propagation: str, flags: int) -> None:
    plan = P.plan_create(make_spec(rootfsPropagation=propagation), BUNDLE, has_rootfs_mounts=True)
    assert names(plan.stage1)[-5:] == ["Unshare", "SetPropagation", "IsolateRootfsParent", "MountRootfs", "ForkInit"]
    assert stage1_propagations(plan) == [flags]
    isolate = next(s for s in plan.stage1 if isinstance(s, P.IsolateRootfsParent))
    assert isolate.rootfs == f"{BUNDLE}/rootfs"
    # init still sets it (for the rootfs bind) and again after the pivot, as before
    assert [s.flags for s in plan.init if isinstance(s, P.SetPropagation)] == [flags, flags]


@pytest.mark.parametrize("propagation", ["", "rslave", "rprivate", "slave", "private"])
def test_other_roots_start_rslave(propagation: str) -> None:
    spec = make_spec(rootfsPropagation=propagation) if propagation else make_spec()
    plan = P.plan_create(spec, BUNDLE, has_rootfs_mounts=True)
    assert stage1_propagations(plan) == [L.MS_SLAVE | L.MS_REC]
    assert "IsolateRootfsParent" not in names(plan.stage1)


def test_without_rootfs_mounts_nothing_to_isolate() -> None:
    plan = P.plan_create(make_spec(rootfsPropagation="rshared"), BUNDLE, has_rootfs_mounts=False)
    assert stage1_propagations(plan) == [L.MS_SHARED | L.MS_REC]
    assert "IsolateRootfsParent" not in names(plan.stage1) and "MountRootfs" not in names(plan.stage1)


def test_user_namespace_keeps_its_transient_rslave_namespace() -> None:
    """Shared mounts become slaves in a mount namespace owned by a less privileged user namespace
    anyway: the rootfs is still mounted in the transient rslave namespace first."""
    plan = P.plan_create(make_spec(userns=True, rootfsPropagation="rshared"), BUNDLE, has_rootfs_mounts=True)
    assert stage1_propagations(plan) == [L.MS_SLAVE | L.MS_REC]
    assert "IsolateRootfsParent" not in names(plan.stage1)
