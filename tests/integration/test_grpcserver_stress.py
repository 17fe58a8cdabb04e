"""A mixed load on supervisor/grpcserver (tests/integration/grpc_stress.py): unary,
client-streaming, server-streaming and bidi calls with deadlines, cancellations and raw resets
on a few long-lived connections. Every call must end (a response or a status), only with the
codes such a load explains, and afterwards every connection's books balance.

GRPC_STRESS_SECONDS sets the length (20 s here; bench/stress.py runs it for minutes).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from supervisor.grpcserver import Server
from tests.integration import grpc_stress


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    path = str(tmp_path / "stress.sock")
    async with grpc_stress.serving(path) as server:
        yield server, path


async def test_mixed_load_every_call_ends(served: tuple[Server, str]) -> None:
    server, path = served
    seed = int(os.environ.get("GRPC_STRESS_SEED") or random.randrange(1 << 30))
    seconds = float(os.environ.get("GRPC_STRESS_SECONDS", "20"))
    tally = await grpc_stress.run(path, seconds, seed)
    print(f"seed {seed}: {tally.summary()}")
    assert not tally.hung, f"seed {seed}: hung calls {tally.hung[:10]}"
    assert not tally.unexpected, f"seed {seed}: {tally.unexpected[:10]}"
    assert tally.outcomes["OK"] > 100 and tally.resets > 100, f"seed {seed}: {tally.summary()}"
    async with asyncio.timeout(20):  # handlers cancelled by resets and deadlines all end
        while server._calls:
            await asyncio.sleep(0.05)
    for conn in server._connections:
        assert conn.held == 0, f"seed {seed}"
        assert conn.recv_window + conn.recv_unacked == server.limits.buffer, f"seed {seed}"
