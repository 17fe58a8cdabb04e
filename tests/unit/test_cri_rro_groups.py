"""Recursive read-only mounts and SupplementalGroupsPolicy, the pure parts: runc's recursive mount
options as the shim parses them, the CRI mount's recursive_read_only as the daemon checks it and
writes it into the spec, the groups policy kept with the config, ContainerStatus' user, and the
runtime handlers Status reports. The kernel side is tests/integration/test_cri_rro_groups.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_common import linux as L
from dockyard_common.errors import InvalidArgument
from dockyard_common.mountopts import parse_mount_options
from shim.init.plan import _mount_step
from shim.init.spec import SpecMount
from supervisor.cri.container_create import _check_recursive_read_only
from supervisor.cri.container_spec import PodContext, User, container_spec
from supervisor.cri.container_types import (
    ContainerConfig,
    ContainerMetadata,
    ContainerState,
    ContainerUser,
    CriContainer,
    SupplementalGroupsPolicy,
)
from supervisor.cri.podfiles import PodPaths
from supervisor.cri.runtime import Handler, runtime_handlers
from supervisor.cri.sandbox import HANDLERS
from supervisor.cri.sandbox_types import PodConfig, PodMetadata
from supervisor.services.cri_containers_pb import container_config, status_pb

POD = PodConfig(PodMetadata("web", "u1", "default"))
FILES = PodPaths(Path("/run/d/cri/sandboxes/p/shm"), Path("/run/d/cri/sandboxes/p/hostname"))


def request(mounts: list[pb.Mount] | None = None, **security: Any) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app"), image=pb.ImageSpec(image="busybox"),
                              mounts=mounts or [], linux=pb.LinuxContainerConfig(
                                  security_context=pb.LinuxContainerSecurityContext(**security)))


def spec_mount(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    return next(m for m in spec["mounts"] if m["destination"] == destination)


def test_recursive_options_become_tree_attributes() -> None:
    opts = parse_mount_options(["rbind", "ro", "rro", "rnosuid", "rnodev"])
    assert opts.flags == L.MS_BIND | L.MS_REC | L.MS_RDONLY  # "ro" still remounts the top read-only
    assert opts.attr_set == L.MOUNT_ATTR_RDONLY | L.MOUNT_ATTR_NOSUID | L.MOUNT_ATTR_NODEV
    assert opts.attr_clr == 0 and opts.data == "" and opts.recursive_attrs
    # both of a pair kept, as runc keeps them (the kernel clears, then sets: the set wins)
    both = parse_mount_options(["rro", "rnoexec", "rrw", "rexec", "rnosymfollow", "rsuid"])
    assert both.attr_set == L.MOUNT_ATTR_RDONLY | L.MOUNT_ATTR_NOEXEC | L.MOUNT_ATTR_NOSYMFOLLOW
    assert both.attr_clr == L.MOUNT_ATTR_RDONLY | L.MOUNT_ATTR_NOEXEC | L.MOUNT_ATTR_NOSUID
    assert not parse_mount_options(["rbind", "ro"]).recursive_attrs


@pytest.mark.parametrize("option", ["ridmap", "idmap", "ratime", "rnoatime"])
def test_recursive_options_not_built_are_refused_by_name(option: str) -> None:
    with pytest.raises(InvalidArgument, match=f"mounts\\[3\\].*{option}"):
        parse_mount_options(["rbind", option], "mounts[3]")


def test_the_shims_bind_step_keeps_the_attributes() -> None:
    # a "bind" type without a bind option is made a bind: the attributes must survive that
    step = _mount_step("/r", "/b", SpecMount("/mnt", type="bind", source="/src", options=("ro", "rro")), 0)
    assert step.kind == "bind" and step.options.is_bind
    assert step.options.attr_set == L.MOUNT_ATTR_RDONLY and step.options.flags & L.MS_RDONLY


@pytest.mark.parametrize(("mount", "words"), [
    (pb.Mount(container_path="/m", host_path="/h", recursive_read_only=True), "needs readonly"),
    (pb.Mount(container_path="/m", host_path="/h", readonly=True, recursive_read_only=True,
              propagation=pb.PROPAGATION_HOST_TO_CONTAINER), "needs propagation PROPAGATION_PRIVATE"),
    (pb.Mount(container_path="/m", host_path="/h", readonly=True, recursive_read_only=True,
              propagation=pb.PROPAGATION_BIDIRECTIONAL), "needs propagation PROPAGATION_PRIVATE"),
])
def test_a_recursive_read_only_mount_must_be_read_only_and_private(mount: pb.Mount, words: str) -> None:
    with pytest.raises(InvalidArgument, match=r"mounts\[0\]: recursive_read_only " + words):
        container_config(request([mount]))


def test_recursive_read_only_in_the_spec_the_stored_config_and_the_status() -> None:
    cfg = container_config(request([
        pb.Mount(container_path="/rro", host_path="/h1", readonly=True, recursive_read_only=True),
        pb.Mount(container_path="/ro", host_path="/h2", readonly=True)]))
    assert [m.recursive_read_only for m in cfg.mounts] == [True, False]
    spec = container_spec(cfg, PodContext("p" * 64, POD, 4242, FILES), "c" * 64, "k8s.io", "busybox",
                          {"Cmd": ["sh"]}, User(0, 0))
    assert spec_mount(spec, "/rro")["options"] == ["rbind", "rprivate", "ro", "rro"]
    assert spec_mount(spec, "/ro")["options"] == ["rbind", "rprivate", "ro"]
    assert ContainerConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    status = status_pb(CriContainer("c" * 64, "p" * 64, cfg, ContainerState.CREATED, 1, "busybox", "sha256:x"))
    assert [m.recursive_read_only for m in status.mounts] == [True, False]


def test_groups_policy_is_checked_and_kept() -> None:
    assert container_config(request()).security.supplemental_groups_policy == SupplementalGroupsPolicy.MERGE
    strict = container_config(request(supplemental_groups=[1234], supplemental_groups_policy=pb.Strict))
    assert strict.security.supplemental_groups_policy == SupplementalGroupsPolicy.STRICT
    assert ContainerConfig.from_json(json.loads(json.dumps(strict.to_json()))) == strict
    with pytest.raises(InvalidArgument, match="supplemental_groups_policy: unknown policy 7"):
        container_config(request(supplemental_groups_policy=7))


def test_a_config_stored_before_either_field_reads_with_the_defaults() -> None:
    cfg = container_config(request([pb.Mount(container_path="/m", host_path="/h", readonly=True)]))
    stored = cfg.to_json()
    del stored["security"]["supplemental_groups_policy"]
    del stored["mounts"][0]["recursive_read_only"]
    assert ContainerConfig.from_json(stored) == cfg


def test_status_reports_the_first_process_user() -> None:
    cfg = ContainerConfig(ContainerMetadata("app"), "busybox")
    c = CriContainer("c" * 64, "p" * 64, cfg, ContainerState.RUNNING, 1, "busybox", "sha256:x",
                     user=ContainerUser(1000, 1000, (1000, 1234, 50000)))
    linux = status_pb(c).user.linux
    assert (linux.uid, linux.gid, list(linux.supplemental_groups)) == (1000, 1000, [1000, 1234, 50000])
    assert not status_pb(CriContainer("c" * 64, "p" * 64, cfg, ContainerState.CREATED, 1, "b", "s")).HasField("user")


def test_runtime_handlers_and_their_features() -> None:
    rro = L.has_mount_setattr()  # this kernel's answer (asked once)
    found = runtime_handlers(HANDLERS, ("kata",))
    assert found == [Handler("", rro), Handler("runc", rro), Handler("kata", False)]
    # the default runtime's name mapped to another shim binary: not our shim, nothing promised
    assert runtime_handlers(HANDLERS, ("io.containerd.runc.v2",)) == [
        Handler("", False), Handler("runc", False), Handler("io.containerd.runc.v2", False)]


def test_create_refuses_rro_where_the_handler_does_not_report_it() -> None:
    cfg = container_config(request([pb.Mount(container_path="/m", host_path="/h", readonly=True,
                                             recursive_read_only=True)]))
    with pytest.raises(InvalidArgument, match="recursive_read_only mounts are not supported by runtime 'kata'"):
        _check_recursive_read_only(cfg, "kata", ("kata",))
    _check_recursive_read_only(container_config(request()), "kata", ("kata",))  # none asked: fine
    if L.has_mount_setattr():
        _check_recursive_read_only(cfg, "io.containerd.runc.v2", ("kata",))  # our shim's: fine
