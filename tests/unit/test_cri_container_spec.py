"""A CRI container's pieces without a daemon: the request's checks (cri_containers_pb), the stored
config's round trip, and the OCI spec built from it (container_spec)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_common.errors import InvalidArgument
from supervisor.cri.container_create import _signal_of
from supervisor.cri.container_spec import (
    PodContext,
    User,
    container_spec,
    host_device,
    merged_env,
    process_args,
)
from supervisor.cri.container_types import ContainerConfig
from supervisor.cri.podfiles import PodPaths
from supervisor.cri.sandbox_types import NamespaceMode, NamespaceModes, PodConfig, PodMetadata
from supervisor.services.cri_containers_pb import container_config

CID = "cd" * 32
POD = PodConfig(PodMetadata("web", "u1", "default"), hostname="web-0", cgroup_parent="/kubepods/pod1")
FILES = PodPaths(Path("/run/d/cri/sandboxes/p/shm"), Path("/run/d/cri/sandboxes/p/hostname"))


def request(**more: Any) -> pb.ContainerConfig:
    return pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app", attempt=1),
                              image=pb.ImageSpec(image="busybox"), **more)


def spec_of(cfg: ContainerConfig, pod: PodConfig = POD, image: dict[str, Any] | None = None) -> dict[str, Any]:
    return container_spec(cfg, PodContext("p" * 64, pod, 4242, FILES), CID, "k8s.io", "docker.io/library/busybox",
                          image if image is not None else {"Cmd": ["sh"], "Env": ["PATH=/bin", "A=image"]},
                          User(1000, 1000, (5,)), own_oom_score_adj=-100)


def test_config_round_trips_through_its_stored_form() -> None:
    cfg = container_config(request(
        command=["sh"], envs=[pb.KeyValue(key="A", value=b"1")], labels={"k": "v"},
        mounts=[pb.Mount(container_path="/data/", host_path="/srv", readonly=True,
                         propagation=pb.PROPAGATION_HOST_TO_CONTAINER)],
        linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(memory_limit_in_bytes=16 << 20),
                                      security_context=pb.LinuxContainerSecurityContext(
                                          capabilities=pb.Capability(add_capabilities=["NET_ADMIN"])))))
    assert cfg.mounts[0].container_path == "/data" and cfg.envs == (("A", "1"),)
    assert ContainerConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    with pytest.raises(InvalidArgument):
        ContainerConfig.from_json({"metadata": {}})


@pytest.mark.parametrize(("more", "words"), [
    ({"image": pb.ImageSpec()}, "image must not be empty"),
    ({"metadata": pb.ContainerMetadata()}, "metadata.name"),
    ({"working_dir": "rel"}, "working_dir"),
    ({"log_path": "/abs.log"}, "log_path"),
    ({"envs": [pb.KeyValue(key="A=B", value=b"")]}, "envs[0]"),
    ({"mounts": [pb.Mount(container_path="rel", host_path="/x")]}, "mounts[0]"),
    ({"linux": pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(cpu_shares=-1))}, "cpu_shares"),
    ({"linux": pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(cpu_shares=1))}, "cpu_shares 1"),
    ({"linux": pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(cpu_period=10))}, "cpu_period"),
    ({"linux": pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(cpu_quota=10))}, "cpu_quota"),
    ({"linux": pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(memory_limit_in_bytes=4096))},
     "below the minimum"),
    ({"linux": pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
        namespace_options=pb.NamespaceOption(pid=pb.TARGET)))}, "target_id"),
])
def test_bad_requests_name_the_field(more: dict[str, Any], words: str) -> None:
    base = {"metadata": pb.ContainerMetadata(name="app"), "image": pb.ImageSpec(image="busybox")}
    with pytest.raises(InvalidArgument, match=words.replace("[", r"\[").replace("]", r"\]")):
        container_config(pb.ContainerConfig(**{**base, **more}))


def test_command_args_and_env_merge_with_the_image() -> None:
    image = {"Entrypoint": ["/ep"], "Cmd": ["default"]}
    cfg = container_config(request())
    assert process_args(cfg, image) == ["/ep", "default"]
    assert process_args(container_config(request(args=["x"])), image) == ["/ep", "x"]
    assert process_args(container_config(request(command=["/bin/sh"])), image) == ["/bin/sh"]
    assert process_args(container_config(request(command=["/bin/sh"], args=["-c", "true"])), image) == \
        ["/bin/sh", "-c", "true"]
    with pytest.raises(InvalidArgument, match="no command"):
        process_args(cfg, {})
    assert merged_env(["PATH=/bin", "A=1"], (("A", "2"), ("B", "3"))) == ["PATH=/bin", "A=2", "B=3"]


def test_spec_joins_the_pod() -> None:
    cfg = container_config(request(working_dir="/w", tty=True, linux=pb.LinuxContainerConfig(
        resources=pb.LinuxContainerResources(cpu_shares=512, cpu_quota=5000, cpu_period=10000,
                                             memory_limit_in_bytes=1 << 24, oom_score_adj=-500))))
    spec = spec_of(cfg)
    namespaces = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert namespaces == {"pid": "/proc/4242/ns/pid", "ipc": "/proc/4242/ns/ipc", "uts": "/proc/4242/ns/uts",
                          "mount": None, "network": None}  # network: joined by the wiring at task create
    assert "hostname" not in spec  # the pause set it in the UTS namespace joined
    process = spec["process"]
    assert process["args"] == ["sh"] and process["cwd"] == "/w" and process["terminal"] is True
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [5, 1000]}
    assert process["oomScoreAdj"] == -100  # clamped to the daemon's own
    assert spec["linux"]["cgroupsPath"] == f"/kubepods/pod1/{CID}"
    assert spec["linux"]["resources"]["cpu"] == {"shares": 512, "quota": 5000, "period": 10000}
    assert spec["linux"]["resources"]["memory"] == {"limit": 1 << 24}
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/dev/shm"]["source"] == str(FILES.shm) and mounts["/dev/shm"]["type"] == "bind"
    assert mounts["/etc/hostname"]["source"] == str(FILES.hostname)
    assert spec["annotations"]["io.kubernetes.cri.container-type"] == "container"
    assert spec["annotations"]["io.kubernetes.cri.container-name"] == "app"


def test_spec_namespace_modes_and_mounts() -> None:
    host = PodConfig(PodMetadata("h", "u", "d"), namespaces=NamespaceModes(NamespaceMode.NODE, NamespaceMode.POD,
                                                                          NamespaceMode.NODE))
    own_pid = container_config(request(
        mounts=[pb.Mount(container_path="/etc/hosts", host_path="/my/hosts"),
                pb.Mount(container_path="/m", host_path="/h", propagation=pb.PROPAGATION_BIDIRECTIONAL)],
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            namespace_options=pb.NamespaceOption(pid=pb.CONTAINER)))))
    spec = spec_of(own_pid, host)
    namespaces = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert namespaces == {"pid": None, "mount": None}  # host network, UTS and IPC; a PID namespace of its own
    mounts = {m["destination"]: m for m in spec["mounts"]}
    assert mounts["/dev/shm"]["source"] == "/dev/shm"  # the host's, with its IPC namespace
    assert mounts["/etc/hosts"]["source"] == "/my/hosts"  # the CRI's mount wins over the host file
    assert mounts["/etc/resolv.conf"]["source"] == "/etc/resolv.conf"
    assert mounts["/m"]["options"] == ["rbind", "rshared", "rw"]
    assert spec["linux"]["rootfsPropagation"] == "rshared"
    node_pid = container_config(request(linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(namespace_options=pb.NamespaceOption(pid=pb.NODE)))))
    assert "pid" not in {n["type"] for n in spec_of(node_pid)["linux"]["namespaces"]}


def test_capabilities_and_privileged() -> None:
    cfg = container_config(request(linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["KILL"]),
        readonly_rootfs=True, no_new_privs=True))))
    spec = spec_of(cfg)
    caps = spec["process"]["capabilities"]["bounding"]
    assert "CAP_NET_ADMIN" in caps and "CAP_KILL" not in caps
    assert spec["root"]["readonly"] is True and spec["process"]["noNewPrivileges"] is True
    bad = container_config(request(linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=["NOPE"])))))
    with pytest.raises(InvalidArgument, match="NOPE"):
        spec_of(bad)
    privileged = spec_of(container_config(request(linux=pb.LinuxContainerConfig(
        security_context=pb.LinuxContainerSecurityContext(privileged=True)))))
    assert privileged["linux"]["maskedPaths"] == [] and privileged["linux"]["resources"]["devices"][0]["allow"]


def test_seccomp_paths_devices_and_stop_signal() -> None:
    cfg = container_config(request(
        devices=[pb.Device(container_path="/dev/mynull", host_path="/dev/null", permissions="rw")],
        linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
            seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault),
            masked_paths=["/proc/secret"], readonly_paths=["/proc/ro"]))))
    devices = tuple(host_device(d.container_path, d.host_path, d.permissions) for d in cfg.devices)
    spec = container_spec(cfg, PodContext("p" * 64, POD, 1, None), CID, "k8s.io", "b", {"Cmd": ["sh"]},
                          User(0, 0), devices=devices)
    assert spec["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
    assert spec["linux"]["maskedPaths"] == ["/proc/secret"] and spec["linux"]["readonlyPaths"] == ["/proc/ro"]
    assert {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666, "uid": 0, "gid": 0} \
        in spec["linux"]["devices"]
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"} in spec["linux"]["resources"]["devices"]
    assert "seccomp" not in spec_of(container_config(request()))["linux"]  # unconfined unless asked
    with pytest.raises(InvalidArgument, match="not a character or block device"):
        host_device("/dev/x", "/etc/hostname", "rwm")
    with pytest.raises(InvalidArgument, match="permissions"):
        container_config(request(devices=[pb.Device(container_path="/d", host_path="/dev/null", permissions="x")]))
    assert [_signal_of(t) for t in ("", "SIGQUIT", "int", "9", "SIGNOPE")] == [15, 3, 2, 9, 15]
