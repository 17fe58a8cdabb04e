"""A mixed gRPC load for supervisor/grpcserver: the four call kinds at random, with deadlines,
client cancellations and raw resets, on a few long-lived connections. Every call must end with a
response or a status: a call still pending long after its deadline is a hang.

Used by tests/integration/test_grpcserver_stress.py (short) and bench/stress.py (minutes, and
side by side with grpcio's aio server running the same handlers).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc

from supervisor.grpcserver import Server, h2
from supervisor.grpcserver.server import DEFAULT_MAX_MESSAGE
from tests.integration.h2_raw import RawClient, grpc_message, request_headers

KiB = 1024
HANG = 15.0  # a call still pending this long after its deadline (or its start, without one) is hung


def _args(request: bytes) -> tuple[float, int, int]:
    """Requests start with "sleep_ms,count,size;" (the rest is payload); clamped, and a default
    for what does not parse (the fuzz test sends mutated requests)."""
    try:
        sleep_ms, count, size = (int(x) for x in request.split(b";", 1)[0].split(b","))
    except ValueError:
        return 0.0, 1, 1
    return min(abs(sleep_ms), 1000) / 1000, min(abs(count), 100), min(abs(size), 256 * KiB)


async def unary(request: bytes, context: Any) -> bytes:
    sleep, _, size = _args(request)
    if sleep:
        await asyncio.sleep(sleep)
    return b"u" * size


async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    n = 0
    async for msg in requests:
        sleep, _, _ = _args(msg)
        n += len(msg)
        if sleep:  # stops reading for a while: the rest of the request waits, unread
            await asyncio.sleep(sleep)
    return str(n).encode()


async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    sleep, count, size = _args(request)
    for _ in range(count):
        if sleep:
            await asyncio.sleep(sleep / max(count, 1))
        yield b"s" * size


async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for msg in requests:
        sleep, _, size = _args(msg)
        if sleep:
            await asyncio.sleep(sleep)
        yield b"b" * size


HANDLERS = grpc.method_handlers_generic_handler("stress.Mix", {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
    "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
    "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
})



@contextlib.asynccontextmanager
async def serving(path: str, handlers: grpc.GenericRpcHandler = HANDLERS, max_message_size: int = DEFAULT_MAX_MESSAGE,
                  limits: h2.Limits | None = None) -> AsyncIterator[Server]:
    """supervisor/grpcserver's Server with `handlers` on the unix socket `path`; at the end the
    raw clients still open are closed and the server stopped."""
    server = Server(max_message_size=max_message_size, limits=limits)
    server.add_generic_rpc_handlers((handlers,))
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    try:
        yield server
    finally:
        await RawClient.close_all()
        await server.stop(0)


@dataclass
class Tally:
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    hung: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    calls: int = 0
    resets: int = 0

    def summary(self) -> str:
        return (f"{self.calls} calls, {self.resets} raw resets: " + ", ".join(f"{k} {v}" for k, v in
                                                                          sorted(self.outcomes.items())))


# Codes a call may end with under this load; anything else is a server fault. grpcio's client
# reports a streaming call whose write loses the race with the call's end (its deadline, or the
# server's answer) as INTERNAL "Internal error from Core", against grpcio's own server too.
EXPECTED = {"OK", "DEADLINE_EXCEEDED", "CANCELLED"}
CLIENT_RACE = "Internal error from Core"


def _request(rng: random.Random, sleep_ms: int, count: int, size: int, payload: int) -> bytes:
    return f"{sleep_ms},{count},{size};".encode() + rng.randbytes(payload)


async def _one_call(ch: grpc.aio.Channel, rng: random.Random, tally: Tally) -> None:
    kind = rng.choice(("Unary", "ClientStream", "ServerStream", "Bidi"))
    timeout = rng.choice((None, None, 0.05, 0.2, 1.0))
    sleep_ms = rng.choice((0, 0, 0, 10, 100, 400))
    cancel_after = rng.choice((None, None, None, 0.0, 0.01, 0.1))
    payload = rng.choice((10, 1000, 64 * KiB, 300 * KiB))
    count, size = rng.choice(((1, 10), (10, 1000), (50, 16 * KiB), (3, 200 * KiB)))
    method = f"/stress.Mix/{kind}"
    if kind == "Unary":
        call: Any = ch.unary_unary(method)(_request(rng, sleep_ms, 1, size, payload), timeout=timeout)
    elif kind == "ServerStream":
        call = ch.unary_stream(method)(_request(rng, sleep_ms, count, size, payload), timeout=timeout)
    else:
        messages = [_request(rng, sleep_ms if i == 0 else 0, 1, size, payload) for i in range(rng.randint(1, count))]

        def requests(messages: list[bytes] = messages) -> Iterator[bytes]:
            yield from messages
        if kind == "ClientStream":
            call = ch.stream_unary(method)(requests(), timeout=timeout)
        else:
            call = ch.stream_stream(method)(requests(), timeout=timeout)

    async def finish() -> str:
        if kind in ("ServerStream", "Bidi"):
            async for _ in call:
                pass
        else:
            await call
        return "OK"

    async def outcome() -> str:
        if cancel_after is not None:
            waiter = asyncio.ensure_future(finish())
            await asyncio.wait([waiter], timeout=cancel_after)
            call.cancel()
            try:
                return await waiter
            except asyncio.CancelledError:
                return "CANCELLED"
        return await finish()

    limit = (timeout or 0) + sleep_ms / 1000 + HANG
    tally.calls += 1
    try:
        result = await asyncio.wait_for(outcome(), limit)
    except grpc.aio.AioRpcError as err:
        result = err.code().name
        if err.code() == grpc.StatusCode.INTERNAL and err.details() == CLIENT_RACE and kind != "Unary":
            result = "INTERNAL (client write race)"
        elif result not in EXPECTED:
            tally.unexpected.append(f"{kind} timeout={timeout} sleep={sleep_ms}ms cancel={cancel_after} "
                                    f"payload={payload} count={count}: {result} {err.details()}")
    except asyncio.CancelledError:
        result = "CANCELLED"
    except TimeoutError:
        result = "HUNG"
        tally.hung.append(f"{kind} timeout={timeout} sleep={sleep_ms}ms cancel={cancel_after}")
    tally.outcomes[result] += 1


async def _raw_resets(path: str, rng: random.Random, tally: Tally, stop: float) -> None:
    """One long-lived raw connection: requests with data the handler has not read, then
    RST_STREAM; now and then a stream error (a zero WINDOW_UPDATE)."""
    raw = await RawClient.connect(path)
    drain = asyncio.ensure_future(raw.closed(3600))
    sid = 1
    try:
        while time.monotonic() < stop:
            if drain.done() or sid > 1 << 30:  # the server ended the connection: a new one
                raw.close()
                raw, sid = await RawClient.connect(path), 1
                drain = asyncio.ensure_future(raw.closed(3600))
            method = rng.choice(("/stress.Mix/ClientStream", "/stress.Mix/Bidi", "/stress.Mix/Unary"))
            body = grpc_message(_request(rng, 200, 1, 10, rng.choice((10, 5000)))) * rng.randint(1, 3)
            frames = h2.frame(h2.HEADERS, h2.END_HEADERS, sid, request_headers(method))
            frames += b"".join(h2.frame(h2.DATA, 0, sid, body[i:i + 16384]) for i in range(0, len(body), 16384))
            try:
                await raw.send(frames)
                await asyncio.sleep(rng.choice((0, 0.001, 0.02)))
                if rng.random() < 0.1:
                    await raw.send_frame(h2.WINDOW_UPDATE, 0, sid, bytes(4))
                else:
                    await raw.send_frame(h2.RST_STREAM, 0, sid, struct.pack(">I", h2.CANCEL))
            except ConnectionError:
                sid = 1 << 31  # a new connection next time round
                continue
            tally.resets += 1
            sid += 2
    finally:
        raw.close()
        drain.cancel()
        with contextlib.suppress(BaseException):
            await drain


async def run(path: str, seconds: float, seed: int, connections: int = 3, workers: int = 8) -> Tally:
    """The load for `seconds` on `connections` channels with `workers` callers each."""
    tally = Tally()
    stop = time.monotonic() + seconds
    options = [("grpc.max_receive_message_length", 16 << 20)]

    async def worker(ch: grpc.aio.Channel, rng: random.Random) -> None:
        while time.monotonic() < stop:
            await _one_call(ch, rng, tally)

    channels = [grpc.aio.insecure_channel(f"unix:{path}", options=options) for _ in range(connections)]
    try:
        jobs = [worker(ch, random.Random(seed * 1000 + i * 100 + j))
                for i, ch in enumerate(channels) for j in range(workers)]
        jobs.append(_raw_resets(path, random.Random(seed), tally, stop))
        await asyncio.gather(*jobs)
    finally:
        for ch in channels:
            await ch.close()
    return tally
