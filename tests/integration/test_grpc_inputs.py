"""The daemon's unary and server-streaming RPCs fed hostile arguments (a fuzz round over every
service; the driver is tests/grpc_fuzz.py): each is refused with the code that names the
caller's mistake and a message without Python's words, and no other client waits meanwhile.

- an error quoting a huge caller value (a 70 000-character id) is cut to a bounded message: in
  full it overflowed the client's header limit and arrived as RESOURCE_EXHAUSTED "received
  metadata size exceeds hard limit" instead of NOT_FOUND/INVALID_ARGUMENT;
- timestamps a datetime cannot hold (Events.Forward's envelope) are INVALID_ARGUMENT, not
  INTERNAL "Timestamp is not valid";
- Diff mounts the kernel refuses (an unknown type, a NUL in a path) are the caller's mistake,
  worded without the syscall's Python arguments;
- a Build stream whose message does not parse gets grpc's unmarshalling status and no traceback
  in the log; a build-cache Prune with unused_for_seconds = 2^63-1 selects nothing instead of
  INTERNAL "Python int too large";
- registry Login and every pull/push name a registry host the reference grammar allows (".",
  "..", "*", "[", 4 097 characters, port "zz" were INTERNAL idna/ValueError/ENAMETOOLONG);
  an unreachable registry is worded without "Multiple exceptions: [Errno 111]";
- CRI: PullImage's auth with non-ASCII characters, a port mapping's protocol or a seccomp
  profile type the proto does not define are INVALID_ARGUMENT;
- 20 000 filters in one List held the event loop (every client) for 15 s: repeats are dropped
  and more than 256 distinct filters are refused.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from dockyard_api.containerd.services.containers.v1 import containers_pb2, containers_pb2_grpc
from dockyard_api.containerd.services.diff.v1 import diff_pb2, diff_pb2_grpc
from dockyard_api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from dockyard_api.containerd.services.version.v1 import version_pb2_grpc
from dockyard_api.containerd.types import mount_pb2
from dockyard_api.cri.runtime.v1 import api_pb2 as cri
from dockyard_api.cri.runtime.v1 import api_pb2_grpc as cri_grpc
from dockyard_api.dockyard.build.v1 import build_pb2, build_pb2_grpc
from dockyard_api.dockyard.registry.v1 import registry_pb2, registry_pb2_grpc
from supervisor.remote.client import _os_words
from tests import grpc_fuzz
from tests.daemon import DaemonProcess, traceback_free_daemon

NS = [("containerd-namespace", "inputs")]
PYTHON = grpc_fuzz.PYTHON_WORDS


@pytest.fixture(scope="module")
def daemon() -> Iterator[DaemonProcess]:
    with traceback_free_daemon() as d:
        yield d


@pytest.fixture
def channel(daemon: DaemonProcess) -> Iterator[grpc.Channel]:
    """A client with grpc's default limits (16 KiB of headers), as ctr's and dock's."""
    with grpc.insecure_channel(f"unix://{daemon.address}") as ch:
        yield ch


def refused(call: object, request: object, code: grpc.StatusCode, metadata: list[tuple[str, str]] = NS,
            timeout: float = 20) -> str:
    """Call, expect `code`; return the message after checking it is free of Python's words."""
    with pytest.raises(grpc.RpcError) as err:
        call(request, metadata=metadata, timeout=timeout)  # type: ignore[operator]
    got, message = err.value.code(), err.value.details()  # type: ignore[attr-defined]
    assert got == code, (got, message[:500])
    assert not PYTHON.search(message), message[:500]
    return message  # type: ignore[no-any-return]


