"""Random and mutated HTTP/2 frame sequences against a live supervisor/grpcserver.

For GRPC_FUZZ_SECONDS (20 by default), several raw connections at a time send sequences built
from plausible frames (requests with gRPC messages, SETTINGS, PING, WINDOW_UPDATE, RST_STREAM,
PRIORITY, CONTINUATION, GOAWAY, unknown types; random flags, stream ids and lengths), then
mutated (bits flipped, bytes cut, inserted, repeated). Meanwhile a normal gRPC client on its
own connection must keep getting answers. Afterwards: nothing logged as an error or with a
traceback (by the server or by asyncio), every connection and call is gone, and the process'
memory is back near its baseline. The seed is printed, and in every failure message
(GRPC_FUZZ_SEED replays one).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import os
import random
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from supervisor.grpcserver import Server, h2
from tests.integration import grpc_stress
from tests.integration.h2_raw import RawClient, grpc_message, request_headers

LIMITS = h2.Limits(max_streams=64, handshake_timeout=1.0, read_timeout=1.0, idle_timeout=2.0, close_grace=0.5)
METHODS = ["/stress.Mix/Unary", "/stress.Mix/ClientStream", "/stress.Mix/ServerStream", "/stress.Mix/Bidi",
           "/stress.Mix/Nope"]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _plausible(rng: random.Random, sid: int) -> bytes:
    """One frame a client might send, or nearly."""
    kind = rng.choices(range(11), weights=(20, 20, 3, 8, 6, 1, 6, 2, 8, 5, 2))[0]
    flags = rng.choice((0, 0, h2.END_STREAM, h2.END_HEADERS, h2.END_HEADERS | h2.END_STREAM, h2.PADDED,
                        h2.PRIORITY_FLAG, rng.randrange(256)))
    if rng.random() < 0.1:
        sid = rng.choice((0, 2, sid + 2, 1 << 31 - 1, rng.randrange(1 << 31)))
    if kind == h2.DATA:
        msg = grpc_stress._request(rng, rng.choice((0, 0, 50)), rng.randint(1, 5), rng.choice((1, 100, 5000)),
                                   rng.choice((0, 10, 1000, 15000)))
        payload = grpc_message(msg, declared=None if rng.random() < 0.8 else rng.randrange(1 << 32))
        payload = payload[:16384]
    elif kind in (h2.HEADERS, h2.CONTINUATION):
        payload = request_headers(rng.choice(METHODS), **({"grpc-timeout": f"{rng.randint(1, 500)}m"}
                                                          if rng.random() < 0.3 else {}))
        if kind == h2.HEADERS and flags & h2.PRIORITY_FLAG:
            payload = struct.pack(">IB", rng.choice((0, sid, 1)), 16) + payload
        if kind == h2.CONTINUATION and rng.random() < 0.5:
            payload = b""
    elif kind == h2.SETTINGS:
        payload = b"".join(struct.pack(">HI", rng.randint(0, 8), rng.choice((0, 1, 16384, 65535, 1 << 20,
                                                                            rng.randrange(1 << 32))))
                           for _ in range(rng.randint(0, 4)))
        sid = 0 if rng.random() < 0.9 else sid
    elif kind == h2.PING:
        payload, sid = rng.randbytes(8), 0 if rng.random() < 0.9 else sid
    elif kind == h2.WINDOW_UPDATE:
        payload = struct.pack(">I", rng.choice((0, 1, 65535, 1 << 20, (1 << 31) - 1, rng.randrange(1 << 32))))
        sid = rng.choice((0, sid))
    elif kind == h2.RST_STREAM:
        payload = struct.pack(">I", rng.choice((0, 8, 1, rng.randrange(1 << 32))))
    elif kind == h2.PRIORITY:
        payload = struct.pack(">IB", rng.choice((0, sid, 1)), rng.randrange(256))
    elif kind == h2.GOAWAY:
        payload, sid = struct.pack(">II", sid, rng.choice((0, 2))) + rng.randbytes(rng.randint(0, 8)), 0
    elif kind == h2.PUSH_PROMISE:
        payload = struct.pack(">I", sid + 1)
    else:
        payload, kind = rng.randbytes(rng.randint(0, 40)), rng.randrange(10, 256)
    if flags & h2.PADDED and rng.random() < 0.7:
        pad = rng.randint(0, 20)
        payload = bytes((pad,)) + payload + bytes(pad)
    return h2.frame(kind, flags, sid, payload)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            break
        op, i = rng.randrange(5), rng.randrange(len(buf))
        if op == 0:
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            del buf[i:i + rng.randint(1, 20)]
        elif op == 2:
            buf[i:i] = rng.randbytes(rng.randint(1, 20))
        elif op == 3:
            j = min(len(buf), i + rng.randint(9, 200))
            buf[j:j] = buf[i:j] * rng.randint(1, 5)
        else:
            buf[i] = rng.choice((0, 0xFF, 0x7F, 0x80))
    return bytes(buf)


def _sequence(rng: random.Random) -> bytes:
    out = bytearray()
    if rng.random() < 0.97:
        out += h2.PREFACE + h2.frame(h2.SETTINGS, 0, 0)
    sids = list(range(1, 2 * rng.randint(1, 8), 2))
    for _ in range(rng.randint(1, 40)):
        sid = rng.choice(sids)
        if rng.random() < 0.4:  # a well-formed request, perhaps left open
            out += h2.frame(h2.HEADERS, h2.END_HEADERS, sid, request_headers(rng.choice(METHODS)))
            out += h2.frame(h2.DATA, rng.choice((0, h2.END_STREAM)), sid,
                            grpc_message(grpc_stress._request(rng, 0, 2, 10, rng.choice((0, 100)))))
        else:
            out += _plausible(rng, sid)
    if rng.random() < 0.7:
        return _mutate(rng, bytes(out))
    return bytes(out)


async def _attack(path: str, rng: random.Random, seen: collections.Counter[str]) -> None:
    raw = await RawClient.connect(path, handshake=False)
    reader = asyncio.ensure_future(raw.closed(3600))
    try:
        data = _sequence(rng)
        for i in range(0, len(data), chunk := rng.choice((len(data) or 1, 7, 100, 1000))):
            await raw.send(data[i:i + chunk])
        await asyncio.wait([reader], timeout=rng.choice((0.01, 0.1, 0.5)))
    except ConnectionError:
        pass
    finally:
        seen["connections"] += 1
        for f in raw.frames:
            if f[0] == h2.GOAWAY and len(f[3]) >= 8:
                seen[f"goaway {int.from_bytes(f[3][4:8], 'big')}"] += 1
            elif f[0] == h2.RST_STREAM and len(f[3]) == 4:
                seen[f"rst {int.from_bytes(f[3], 'big')}"] += 1
            elif f[0] == h2.HEADERS and f[1] & h2.END_STREAM:
                seen["answers"] += 1
        raw.close()
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        with contextlib.suppress(Exception):
            await asyncio.wait_for(raw.wait_closed(), 5)
        RawClient.opened.remove(raw)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    path = str(tmp_path / "fuzz.sock")
    async with grpc_stress.serving(path, limits=LIMITS) as server:
        yield server, path


async def test_random_frames_never_hurt_the_server(served: tuple[Server, str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    server, path = served
    caplog.set_level(logging.WARNING)
    seed = int(os.environ.get("GRPC_FUZZ_SEED") or random.randrange(1 << 30))
    seconds = float(os.environ.get("GRPC_FUZZ_SECONDS", "20"))
    print(f"fuzz seed {seed}")
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    async with grpc.aio.insecure_channel(f"unix:{path}") as ch:
        echo = ch.unary_unary("/stress.Mix/Unary")
        assert await echo(b"0,1,3;") == b"uuu"
        gc.collect()
        baseline = _rss()
        stop = time.monotonic() + seconds
        canary_calls = 0

        async def canary() -> None:  # a well-behaved client on its own connection
            nonlocal canary_calls
            while time.monotonic() < stop:
                assert await asyncio.wait_for(echo(b"0,1,5;"), 10) == b"uuuuu", f"seed {seed}"
                canary_calls += 1
                await asyncio.sleep(0.05)

        seen: collections.Counter[str] = collections.Counter()

        async def attacker(n: int) -> None:
            rng = random.Random(seed * 100 + n)
            while time.monotonic() < stop:
                await _attack(path, rng, seen)

        try:
            await asyncio.gather(canary(), *(attacker(n) for n in range(4)))
        finally:
            loop.set_exception_handler(previous)
        assert canary_calls > 10, f"seed {seed}"
        async with asyncio.timeout(15):  # every raw connection and every call it started ends
            while len(server._connections) > 1 or server._calls:
                await asyncio.sleep(0.05)
        assert await echo(b"0,1,2;") == b"uu", f"seed {seed}"
    gc.collect()
    grown = _rss() - baseline
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, f"seed {seed}: {errors[:5]}"
    assert not loop_errors, f"seed {seed}: {[c.get('message') for c in loop_errors[:5]]}"
    assert grown < 64 << 20, f"seed {seed}: RSS grew by {grown >> 20} MiB"
    print(f"fuzz seed {seed}: RSS {baseline >> 20} MiB -> {(baseline + grown) >> 20} MiB; {dict(seen)}")
