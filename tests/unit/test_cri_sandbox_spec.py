"""The pod sandbox's pieces without a daemon: the request's checks (cri_sandbox_pb), the spec and
network labels built from it (sandbox_spec), the stored config's round trip, the [cri] config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard_api.cri.runtime.v1 import api_pb2 as pb
from dockyard_common import capabilities
from dockyard_common.errors import FailedPrecondition, InvalidArgument
from dockyard_common.netlabels import DNS, NETWORKS, PORTS
from supervisor import config as daemon_config
from supervisor.cri.sandbox_spec import network_labels, restrict_oom_score_adj, sandbox_spec
from supervisor.cri.sandbox_types import NamespaceMode, PodConfig
from supervisor.services.cri_sandbox_pb import pod_config

POD_ID = "ab" * 32
IMAGE = {"Entrypoint": ["/pause"], "Env": ["PATH=/bin"]}


def request(**linux: object) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="web", uid="u1", namespace="default", attempt=2),
                               hostname="web-0", log_directory="/var/log/pods/x",
                               dns_config=pb.DNSConfig(servers=["192.0.2.53"], searches=["svc"]),
                               port_mappings=[pb.PortMapping(container_port=80, host_port=8080),
                                              pb.PortMapping(container_port=81)],  # no host port: skipped
                               labels={"app": "web"}, linux=pb.LinuxPodSandboxConfig(**linux))  # type: ignore[arg-type]


def test_config_round_trips_through_its_stored_form() -> None:
    cfg = pod_config(request(cgroup_parent="/kubepods/pod1", sysctls={"kernel.shm_rmid_forced": "1"}), "runc")
    assert len(cfg.ports) == 1 and cfg.ports[0].host_port == 8080 and cfg.ports[0].protocol == "tcp"
    assert PodConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    with pytest.raises(InvalidArgument):
        PodConfig.from_json({"metadata": {}})


def test_pod_network_labels_and_host_network() -> None:
    labels = network_labels(pod_config(request(), ""), "dockyard")
    assert json.loads(labels[NETWORKS]) == ["bridge"] and json.loads(labels[DNS]) == ["192.0.2.53"]
    assert json.loads(labels[PORTS]) == ["8080:80"]
    host = pod_config(request(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=pb.NamespaceOption(network=pb.NODE))), "")
    assert network_labels(host, "none") == {}
    with pytest.raises(FailedPrecondition, match="no default network"):
        network_labels(pod_config(request(), ""), "none")


def test_spec_from_the_config() -> None:
    cfg = pod_config(request(cgroup_parent="/kubepods/pod1", security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=pb.NamespaceOption(network=pb.NODE, pid=pb.NODE), run_as_user=pb.Int64Value(value=65534),
        readonly_rootfs=True, seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))), "")
    assert cfg.namespaces.network == NamespaceMode.NODE
    spec = sandbox_spec(cfg, POD_ID, "k8s.io", "registry.k8s.io/pause:3.10", IMAGE, own_oom_score_adj=-500)
    types = {n["type"] for n in spec["linux"]["namespaces"]}
    assert types == {"ipc", "mount"}  # host network, UTS and PID
    assert "hostname" not in spec
    assert spec["process"]["args"] == ["/pause"] and spec["process"]["oomScoreAdj"] == -500
    assert spec["process"]["user"]["uid"] == 65534 and spec["root"]["readonly"] is True
    assert spec["linux"]["cgroupsPath"] == f"/kubepods/pod1/{POD_ID}"
    assert spec["linux"]["seccomp"]["defaultAction"]
    assert spec["annotations"]["io.kubernetes.cri.sandbox-id"] == POD_ID


def test_privileged_and_default_spec() -> None:
    cfg = pod_config(request(security_context=pb.LinuxSandboxSecurityContext(privileged=True)), "")
    spec = sandbox_spec(cfg, POD_ID, "k8s.io", "p", IMAGE, own_oom_score_adj=0)
    assert spec["hostname"] == "web-0" and spec["linux"]["cgroupsPath"] == f"/k8s.io/{POD_ID}"
    assert "seccomp" not in spec["linux"] and spec["linux"]["maskedPaths"] == []
    assert "CAP_SYS_ADMIN" in spec["process"]["capabilities"]["bounding"]
    # what this daemon has, not every capability: a host may withhold some (capset would fail)
    assert spec["process"]["capabilities"]["bounding"] == capabilities.current()
    assert spec["process"]["oomScoreAdj"] == 0  # -998 clamped to the daemon's own


@pytest.mark.parametrize(("linux", "words"), [
    ({"cgroup_parent": "kubepods.slice:cri:x"}, "cgroupfs"),
    ({"cgroup_parent": "/../x"}, "escapes"),
    ({"security_context": pb.LinuxSandboxSecurityContext(run_as_group=pb.Int64Value(value=5))}, "needs run_as_user"),
    ({"security_context": pb.LinuxSandboxSecurityContext(seccomp=pb.SecurityProfile(
        profile_type=pb.SecurityProfile.Localhost, localhost_ref="/nonexistent/profile.json"))}, "seccomp profile"),
])
def test_spec_refuses_what_it_cannot_honour(linux: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        sandbox_spec(pod_config(request(**linux), ""), POD_ID, "k8s.io", "p", IMAGE)


def test_request_checks() -> None:
    bad = request()
    bad.metadata.uid = ""
    with pytest.raises(InvalidArgument, match=r"metadata\.uid"):
        pod_config(bad, "")
    with pytest.raises(InvalidArgument, match="TARGET"):
        pod_config(request(security_context=pb.LinuxSandboxSecurityContext(
            namespace_options=pb.NamespaceOption(ipc=pb.TARGET))), "")
    with pytest.raises(InvalidArgument, match="no entrypoint"):
        sandbox_spec(pod_config(request(), ""), POD_ID, "k8s.io", "p", {})


def test_restrict_oom_score_adj() -> None:
    assert restrict_oom_score_adj(-998, own=-100) == -100
    assert restrict_oom_score_adj(500, own=-100) == 500


def test_cri_config_section(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_text('[cri]\nenabled = false\nsandbox_image = "example.org/pause:1"\n')
    cfg = daemon_config.load(file, {})
    assert cfg.cri_enabled is False and cfg.cri_sandbox_image == "example.org/pause:1"
    file.write_text("")
    assert daemon_config.load(file, {}).cri_sandbox_image == "registry.k8s.io/pause:3.10"
    file.write_text('[cri]\nenabled = "yes"\n')
    with pytest.raises(daemon_config.ConfigError, match=r"cri\.enabled must be a bool"):
        daemon_config.load(file, {})


def _userns_request(**userns: object) -> pb.PodSandboxConfig:
    one = [pb.IDMapping(container_id=0, host_id=100000, length=65536)]
    args: dict[str, object] = {"mode": pb.POD, "uids": one, "gids": one, **userns}
    return request(security_context=pb.LinuxSandboxSecurityContext(
        namespace_options=pb.NamespaceOption(userns_options=pb.UserNamespace(**args))))  # type: ignore[arg-type]


def test_a_pod_user_namespace_in_the_spec_and_the_stored_config() -> None:
    cfg = pod_config(_userns_request(), "runc")
    assert cfg.userns is not None
    assert cfg.userns.labels() == {"containerd.io/snapshot/uidmapping": "0:100000:65536",
                                   "containerd.io/snapshot/gidmapping": "0:100000:65536"}
    assert PodConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    old = cfg.to_json()
    del old["userns"]  # a record from before user namespaces: the host's
    assert PodConfig.from_json(json.loads(json.dumps(old))).userns is None
    spec = sandbox_spec(cfg, POD_ID, "k8s.io", "pause:3.10", IMAGE)
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"] == spec["linux"]["gidMappings"] == [
        {"containerID": 0, "hostID": 100000, "size": 65536}]
    # NODE (or nothing said) is the host's user namespace
    assert pod_config(_userns_request(mode=pb.NODE, uids=[], gids=[]), "runc").userns is None
    assert pod_config(request(), "runc").userns is None
    assert "uidMappings" not in sandbox_spec(pod_config(request(), "runc"), POD_ID, "k8s.io", "p", IMAGE)["linux"]


@pytest.mark.parametrize("userns, message", [
    ({"mode": pb.CONTAINER}, "CONTAINER is not supported"),
    ({"mode": pb.NODE}, "mode NODE takes no mappings"),
    ({"gids": []}, "gids: want exactly one mapping, got 0"),
    ({"uids": [pb.IDMapping(container_id=0, host_id=1, length=0)]}, "within 32-bit ids"),
    ({"uids": [pb.IDMapping(container_id=5, host_id=1, length=10)]}, "must start at container id 0"),
])
def test_what_cannot_be_a_pod_user_namespace(userns: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        pod_config(_userns_request(**userns), "runc")
