"""Ingests survive their writer's process dying: a real child is SIGKILLed mid-ingest."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dockyard_common.errors import Unavailable
from supervisor.content import LocalContentStore

REPO = Path(__file__).resolve().parents[2]
DATA = hashlib.sha256(b"seed").digest() * 65536  # 2 MiB
HALF = len(DATA) // 2 + 12345

# The child writes the first HALF bytes, says "ready" and then waits to be killed.
CHILD = """
import asyncio, hashlib, sys, time
from supervisor.content import LocalContentStore

async def main() -> None:
    root, ref, half = sys.argv[1], sys.argv[2], int(sys.argv[3])
    data = hashlib.sha256(b"seed").digest() * 65536
    store = LocalContentStore(root)
    w = await store.writer(ref, total=len(data))
    for off in range(0, half, 65536):
        await w.write(data[off:min(off + 65536, half)], off)
    print("ready", flush=True)
    time.sleep(60)

asyncio.run(main())
"""


def dg(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_sigkilled_writer_is_resumed(tmp_path: Path) -> None:
    root = tmp_path / "content"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # Popen only forks and execs; the child's output is then read in a worker thread.
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), "layer-1", str(HALF)],
        stdout=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout=60)
        assert line == b"ready\n"
        store = LocalContentStore(root)
        # While the child lives its flock holds the ref, across processes.
        with pytest.raises(Unavailable, match="layer-1 locked"):
            await store.writer("layer-1")
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()

    store = LocalContentStore(root)
    st = await store.status("layer-1")
    assert (st.offset, st.total) == (HALF, len(DATA))
    assert not await store.exists(dg(DATA))
    w = await store.writer("layer-1")
    assert w.status().offset == HALF
    assert w.digest() == dg(DATA[:HALF])
    await w.write(DATA[HALF:], HALF)
    assert await w.commit(len(DATA), dg(DATA)) == dg(DATA)
    assert await store.read_all(dg(DATA), len(DATA)) == DATA
    assert await store.list_statuses() == []


async def test_dropped_store_is_resumed_in_process(tmp_path: Path) -> None:
    """kill -9 without a subprocess: drop store and writer unclosed, open a fresh store."""
    root = tmp_path / "content"
    store = LocalContentStore(root)
    w = await store.writer("in-proc", total=len(DATA), expected=dg(DATA))
    await w.write(DATA[:HALF], 0)
    del store, w
    gc.collect()

    fresh = LocalContentStore(root)
    [st] = await fresh.list_statuses()
    assert (st.ref, st.offset, st.total, st.expected) == ("in-proc", HALF, len(DATA), dg(DATA))
    w = await fresh.writer("in-proc")
    assert w.digest() == dg(DATA[:HALF])
    # A client that lost track may also start over from zero on the resumed ingest.
    await w.write(DATA, 0)
    assert await w.commit() == dg(DATA)
