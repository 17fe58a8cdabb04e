"""How fast can Python answer unary gRPC calls? A floor for issue 2's RPC goal.

    python3 bench/h2_floor.py [--calls 3000] [--rounds 3]

Three servers answer Namespaces/Get with a constant reply, driven by bench/rpc.py's client
(1, 10, 100 concurrent callers, rounds alternating between servers):
- `grpc-aio`: grpcio's aio server on uvloop, the daemon's runtime, with no dockyard code;
- `own-h2`: a minimal unary-only HTTP/2 + gRPC framing written here on uvloop's protocols
  (HPACK decoding by the `hpack` package; no flow-control accounting, no streaming, no
  deadlines: a measuring device, not a server to ship); with H2_FLOOR_TASKS=1 each call runs
  as an asyncio task, as a real server's handlers would;
- `containerd`: for scale.
It answers one question: is the gap to containerd Python's per-request cost, or grpcio's
server design (its thread hand-offs per call)?
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.daemons import containerd
from bench.rpc import measure
from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2 as pb
from supervisor.grpcserver.h2 import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    encode_headers,
    frame,
)

GET = "/containerd.services.namespaces.v1.Namespaces/Get"
CREATE = "/containerd.services.namespaces.v1.Namespaces/Create"  # bench/rpc.py's client makes one first
RESPONSE_HEADERS = encode_headers([(":status", "200"), ("content-type", "application/grpc")])
TRAILERS_OK = encode_headers([("grpc-status", "0")])
TRAILERS_UNIMPLEMENTED = encode_headers([("grpc-status", "12")])
TASK_PER_CALL = os.environ.get("H2_FLOOR_TASKS") == "1"


def answer_create(body: bytes) -> bytes:
    req = pb.CreateNamespaceRequest.FromString(body)
    return pb.CreateNamespaceResponse(namespace=req.namespace).SerializeToString()


def answer_get(body: bytes) -> bytes:
    req = pb.GetNamespaceRequest.FromString(body)
    return pb.GetNamespaceResponse(namespace=pb.Namespace(name=req.name)).SerializeToString()


class Http2Unary(asyncio.Protocol):
    """One client connection: unary calls only, one handler per method path."""

    def __init__(self, handlers: dict[str, Callable[[bytes], bytes]]) -> None:
        import hpack

        self.handlers = handlers
        self.decoder = hpack.Decoder()
        self.buf = b""
        self.preface = False
        self.streams: dict[int, tuple[str, bytearray]] = {}
        self.headers_of: dict[int, bytearray] = {}
        self.unacked = 0  # request bytes received since the last WINDOW_UPDATE

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        # Our SETTINGS (none changed) and a large connection window for the client's requests.
        self.transport.write(frame(SETTINGS, 0, 0, b"") + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30)))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        if not self.preface:
            if len(buf) < len(PREFACE):
                self.buf = buf
                return
            buf = buf[len(PREFACE):]
            self.preface = True
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if len(buf) - pos < 9 + length:
                break
            kind, flags = buf[pos + 3], buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = buf[pos + 9:pos + 9 + length]
            pos += 9 + length
            self.on_frame(kind, flags, stream, payload, out)
        self.buf = buf[pos:]
        if self.unacked > (1 << 20):
            out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacked)))
            self.unacked = 0
        if out:
            self.transport.write(b"".join(out))

    def on_frame(self, kind: int, flags: int, stream: int, payload: bytes, out: list[bytes]) -> None:
        if kind == HEADERS or kind == CONTINUATION:
            if kind == HEADERS:
                if flags & PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                if flags & PRIORITY_FLAG:
                    payload = payload[5:]
                self.headers_of[stream] = bytearray(payload)
                end_stream = bool(flags & END_STREAM)
                if end_stream:
                    self.streams[stream] = ("", bytearray())
            else:
                self.headers_of[stream] += payload
            if flags & END_HEADERS:
                block = bytes(self.headers_of.pop(stream))
                path = next((v for k, v in self.decoder.decode(block) if k == ":path"), "")
                self.streams[stream] = (path if isinstance(path, str) else path.decode(), bytearray())
        elif kind == DATA:
            if flags & PADDED:
                payload = payload[1:len(payload) - payload[0]]
            self.unacked += len(payload)
            self.streams[stream][1].extend(payload)
            if flags & END_STREAM:
                self.respond(stream, out)
        elif kind == SETTINGS and not flags & ACK:
            out.append(frame(SETTINGS, ACK, 0, b""))
        elif kind == PING and not flags & ACK:
            out.append(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self.streams.pop(stream, None)

    def respond(self, stream: int, out: list[bytes]) -> None:
        path, body = self.streams.pop(stream)
        handler = self.handlers.get(path)
        if handler is None:
            out.append(frame(HEADERS, END_HEADERS | END_STREAM, stream, RESPONSE_HEADERS + TRAILERS_UNIMPLEMENTED))
            return
        if TASK_PER_CALL:
            # As a real server would: each call an asyncio task running an async handler.
            asyncio.get_running_loop().create_task(self.call(handler, stream, bytes(body[5:])))
            return
        out.append(self.reply(stream, handler(bytes(body[5:]))))

    async def call(self, handler: Callable[[bytes], bytes], stream: int, body: bytes) -> None:
        self.transport.write(self.reply(stream, handler(body)))

    @staticmethod
    def reply(stream: int, message: bytes) -> bytes:
        return (frame(HEADERS, END_HEADERS, stream, RESPONSE_HEADERS)
                + frame(DATA, 0, stream, b"\x00" + struct.pack(">I", len(message)) + message)
                + frame(HEADERS, END_HEADERS | END_STREAM, stream, TRAILERS_OK))


async def serve_own(path: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(lambda: Http2Unary({GET: answer_get, CREATE: answer_create}), path)
    async with server:
        await server.serve_forever()


async def serve_grpc(path: str) -> None:
    import grpc

    from dockyard_api.containerd.services.namespaces.v1 import namespace_pb2_grpc as pb_grpc

    class Namespaces(pb_grpc.NamespacesServicer):
        async def Get(self, request: pb.GetNamespaceRequest, context: object) -> pb.GetNamespaceResponse:
            return pb.GetNamespaceResponse(namespace=pb.Namespace(name=request.name))

        async def Create(self, request: pb.CreateNamespaceRequest, context: object) -> pb.CreateNamespaceResponse:
            return pb.CreateNamespaceResponse(namespace=request.namespace)

    server = grpc.aio.server()
    pb_grpc.add_NamespacesServicer_to_server(Namespaces(), server)
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    await server.wait_for_termination()


def spawn(kind: str, path: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, kind, path], start_new_session=True)  # env inherited
    deadline = time.monotonic() + 20
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{kind} server did not start")
        time.sleep(0.05)
    return proc


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] in ("own-h2", "grpc-aio"):
        uvloop.run((serve_own if sys.argv[1] == "own-h2" else serve_grpc)(sys.argv[2]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="h2floor-") as tmp, containerd() as ctd:
        procs = [spawn(kind, f"{tmp}/{kind}.sock") for kind in ("own-h2", "grpc-aio")]
        try:
            targets = {"own-h2": f"{tmp}/own-h2.sock", "grpc-aio": f"{tmp}/grpc-aio.sock", "containerd": ctd}
            names = list(targets)
            print(f"{'callers':8} " + " ".join(f"{n + ' calls/s':>20} {'p50 µs':>8}" for n in names))
            for conc in (1, 10, 100):
                runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
                for r in range(args.rounds):
                    for name in names if r % 2 == 0 else names[::-1]:
                        runs[name].append(uvloop.run(measure(targets[name], "Get", conc, args.calls)))
                cells = []
                for name in names:
                    rate = statistics.median(x["calls_per_s"] for x in runs[name])
                    p50 = statistics.median(x["p50_us"] for x in runs[name])
                    cells.append(f"{rate:>20.0f} {p50:>8.0f}")
                print(f"x{conc:<7} " + " ".join(cells), flush=True)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()


if __name__ == "__main__":
    main()