def test_huge_values_come_back_in_a_message_the_client_can_read(channel: grpc.Channel) -> None:
    containers = containers_pb2_grpc.ContainersStub(channel)
    namespaces = namespace_pb2_grpc.NamespacesStub(channel)
    for n in (20_000, 70_000):
        message = refused(containers.Get, containers_pb2.GetContainerRequest(id="x" * n), grpc.StatusCode.NOT_FOUND)
        assert message.endswith(": not found") and len(message) < 4096 and "characters" in message
        message = refused(namespaces.Get, namespace_pb2.GetNamespaceRequest(name="\U0001f600" * n),
                          grpc.StatusCode.INVALID_ARGUMENT)
        assert len(message.encode()) <= 2048, len(message.encode())


def test_timestamps_out_of_range_are_invalid_arguments(channel: grpc.Channel) -> None:
    events = events_pb2_grpc.EventsStub(channel)
    for seconds, nanos in ((2**63 - 1, 0), (-(2**63), 0), (0, -1), (0, 2**31 - 1)):
        env = events_pb2.Envelope(timestamp=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
                                  namespace="inputs", topic="/x/y", event=any_pb2.Any(type_url="x"))
        message = refused(events.Forward, events_pb2.ForwardRequest(envelope=env), grpc.StatusCode.INVALID_ARGUMENT)
        assert "out of range" in message


def test_diff_mounts_the_kernel_refuses_are_the_callers_mistake(channel: grpc.Channel) -> None:
    diff = diff_pb2_grpc.DiffStub(channel)
    for mount, code in ((mount_pb2.Mount(type="nosuchfs", source="none"), grpc.StatusCode.INVALID_ARGUMENT),
                        (mount_pb2.Mount(type="tmpfs", source="t", options=["nosuchoption"]),
                         grpc.StatusCode.INVALID_ARGUMENT),
                        (mount_pb2.Mount(type="tmpfs", source="t", target="x\0y"), grpc.StatusCode.INVALID_ARGUMENT),
                        (mount_pb2.Mount(type="bind", source="/nonexistent-dy", options=["rbind"]),
                         grpc.StatusCode.NOT_FOUND)):
        message = refused(diff.Diff, diff_pb2.DiffRequest(right=[mount]), code)
        assert "/proc/self/fd" not in message and "mount(" not in message, message


def test_a_build_stream_that_does_not_parse_is_not_an_internal_error(daemon: DaemonProcess,
                                                                     channel: grpc.Channel) -> None:
    build = channel.stream_stream("/dockyard.build.v1.Builder/Build")  # raw bytes: no serializer
    with pytest.raises(grpc.RpcError) as err:
        list(build(iter([b"\xff" * 16]), metadata=NS, timeout=20))
    assert err.value.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert err.value.details().startswith("grpc: error unmarshalling request")  # type: ignore[attr-defined]
    assert "build: internal error" not in daemon.log()[daemon.log_start:]


def test_build_cache_prune_for_ever_selects_nothing(channel: grpc.Channel) -> None:
    builder = build_pb2_grpc.BuilderStub(channel)
    resp = builder.Prune(build_pb2.PruneRequest(unused_for_seconds=2**63 - 1), metadata=NS, timeout=20)
    assert list(resp.removed) == []
    refused(builder.Prune, build_pb2.PruneRequest(unused_for_seconds=-1), grpc.StatusCode.INVALID_ARGUMENT)


def test_registry_hosts_must_be_host_names(channel: grpc.Channel) -> None:
    registry = registry_pb2_grpc.RegistryStub(channel)
    creds = registry_pb2.RemoteOptions(credentials=registry_pb2.Credentials(username="u", secret="s"))
    for server in (".", "..", "*", "[", "sha256:zz", "a" * 64 + ".example", "x" * 4097, "r.example:99999"):
        message = refused(registry.Login, registry_pb2.LoginRequest(server=server, remote=creds),
                          grpc.StatusCode.INVALID_ARGUMENT)
        assert "not a host[:port] name" in message, message


def test_unreachable_registries_are_worded_by_the_system() -> None:
    every_address = OSError("Multiple exceptions: [Errno 111] Connect call failed ('::1', 443, 0, 0), "
                            "[Errno 111] Connect call failed ('127.0.0.1', 443)")
    assert _os_words(every_address) == "Connection refused"
    assert _os_words(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 1)")) == "Connection refused"
    assert _os_words(None) == "no connection"


