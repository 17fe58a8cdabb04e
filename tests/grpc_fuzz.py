"""A fuzz driver for the daemon's gRPC surface: every unary and server-streaming method of every
service the daemon registers (containerd's v1, dockyard.*.v1, CRI), called as an outside client
would, with hostile arguments, and each answer judged on what a client must never see.

    python3 -m tests.grpc_fuzz                       # every method; a report, exit 1 on a fault
    python3 -m tests.grpc_fuzz -k Containers -v      # only methods whose name has "Containers"
    python3 -m tests.grpc_fuzz --address SOCK        # against a running daemon instead of a new one

The corpus is generated from the request messages' descriptors: an empty request, raw garbage as
the body, unknown fields, then one field at a time (nested messages to depth 3) set to hostile
values (empty/huge/'..'/'/'/NUL/odd Unicode strings, extreme and negative numbers, unknown enum
values, Anys whose type_url lies or whose value is garbage, huge maps and lists), and the
`containerd-namespace` header itself hostile. Client-streaming methods get one such message and a
half-close.

A fault is: status UNKNOWN, or INTERNAL for anything but a body that does not parse; a message
with a Python exception name, a traceback or "internal error"; an error message far longer than
what was asked (a huge id echoed back); a unary call not answered within its deadline (a hang);
a daemon that then fails to answer Version within 5 s, or logs a traceback. Regressions it found
are tests in tests/integration/test_grpc_inputs.py; this stays as the tool to look for the next.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import random
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message

import dockyard_api

NS_KEY = "containerd-namespace"
VERSION = "/containerd.services.version.v1.Version/Version"

# What a client must never read in a status message: Python's words for its own failures.
PYTHON_WORDS = re.compile(
    r"Traceback|\b[A-Z][A-Za-z]*(Error|Exception)\b|internal error|unexpected error|NoneType|"
    r"object at 0x|has no attribute|positional argument|invalid literal for|not subscriptable|"
    r"unsupported operand|index out of range|<class |\bErrno\b|codec can't")

# Methods whose stream rightly stays open (a deadline there is not a hang).
OPEN_STREAMS = {"Subscribe", "Stream", "GetContainerEvents", "StreamContainerStats", "StreamPodSandboxStats",
                "StreamPodSandboxMetrics", "Read", "Attach"}
# Methods that may go to the network (a registry named by the caller): slow, not hung.
NETWORK = {"Pull", "Push", "Login", "PullImage", "RunPodSandbox"}
# Never called by the generic corpus: they act on the whole daemon rather than the caller's objects.
SKIP = {"/dockyard.gc.v1.GC/Collect"}

HUGE = 70_000
STRINGS: list[str] = [
    "", ".", "..", "/", "../../../etc/passwd", "a/../../b", "/abs/path", "x\x00y", "\x00", " ", "-", "-rf",
    "a" * 255, "a" * 4097, "x" * HUGE, "\u202eevil", "\U0001f600" * 50, "é", "%s%n%x", "\n\r\t",
    "*", "sha256:", "sha256:" + "0" * 64, "sha256:zz", "sha512:" + "0" * 128, "UPPER", "a b",
    "docker.io/library/busybox:latest", "localhost:1/x:y", "[", "(a+)+b", "key==value", "labels.\"x\"",
    "\\", "'", '"', "\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
]
INT_VALUES: dict[int, list[int]] = {
    descriptor.FieldDescriptor.TYPE_INT32: [-1, -(2**31), 2**31 - 1],
    descriptor.FieldDescriptor.TYPE_SINT32: [-1, -(2**31), 2**31 - 1],
    descriptor.FieldDescriptor.TYPE_SFIXED32: [-1, -(2**31), 2**31 - 1],
    descriptor.FieldDescriptor.TYPE_INT64: [-1, -(2**63), 2**63 - 1],
    descriptor.FieldDescriptor.TYPE_SINT64: [-1, -(2**63), 2**63 - 1],
    descriptor.FieldDescriptor.TYPE_SFIXED64: [-1, -(2**63), 2**63 - 1],
    descriptor.FieldDescriptor.TYPE_UINT32: [2**32 - 1, 2**31],
    descriptor.FieldDescriptor.TYPE_FIXED32: [2**32 - 1],
    descriptor.FieldDescriptor.TYPE_UINT64: [2**64 - 1, 2**63],
    descriptor.FieldDescriptor.TYPE_FIXED64: [2**64 - 1],
}
FLOATS = [float("nan"), float("inf"), -1.0, 1e308]
BYTES = [b"", b"\xff\xfe\x00garbage", b"{" * 10000, b"[]", b'{"ociVersion": 5}', b"null", b"x" * HUGE]
TYPE_URLS = ["", "types.containerd.io/opencontainers/runtime-spec/1/Spec", "lies", "/", "x" * 5000,
             "type.googleapis.com/google.protobuf.Empty", "containerd.runc.v1.Options",
             "type.googleapis.com/runtime.v1.LinuxContainerResources"]
NAMESPACES = ["", "..", "/", "a/b", "x" * 300, "UPPER", "a b", "-x", "k8s.io", "nosuch-ns-fuzz"]
GARBAGE = [b"\xff" * 16, b"\x0a\xff\xff\xff\xff\x0f", b"\x08" * 3, b"\x12\x05ab", b"\x0a\x02\xff\xfe",
           bytes(range(256)), b"\x7a\x00"]


@dataclass
class Method:
    path: str  # "/package.Service/Method"
    name: str
    client_streaming: bool
    server_streaming: bool
    input: descriptor.Descriptor


@dataclass
class Case:
    method: Method
    body: bytes
    note: str
    namespace: str | None = "fuzz"
    size: int = 0  # the largest single value sent, to judge echoed messages


@dataclass
class Result:
    case: Case
    code: grpc.StatusCode
    message: str
    seconds: float
    faults: list[str] = field(default_factory=list)


def methods() -> list[Method]:
    found: dict[str, Method] = {}
    for info in pkgutil.walk_packages(dockyard_api.__path__, "dockyard_api."):
        if not info.name.endswith("_pb2") or ".ttrpc" in info.name or "runtime.v2" in info.name:
            continue
        mod = importlib.import_module(info.name)
        for svc in mod.DESCRIPTOR.services_by_name.values():
            if svc.full_name.startswith("containerd.task.v2"):
                continue
            for m in svc.methods:
                path = f"/{svc.full_name}/{m.name}"
                found[path] = Method(path, m.name, m.client_streaming, m.server_streaming, m.input_type)
    return sorted(found.values(), key=lambda m: m.path)


def message_class(desc: descriptor.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(desc)


def _values(fd: descriptor.FieldDescriptor) -> Iterator[tuple[str, object]]:
    t = fd.type
    if t == fd.TYPE_STRING:
        for s in STRINGS:
            yield repr(s[:20]) + (f"..({len(s)})" if len(s) > 20 else ""), s
    elif t == fd.TYPE_BYTES:
        for b in BYTES:
            yield repr(b[:12]) + (f"..({len(b)})" if len(b) > 12 else ""), b
    elif t in INT_VALUES:
        for i in INT_VALUES[t]:
            yield str(i), i
    elif t in (fd.TYPE_FLOAT, fd.TYPE_DOUBLE):
        for f in FLOATS:
            yield str(f), f
    elif t == fd.TYPE_BOOL:
        yield "true", True
    elif t == fd.TYPE_ENUM:
        yield "enum 99", 99
        yield "enum -1", -1


def _walk(msg: Message, path: list[descriptor.FieldDescriptor]) -> Message:
    """The message at `path` below `msg`, made on the way (an element added to a repeated field)."""
    for fd in path:
        msg = getattr(msg, fd.name) if not fd.is_repeated else getattr(msg, fd.name).add()
    return msg


def _set(msg: Message, path: list[descriptor.FieldDescriptor], value: object) -> None:
    msg = _walk(msg, path[:-1])
    fd = path[-1]
    if fd.is_repeated:
        getattr(msg, fd.name).append(value)
    else:
        setattr(msg, fd.name, value)


def mutations(desc: descriptor.Descriptor, rng: random.Random, depth: int = 3,
              prefix: list[descriptor.FieldDescriptor] | None = None) -> Iterator[tuple[str, Message, int]]:
    """(note, request, largest value) for each hostile value of each field reachable from `desc`."""
    prefix = prefix or []
    cls = message_class(prefix[0].containing_type if prefix else desc)
    for fd in desc.fields:
        path = [*prefix, fd]
        name = ".".join(f.name for f in path)
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            kf, vf = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
            entries: list[tuple[str, dict[object, object]]] = []
            if kf.type == kf.TYPE_STRING and vf.type == vf.TYPE_STRING:
                entries = [("empty key", {"": "v"}), ("huge key", {"k" * HUGE: "v"}), ("huge value", {"k": "v" * HUGE}),
                           ("10000 entries", {f"k{i}": "v" for i in range(10000)}), ("NUL key", {"a\x00b": "c"}),
                           ("odd key", {"../x": "/"})]
            elif kf.type == kf.TYPE_STRING:
                entries = [("empty key", {"": None}), ("huge key", {"k" * HUGE: None})]
            for note, d in entries:
                msg = cls()
                m = getattr(_walk(msg, path[:-1]), fd.name)
                for k, v in d.items():
                    if v is None:
                        m.get_or_create(k)  # a message value: the entry made empty
                    else:
                        m[k] = v
                yield f"{name}: {note}", msg, max(len(str(k)) + len(str(v or "")) for k, v in d.items())
            continue
        if fd.message_type is not None:
            if fd.message_type.full_name == "google.protobuf.Any":
                for url in TYPE_URLS:
                    for val in (b"", b"\xff\x00garbage", b"{}"):
                        msg = cls()
                        target = _walk(msg, path)
                        target.type_url, target.value = url, val  # type: ignore[attr-defined]
                        yield f"{name}: Any({url[:30]!r}, {val[:8]!r})", msg, len(url)
                continue
            if depth > 1:
                yield from mutations(fd.message_type, rng, depth - 1, path)
            if fd.is_repeated:
                msg = cls()
                target = _walk(msg, path[:-1])
                for _ in range(5000):
                    getattr(target, fd.name).add()
                yield f"{name}: 5000 empty", msg, 0
            continue
        for note, value in _values(fd):
            msg = cls()
            try:
                _set(msg, path, value)
            except (ValueError, TypeError):
                continue
            yield f"{name}={note}", msg, len(value) if isinstance(value, (str, bytes)) else 0
        if fd.is_repeated and fd.type == fd.TYPE_STRING:
            msg = cls()
            for _ in range(20000):
                _set(msg, path, "x")
            yield f"{name}: 20000 items", msg, 0


SPEC = b'{"ociVersion": "1.1.0", "process": {"args": ["true"], "cwd": "/"}, "root": {"path": "rootfs"}}'
EMPTY_DIGEST = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
_serial = iter(range(1, 1 << 62))


def plausible(fd: descriptor.FieldDescriptor) -> str:
    """A value a well-behaved client would put in a string field of this name, so that a request
    gets past its first check and the hostile value in another field is what is judged."""
    name = fd.name.lower()
    if "digest" in name or name in ("chain_id", "diff_id"):
        return EMPTY_DIGEST
    if name == "snapshotter":
        return "overlayfs"
    if name == "media_type":
        return "application/vnd.oci.image.layer.v1.tar"
    if name in ("image", "reference", "ref") and fd.containing_type.name not in ("StatusRequest", "AbortRequest"):
        return "docker.io/library/busybox:latest"
    if name == "type_url":
        return "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    if name in ("runtime", "runtime_handler") or (name == "name" and fd.containing_type.name == "Runtime"):
        return "io.containerd.runc.v2"
    if name in ("path", "destination", "container_path", "host_path", "target", "working_dir"):
        return "/tmp"
    return f"fz{next(_serial)}"


def filled(desc: descriptor.Descriptor, depth: int = 3) -> Message:
    """`desc`'s message with every string field (to `depth`) set to a plausible value."""
    msg = message_class(desc)()
    for fd in desc.fields:
        if fd.message_type is not None:
            if fd.message_type.full_name == "google.protobuf.Any" and not fd.is_repeated:
                any_ = getattr(msg, fd.name)
                any_.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
                any_.value = SPEC
                continue
            if fd.is_repeated or depth <= 1 or fd.message_type.full_name.startswith("google.protobuf."):
                continue
            sub = filled(fd.message_type, depth - 1)
            if sub.ByteSize():
                getattr(msg, fd.name).CopyFrom(sub)
        elif fd.type == fd.TYPE_STRING and not fd.is_repeated and fd.containing_oneof is None:
            setattr(msg, fd.name, plausible(fd))
    return msg


