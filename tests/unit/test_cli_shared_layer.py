"""Issue 18, the CLI side: dock imports only dock, the generated API, dockyard_common and
third-party packages; the value types it shares with the daemon and the shim exist once; and
the SDK's own protobuf converters agree with the daemon's on the wire."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROGRAMS = ("supervisor", "shim", "dock")


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_dock_imports_neither_the_daemon_nor_the_shim() -> None:
    offenders = {str(p.relative_to(REPO)): sorted(_imported_roots(p) & {"supervisor", "shim"})
                 for p in sorted((REPO / "dock").rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_dockyard_common_imports_none_of_the_programs() -> None:
    offenders = {str(p.relative_to(REPO)): sorted(_imported_roots(p) & set(PROGRAMS))
                 for p in sorted((REPO / "dockyard_common").rglob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_cli_loads_no_daemon_or_shim_module() -> None:
    code = (
        "import sys, pkgutil, importlib, dock, dock.commands\n"
        "for pkg in (dock, dock.commands):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('supervisor', 'shim'))\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_value_types_are_defined_once() -> None:
    from dock import images as sdk_images
    from dock import tasks as sdk_tasks
    from dockyard_common import imagespec, types
    from supervisor.metadata import containers as container_records
    from supervisor.metadata import images as image_records
    from supervisor.runtime import types as runtime_types
    from supervisor.snapshotter import base as snapshotter_base

    assert sdk_tasks.Status is runtime_types.Status is types.Status
    assert sdk_images.Descriptor is image_records.Descriptor is imagespec.Descriptor
    assert container_records.Container is types.Container and container_records.AnyValue is types.AnyValue
    assert snapshotter_base.Info is types.Info and snapshotter_base.Usage is types.Usage
    # the SDK's media type names are imagespec's, not copies that could drift
    assert sdk_images.OCI_INDEX == imagespec.MEDIA_TYPE_OCI_INDEX
    assert sdk_images.DOCKER_MANIFEST == imagespec.MEDIA_TYPE_DOCKER_MANIFEST


def test_sdk_and_daemon_container_converters_agree_on_the_wire() -> None:
    from dock import containers as sdk
    from dockyard_common.types import AnyValue, Container
    from supervisor.services import containers as service

    record = Container(
        id="web", runtime_name="io.containerd.runc.v2", spec=AnyValue("types.example/Spec", b'{"a":1}'),
        labels={"team": "infra"}, image="docker.io/library/busybox:latest",
        runtime_options=AnyValue("containerd.runc.v1.Options", b""), snapshotter="overlayfs", snapshot_key="web",
        extensions={"ext": AnyValue("types.example/Ext", b"\x01\x02")},
    )
    # SDK -> daemon: what the daemon reads is what the SDK meant
    assert service.from_pb(sdk.to_pb(record)) == record
    # daemon -> SDK, timestamps included (the SDK reads them, naive UTC as protobuf gives them)
    stamped = Container(**{**record.__dict__, "created_at": datetime(2026, 1, 2, 3, 4, 5),
                           "updated_at": datetime(2026, 1, 2, 3, 4, 6)})
    assert sdk.from_pb(service.to_pb(stamped)) == stamped
    # a record without spec or runtime options stays without them both ways
    bare = Container(id="b", runtime_name="io.containerd.runc.v2", spec=None)
    assert sdk.from_pb(service.to_pb(bare)) == bare
    assert service.from_pb(sdk.to_pb(bare)) == bare


def test_json_output_of_a_descriptor_keeps_its_fields() -> None:
    from dock.images import ImageInfo
    from dock.output import to_jsonable
    from dockyard_common.imagespec import Descriptor, Platform

    info = ImageInfo("docker.io/library/busybox:latest", Descriptor("m", "sha256:" + "a" * 64, 5, {"k": "v"}))
    assert to_jsonable(info) == {
        "name": "docker.io/library/busybox:latest", "labels": {}, "created_at": None, "updated_at": None,
        "target": {"media_type": "m", "digest": "sha256:" + "a" * 64, "size": 5, "annotations": {"k": "v"}},
    }
    # what the API never sends is printed only when a descriptor has it
    full = to_jsonable(Descriptor("m", "d", 1, platform=Platform("linux", "arm64", "v8"), urls=["https://x"]))
    assert full["urls"] == ["https://x"] and full["platform"]["architecture"] == "arm64"