def test_cri_values_outside_the_proto_are_invalid_arguments(channel: grpc.Channel) -> None:
    images = cri_grpc.ImageServiceStub(channel)
    message = refused(images.PullImage, cri.PullImageRequest(image=cri.ImageSpec(image="busybox"),
                                                             auth=cri.AuthConfig(auth="\u00e9\u00e9\u00e9")),
                      grpc.StatusCode.INVALID_ARGUMENT)
    assert "auth" in message
    runtime = cri_grpc.RuntimeServiceStub(channel)
    config = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="p", uid="u", namespace="n"),
                                  port_mappings=[cri.PortMapping(protocol=99, container_port=80,  # type: ignore[arg-type]
                                                 host_port=8080)])
    message = refused(runtime.RunPodSandbox, cri.RunPodSandboxRequest(config=config), grpc.StatusCode.INVALID_ARGUMENT)
    assert "protocol 99" in message
    config = cri.PodSandboxConfig(metadata=cri.PodSandboxMetadata(name="p", uid="u", namespace="n"),
                                  linux=cri.LinuxPodSandboxConfig(security_context=cri.LinuxSandboxSecurityContext(
                                      seccomp=cri.SecurityProfile(profile_type=7))))  # type: ignore[arg-type]
    message = refused(runtime.RunPodSandbox, cri.RunPodSandboxRequest(config=config), grpc.StatusCode.INVALID_ARGUMENT)
    assert "profile_type 7" in message


def test_many_filters_never_hold_other_clients(channel: grpc.Channel) -> None:
    containers = containers_pb2_grpc.ContainersStub(channel)
    spec = any_pb2.Any(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec", value=b"{}")
    made = [f"filters-{i}" for i in range(100)]
    for cid in made:
        containers.Create(containers_pb2.CreateContainerRequest(container=containers_pb2.Container(
            id=cid, spec=spec, runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"))),
            metadata=NS, timeout=20)
    try:
        version = version_pb2_grpc.VersionStub(channel)
        waited: list[float] = []

        def other_client() -> None:
            time.sleep(0.1)
            t0 = time.monotonic()
            version.Version(empty_pb2.Empty(), timeout=30)
            waited.append(time.monotonic() - t0)

        probe = threading.Thread(target=other_client)
        probe.start()
        resp = containers.List(containers_pb2.ListContainersRequest(filters=["id~=filters-1"] * 20_000),
                               metadata=NS, timeout=30)  # repeats are one filter
        probe.join()
        assert len(resp.containers) == 11 and waited[0] < 2.0, waited
        message = refused(containers.List, containers_pb2.ListContainersRequest(
            filters=[f"id==x{i}" for i in range(20_000)]), grpc.StatusCode.INVALID_ARGUMENT)
        assert "at most 256" in message
    finally:
        for cid in made:
            containers.Delete(containers_pb2.DeleteContainerRequest(id=cid), metadata=NS, timeout=20)


def test_a_fuzz_round_over_the_metadata_services_is_clean(daemon: DaemonProcess) -> None:
    """A short round of the driver itself: every answer judged by its rules."""
    driver = grpc_fuzz.Driver(daemon.address, daemon.log_path, deadline=15, verbose=False)
    rng = random.Random(7)
    faults = []
    for m in grpc_fuzz.methods():
        if not any(s in m.path for s in ("Namespaces/", "Leases/", "Containers/Get", "Content/Info",
                                        "Events/Publish", "Introspection/")):
            continue
        for case in grpc_fuzz.corpus(m, rng, 25):
            r = driver.call(case)
            faults += [f"{m.path} [{case.note}] {r.code.name} {r.message[:200]!r}: {r.faults}"] if r.faults else []
    assert faults == [], "\n".join(faults[:20])
