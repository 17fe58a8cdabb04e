"""The .proto sources in proto/ and the generated modules in dockyard_api/.

- the committed modules are what scripts/gen-protos produces from proto/ (not stale);
- every generated module imports, all of them together with google.rpc and grpc_health, without
  descriptor-pool conflicts;
- our containerd packages are wire-identical to containerd 1.6's own .proto files (compiled from
  the Go sources installed under /usr/share/gocode/src when present).
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]
API_DIR = REPO / "dockyard_api"
GOSRC = Path("/usr/share/gocode/src")
CONTAINERD = GOSRC / "github.com/containerd/containerd"

# containerd's originals we mirror, relative to GOSRC.
ORIGINALS = [
    "github.com/containerd/cgroups/stats/v1/metrics.proto",
    "github.com/containerd/cgroups/v2/stats/metrics.proto",
    *(
        f"github.com/containerd/containerd/api/events/{name}.proto"
        for name in ("container", "content", "image", "namespace", "snapshot", "task")
    ),
    *(
        f"github.com/containerd/containerd/api/services/{svc}/v1/{name}.proto"
        for svc, name in [
            ("containers", "containers"),
            ("content", "content"),
            ("diff", "diff"),
            ("events", "events"),
            ("images", "images"),
            ("introspection", "introspection"),
            ("leases", "leases"),
            ("namespaces", "namespace"),
            ("snapshots", "snapshots"),
            ("tasks", "tasks"),
            ("version", "version"),
        ]
    ),
    "github.com/containerd/containerd/api/services/ttrpc/events/v1/events.proto",
    *(
        f"github.com/containerd/containerd/api/types/{name}.proto"
        for name in ("descriptor", "metrics", "mount", "platform", "task/task")
    ),
    "github.com/containerd/containerd/runtime/v2/runc/options/oci.proto",
    "github.com/containerd/containerd/runtime/v2/task/shim.proto",
]

# containerd packages whose every message, enum and service must exist on our side.
COVERED_PACKAGES = re.compile(
    r"^(containerd\.types|containerd\.v1\.types|containerd\.services\.[\w.]+\.v1|containerd\.events"
    r"|containerd\.task\.v2|containerd\.runc\.v1|io\.containerd\.cgroups\.v1|io\.containerd\.cgroups\.v2)$"
)

FD = descriptor_pb2.FieldDescriptorProto


def generated_modules() -> list[str]:
    return sorted(
        ".".join(p.relative_to(REPO).with_suffix("").parts)
        for p in API_DIR.rglob("*.py")
        if "__pycache__" not in p.parts and p.name != "__init__.py"
    )


def import_all() -> list[ModuleType]:
    return [importlib.import_module(name) for name in generated_modules()]


def test_generated_modules_are_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen-protos"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"dockyard_api/ is stale; run scripts/gen-protos\n{result.stdout}{result.stderr}"
    )


def test_all_modules_import_together() -> None:
    import google.rpc.status_pb2
    import grpc_health.v1.health_pb2

    modules = import_all()
    assert any(m.__name__.endswith("_pb2_grpc") for m in modules)
    # Every _pb2 registered its file under the proto/-relative name.
    pb2 = [m for m in modules if m.__name__.endswith("_pb2")]
    assert len(pb2) == len(list((REPO / "proto").rglob("*.proto")))
    for mod in pb2:
        expected = (
            mod.__name__.removeprefix("dockyard_api.").replace(".", "/").removesuffix("_pb2") + ".proto"
        )
        assert mod.DESCRIPTOR.name == expected
    assert google.rpc.status_pb2.Status.DESCRIPTOR.full_name == "google.rpc.Status"
    assert (
        grpc_health.v1.health_pb2.HealthCheckRequest.DESCRIPTOR.full_name
        == "grpc.health.v1.HealthCheckRequest"
    )


def test_system_info_response() -> None:
    from dockyard_api.dockyard.system.v1 import system_pb2

    fields = [(f.number, f.name, f.type) for f in system_pb2.InfoResponse.DESCRIPTOR.fields]
    F = system_pb2.InfoResponse.DESCRIPTOR.fields[0]
    assert fields == [
        (1, "version", F.TYPE_STRING),
        (2, "revision", F.TYPE_STRING),
        (3, "root", F.TYPE_STRING),
        (4, "state", F.TYPE_STRING),
        (5, "address", F.TYPE_STRING),
        (6, "pid", F.TYPE_INT64),
        (7, "started_at", F.TYPE_MESSAGE),
        (8, "snapshotters", F.TYPE_STRING),
        (9, "default_snapshotter", F.TYPE_STRING),
        (10, "cgroup_driver", F.TYPE_STRING),
        (11, "python_version", F.TYPE_STRING),
        (12, "ksm", F.TYPE_STRING),
    ]
    started = system_pb2.InfoResponse.DESCRIPTOR.fields_by_name["started_at"]
    assert started.message_type.full_name == "google.protobuf.Timestamp"
    method = system_pb2.DESCRIPTOR.services_by_name["System"].methods_by_name["Info"]
    assert (method.input_type.name, method.output_type.name) == ("InfoRequest", "InfoResponse")


# --- wire compatibility with containerd's originals ------------------------------------------


class Index:
    """Messages, enums and services of a set of files, by full name."""

    def __init__(self, files: Iterable[descriptor_pb2.FileDescriptorProto]) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: dict[str, descriptor_pb2.ServiceDescriptorProto] = {}
        self.package_of: dict[str, str] = {}
        for f in files:
            for name, msg in _walk_messages(f.package, f.message_type):
                self.messages[name] = msg
                self.package_of[name] = f.package
                for enum in msg.enum_type:
                    self.enums[f"{name}.{enum.name}"] = enum
                    self.package_of[f"{name}.{enum.name}"] = f.package
            for enum in f.enum_type:
                self.enums[f"{f.package}.{enum.name}"] = enum
                self.package_of[f"{f.package}.{enum.name}"] = f.package
            for svc in f.service:
                self.services[f"{f.package}.{svc.name}"] = svc
                self.package_of[f"{f.package}.{svc.name}"] = f.package

    def names(self) -> set[str]:
        return set(self.messages) | set(self.enums) | set(self.services)


def _walk_messages(
    prefix: str, messages: Iterable[descriptor_pb2.DescriptorProto]
) -> Iterator[tuple[str, descriptor_pb2.DescriptorProto]]:
    for msg in messages:
        name = f"{prefix}.{msg.name}"
        yield name, msg
        yield from _walk_messages(name, msg.nested_type)


def _fields(msg: descriptor_pb2.DescriptorProto) -> dict[int, tuple[object, ...]]:
    out: dict[int, tuple[object, ...]] = {}
    for f in msg.field:
        typed = f.type in (FD.TYPE_MESSAGE, FD.TYPE_ENUM)
        oneof = msg.oneof_decl[f.oneof_index].name if f.HasField("oneof_index") else None
        out[f.number] = (
            f.name,
            FD.Type.Name(f.type),
            FD.Label.Name(f.label),
            f.type_name if typed else "",
            oneof,
            f.proto3_optional,
        )
    return out


@pytest.fixture(scope="module")
def containerd_index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    if not CONTAINERD.is_dir():
        pytest.skip(f"containerd's Go sources are not installed ({CONTAINERD} is absent)")
    import grpc_tools

    out = tmp_path_factory.mktemp("containerd") / "containerd.pb"
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={GOSRC}",
        f"--proto_path={GOSRC / 'github.com/gogo/protobuf'}",
        f"--proto_path={GOSRC / 'github.com/gogo/googleapis'}",
        f"--proto_path={Path(grpc_tools.__file__).parent / '_proto'}",
        "--include_imports",
        f"--descriptor_set_out={out}",
        *ORIGINALS,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(out.read_bytes())
    return Index(fds.file)


@pytest.fixture(scope="module")
def our_index() -> Index:
    files = []
    for mod in import_all():
        if mod.__name__.endswith("_pb2"):
            fdp = descriptor_pb2.FileDescriptorProto()
            mod.DESCRIPTOR.CopyToProto(fdp)
            files.append(fdp)
    return Index(files)


def test_every_containerd_definition_is_covered(containerd_index: Index, our_index: Index) -> None:
    wanted = {n for n in containerd_index.names() if COVERED_PACKAGES.match(containerd_index.package_of[n])}
    assert len(wanted) > 200  # sanity: the originals were all compiled
    missing = sorted(wanted - our_index.names())
    assert not missing, f"containerd definitions missing on our side: {missing}"


def test_wire_identical_to_containerd(containerd_index: Index, our_index: Index) -> None:
    problems: list[str] = []
    compared = 0
    for name, theirs in sorted(containerd_index.messages.items()):
        ours = our_index.messages.get(name)
        if ours is None:
            continue
        compared += 1
        if ours.options.map_entry != theirs.options.map_entry:
            problems.append(f"message {name}: map_entry differs")
        a, b = _fields(ours), _fields(theirs)
        for num in sorted(a.keys() | b.keys()):
            if a.get(num) != b.get(num):
                problems.append(f"message {name} field {num}: ours={a.get(num)} containerd={b.get(num)}")
    for name, theirs_enum in sorted(containerd_index.enums.items()):
        ours_enum = our_index.enums.get(name)
        if ours_enum is None:
            continue
        compared += 1
        a_vals = [(v.name, v.number) for v in ours_enum.value]
        b_vals = [(v.name, v.number) for v in theirs_enum.value]
        if a_vals != b_vals:
            problems.append(f"enum {name}: ours={a_vals} containerd={b_vals}")
    for name, theirs_svc in sorted(containerd_index.services.items()):
        ours_svc = our_index.services.get(name)
        if ours_svc is None:
            continue
        compared += 1
        a_m = {
            m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            for m in ours_svc.method
        }
        b_m = {
            m.name: (m.input_type, m.output_type, m.client_streaming, m.server_streaming)
            for m in theirs_svc.method
        }
        for method in sorted(a_m.keys() | b_m.keys()):
            if a_m.get(method) != b_m.get(method):
                problems.append(
                    f"service {name}.{method}: ours={a_m.get(method)} containerd={b_m.get(method)}"
                )
    assert compared > 200
    assert not problems, "\n".join(problems)