def corpus(m: Method, rng: random.Random, per_method: int) -> list[Case]:
    cls = message_class(m.input)
    cases = [Case(m, b"", "empty request")]
    cases += [Case(m, g, f"garbage {g[:8]!r}") for g in GARBAGE]
    cases.append(Case(m, b"\xfa\xff\x03\x03abc", "unknown field 65535"))  # tag 65535, wire type 2
    cases += [Case(m, b"", f"namespace {ns[:20]!r}", namespace=ns) for ns in NAMESPACES]
    cases.append(Case(m, b"", "no namespace header", namespace=None))
    muts = [Case(m, msg.SerializeToString(), note, size=size) for note, msg, size in mutations(m.input, rng)]
    if len(muts) > per_method:
        muts = rng.sample(muts, per_method)
    # The same hostile values over a request that is otherwise well-formed (fresh names each
    # time), so they reach the checks behind the first one.
    based = []
    for note, msg, size in mutations(m.input, rng):
        base = filled(m.input)
        base.MergeFrom(msg)  # the hostile value wins (scalars), or joins (repeated, maps)
        based.append(Case(m, base.SerializeToString(), "filled+" + note, size=size))
    if len(based) > per_method:
        based = rng.sample(based, per_method)
    cases.append(Case(m, filled(m.input).SerializeToString(), "filled"))
    muts += based
    del cls
    return cases + muts


class Driver:
    def __init__(self, address: str, log: Path | None, deadline: float, verbose: bool) -> None:
        self.channel = grpc.insecure_channel(f"unix://{address}", options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_metadata_size", 16 << 20)])
        self.log = log
        self.log_at = log.stat().st_size if log else 0
        self.deadline = deadline
        self.verbose = verbose

    def call(self, case: Case) -> Result:
        m = case.method
        md = [] if case.namespace is None else [(NS_KEY, case.namespace)]
        streaming = m.server_streaming or m.client_streaming
        deadline = self.deadline if not streaming else 0.5 if m.name in OPEN_STREAMS else min(self.deadline, 5.0)
        t0 = time.monotonic()
        code, message = grpc.StatusCode.OK, ""
        try:
            if not m.client_streaming and not m.server_streaming:
                self.channel.unary_unary(m.path)(case.body, timeout=deadline, metadata=md)
            elif not m.client_streaming:
                for n, _ in enumerate(self.channel.unary_stream(m.path)(case.body, timeout=deadline, metadata=md)):
                    if n > 1000:
                        break
            elif not m.server_streaming:
                self.channel.stream_unary(m.path)(iter([case.body]), timeout=deadline, metadata=md)
            else:
                for n, _ in enumerate(self.channel.stream_stream(m.path)(iter([case.body]), timeout=deadline,
                                                                         metadata=md)):
                    if n > 1000:
                        break
        except grpc.RpcError as exc:
            code, message = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
        r = Result(case, code, message, time.monotonic() - t0)
        self.judge(r)
        return r

    def judge(self, r: Result) -> None:
        m, c = r.case.method, r.case
        if r.code == grpc.StatusCode.UNKNOWN:
            r.faults.append("status UNKNOWN")
        if r.code == grpc.StatusCode.INTERNAL and not r.message.startswith("grpc: error unmarshalling request"):
            r.faults.append("status INTERNAL")
        if PYTHON_WORDS.search(r.message):
            r.faults.append("Python words in the message")
        if len(r.message) > 2048 + min(c.size, 512):
            r.faults.append(f"message of {len(r.message)} characters")
        if r.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            if not (m.server_streaming or m.client_streaming) and m.name not in NETWORK:
                r.faults.append(f"no answer within {self.deadline} s")
            elif m.server_streaming and m.name not in OPEN_STREAMS | NETWORK and not m.client_streaming:
                r.faults.append("stream still open at the deadline")
        try:
            self.channel.unary_unary(VERSION)(b"", timeout=5)
        except grpc.RpcError as exc:
            r.faults.append(f"daemon then failed Version: {exc.code()}")  # type: ignore[attr-defined]
        if self.log is not None:
            with open(self.log, "rb") as f:
                f.seek(self.log_at)
                new = f.read().decode(errors="replace")
            self.log_at += len(new.encode())
            if "Traceback" in new or "failed unexpectedly" in new:
                at = new.find("Traceback")
                r.faults.append("daemon log: " + new[max(0, at):][:1500])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-k", default="", help="only methods whose path contains this")
    ap.add_argument("--address", help="a running daemon's socket (else a private daemon is started)")
    ap.add_argument("--log", help="that daemon's log, to look for tracebacks")
    ap.add_argument("--per-method", type=int, default=400, help="field mutations per method (sampled)")
    ap.add_argument("--deadline", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-v", action="store_true", help="print every case, not only faults")
    opts = ap.parse_args()
    rng = random.Random(opts.seed)
    d = None
    if opts.address:
        address, log = opts.address, Path(opts.log) if opts.log else None
    else:
        from tests.daemon import start_daemon
        d = start_daemon()
        address, log = d.address, d.log_path
    driver = Driver(address, log, opts.deadline, opts.v)
    faults = total = 0
    seen: dict[tuple[str, str], int] = {}
    try:
        for m in methods():
            if opts.k not in m.path or m.path in SKIP:
                continue
            for case in corpus(m, rng, opts.per_method):
                r = driver.call(case)
                total += 1
                if r.faults:
                    faults += 1
                    key = (m.path, r.faults[0][:40] + r.message[:40])
                    seen[key] = seen.get(key, 0) + 1
                    if seen[key] <= 2:
                        print(f"FAULT {m.path} [{case.note} ns={case.namespace!r}] -> {r.code.name} "
                              f"{r.message[:300]!r} ({r.seconds:.1f}s)", flush=True)
                        for f in r.faults:
                            print(f"      {f[:1500]}", flush=True)
                elif opts.v:
                    print(f"ok    {m.path} [{case.note}] -> {r.code.name} {r.message[:120]!r} ({r.seconds:.1f}s)",
                          flush=True)
    finally:
        if d is not None:
            from tests.daemon import remove_base
            d.stop()
            remove_base(d)
    print(f"{faults} faulty answers of {total} calls")
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
