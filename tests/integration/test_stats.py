"""Stats streams end to end: a real dockyardd, our shim, busybox containers, the kernel's cgroups.

Samples are checked against the cgroup files themselves; streams against containers that come,
go, and shims that die; a reader that stops must not hold anything up; a daemon restart must not
end an SDK stream. Every test leaves no task, container, cgroup or process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from dock.stats import StatsSample
from dockyard_api.containerd.services.tasks.v1 import tasks_pb2 as pb_tasks
from dockyard_api.containerd.services.tasks.v1 import tasks_pb2_grpc as pb_tasks_grpc
from dockyard_api.dockyard.shim.v1 import stats_pb2 as pb_shim
from dockyard_api.dockyard.stats.v1 import stats_pb2 as pb
from dockyard_api.dockyard.stats.v1 import stats_pb2_grpc as pb_grpc
from dockyard_common.errors import InvalidArgument, NotFound
from shim.cgroups import Resources, new_manager
from shim.stats import CgroupReader
from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, daemon_with_runtime, import_busybox, remove_everything, shim_available
from tests.daemon import REPO, DaemonProcess, remove_empty_cgroups, start_daemon
from tests.waiting import wait_until, wait_until_async

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

CGROUPS = Path("/sys/fs/cgroup")
NS = "default"


@pytest.fixture
def d(busybox_daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    yield busybox_daemon
    remove_everything(busybox_daemon)
    assert ctr(busybox_daemon, "tasks", "ls", "-q").stdout == ""
    assert ctr(busybox_daemon, "containers", "ls", "-q").stdout == ""


def uid(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


def run(d: DaemonProcess, cid: str, script: str, *, label: str = "") -> None:
    extra = ["--label", label] if label else []
    res = ctr(d, "run", "-d", *extra, IMAGE, cid, "sh", "-c", script)
    assert res.returncode == 0, res.stderr


def cgroup(controller: str, cid: str) -> Path:
    return CGROUPS / controller / "dockyard" / NS / cid


def read_int(controller: str, cid: str, name: str) -> int:
    return int((cgroup(controller, cid) / name).read_text())


def read_flat(controller: str, cid: str, name: str) -> dict[str, int]:
    out = {}
    for line in (cgroup(controller, cid) / name).read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def blkio_totals(cid: str) -> tuple[int, int]:
    d = cgroup("blkio", cid)
    prefix = "blkio." if (d / "blkio.io_service_bytes_recursive").exists() else "blkio.throttle."
    read = write = 0
    for line in (d / f"{prefix}io_service_bytes_recursive").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            write += int(parts[2])
    return read, write


async def take(stream: AsyncIterator[StatsSample], n: int, timeout: float = 15) -> list[StatsSample]:
    out: list[StatsSample] = []
    async with asyncio.timeout(timeout):
        async for s in stream:
            out.append(s)
            if len(out) == n:
                break
    return out


def proc_state(pid: int) -> str:
    """R, S, D, Z... ("" once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return ""


def only_sleep_left(cid: str) -> bool:
    """Whether the container's one process is `sleep`, asleep: the script before it is done."""
    procs = (cgroup("pids", cid) / "cgroup.procs").read_text().split()
    if len(procs) != 1:
        return False
    try:
        cmd = Path(f"/proc/{procs[0]}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return cmd.startswith(b"sleep\0") and proc_state(int(procs[0])) == "S"


# ----- samples are what the kernel says ------------------------------------------------------


@pytest.mark.skipif(not (CGROUPS / "cpuacct").is_dir(), reason="compares with cgroup v1 files")
async def test_samples_match_the_cgroup_files(d: DaemonProcess) -> None:
    cid = uid("burn")
    # 32 MiB into the container's tmpfs (charged to its memory cgroup as page cache), 4 MiB
    # synced to the disk (v1 may charge that writeback elsewhere: the files decide), then about
    # a second of one CPU (a count, not a time: a loaded machine makes it slower, not smaller),
    # then idle.
    run(d, cid, "dd if=/dev/zero of=/dev/shm/fill bs=1M count=32 2>/dev/null; "
                "dd if=/dev/zero of=/blk bs=1M count=4 conv=fsync 2>/dev/null; "
                "i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done; exec sleep 1000")
    # Once the script has exec'd its final sleep, the CPU counter stands still.
    await wait_until_async(lambda: only_sleep_left(cid), timeout=60, what="the burn to end in `exec sleep`")
    cpu = read_int("cpuacct", cid, "cpuacct.usage")
    async with d.client() as c:
        stream = c.stats.stream(cid, interval=0.2)
        try:
            first, second = await take(stream, 2)
        finally:
            await stream.aclose()
    mem = read_int("memory", cid, "memory.usage_in_bytes")
    stat = read_flat("memory", cid, "memory.stat")
    for s in (first, second):
        assert s.id == cid and s.namespace == NS and not s.end and s.cgroup_version == 1
        assert s.cpu is not None and s.memory is not None and s.pids is not None and s.blkio is not None
        # The container only sleeps now: its CPU counter stands still.
        assert abs(s.cpu.usage_total_ns - cpu) < 5_000_000, (s.cpu, cpu)
        # (the kernel's user/system split is its own estimate: it need not add up to the total)
        assert abs(s.cpu.usage_user_ns - read_int("cpuacct", cid, "cpuacct.usage_user")) < 5_000_000
        assert abs(s.cpu.usage_system_ns - read_int("cpuacct", cid, "cpuacct.usage_sys")) < 5_000_000
        assert s.memory.usage >= 32 << 20
        assert abs(s.memory.usage - mem) < 1 << 20, (s.memory.usage, mem)
        assert s.memory.cache >= 32 << 20 and abs(s.memory.cache - stat["cache"]) < 1 << 20
        assert abs(s.memory.rss - stat["rss"]) < 1 << 20
        assert s.memory.limit == 2**64 - 1  # no limit set
        assert s.memory.max_usage >= s.memory.usage
        assert s.memory.oom_kills == 0 and s.memory.failcnt == 0
        assert s.pids.current == read_int("pids", cid, "pids.current") == 1
        assert (s.blkio.read_bytes, s.blkio.write_bytes) == blkio_totals(cid)
        assert s.cpu_pressure is None  # v1 has no PSI files
    assert cpu >= 500_000_000  # the burn really burned
    assert second.seq == first.seq + 1 and second.timestamp_ns > first.timestamp_ns
    assert 0.1e9 < second.timestamp_ns - first.timestamp_ns < 0.6e9


async def test_memory_limit_and_pids_limit_are_reported(d: DaemonProcess) -> None:
    cid = uid("limits")
    res = ctr(d, "run", "-d", "--memory-limit", str(64 << 20), IMAGE, cid, "sleep", "1000")
    assert res.returncode == 0, res.stderr
    async with d.client() as c:
        stream = c.stats.stream(cid, interval=0.2)
        try:
            (s,) = await take(stream, 1)
        finally:
            await stream.aclose()
    assert s.memory is not None and s.memory.limit == 64 << 20


async def test_an_update_of_the_limits_shows_in_the_samples(d: DaemonProcess) -> None:
    # The shim reads limits once and again only after an Update (see shim.stats.CgroupReader).
    cid = uid("update")
    res = ctr(d, "run", "-d", "--memory-limit", str(64 << 20), IMAGE, cid, "sleep", "1000")
    assert res.returncode == 0, res.stderr
    resources = {"memory": {"limit": 96 << 20}, "pids": {"limit": 77}}
    update = pb_tasks.UpdateTaskRequest(container_id=cid)
    update.resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
    update.resources.value = json.dumps(resources).encode()
    async with d.client() as c, grpc.aio.insecure_channel(f"unix:{d.address}") as ch:
        stream = c.stats.stream(cid, interval=0.1)
        try:
            (before,) = await take(stream, 1)
            await pb_tasks_grpc.TasksStub(ch).Update(update, metadata=[("containerd-namespace", NS)])
            for s in await take(stream, 3):  # the one sampled before the answer may be old
                after = s
        finally:
            await stream.aclose()
    assert before.memory is not None and before.memory.limit == 64 << 20 and before.pids is not None
    assert after.memory is not None and after.memory.limit == 96 << 20 == read_int("memory", cid,
                                                                                  "memory.limit_in_bytes")
    assert after.pids is not None and after.pids.limit == 77


def test_the_shims_fast_reader_agrees_with_the_cgroup_driver() -> None:
    """shim.stats.CgroupReader (held-open files) against CgroupManager.stats() (the driver's)."""
    group = f"/stats-test/{uid('reader')}"
    mgr = new_manager()
    mgr.create(group, Resources(memory_limit=256 << 20, pids_limit=50))
    # It waits for a line on stdin (so it is in the cgroup before it uses anything), and says
    # when its work is done; then only its sleep runs, and the two reads must agree.
    child = subprocess.Popen(["sh", "-c", "read go; x=$(head -c 4000000 /dev/zero | tr '\\0' a); "
                              "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo done; sleep 30"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reader = CgroupReader(mgr)
    try:
        mgr.add_process(child.pid)
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.close()
        assert child.stdout.readline() == "done\n"
        wait_until(lambda: len(mgr.pids()) == 2 and all(proc_state(p) == "S" for p in mgr.pids()),
                   what="the shell to wait on its sleep")
        sample = pb_shim.Sample()
        reader.fill(sample)
        want = mgr.stats()
    finally:
        reader.close()
        child.kill()
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
        mgr.delete(force=True)
        remove_empty_cgroups("dockyard/stats-test")
    assert sample.cgroup_version == want.version
    assert abs(sample.cpu.usage_total_ns - want.cpu.usage_total) < 20_000_000
    assert sample.cpu.usage_total_ns > 0
    assert sample.memory.limit == 256 << 20 == want.memory.usage.limit
    assert abs(sample.memory.usage - want.memory.usage.usage) < 1 << 20
    assert sample.memory.rss >= 1 << 20 and abs(sample.memory.rss - want.memory.rss) < 1 << 20
    assert (sample.memory.cache, sample.memory.failcnt) == (want.memory.cache, want.memory.usage.failcnt)
    assert sample.memory.oom_kills == want.memory_events.oom_kill
    assert (sample.pids.current, sample.pids.limit) == (want.pids.current, want.pids.limit)
    assert sample.pids.current >= 1 and sample.pids.limit == 50
    assert sample.blkio.read_bytes == sum(d.rbytes for d in want.io.devices)
    assert sample.blkio.write_bytes == sum(d.wbytes for d in want.io.devices)
    assert sample.HasField("cpu_pressure") == (want.cpu_pressure is not None)


# ----- containers come and go ------------------------------------------------------------------


async def test_stream_over_all_sees_a_later_container_and_its_end(d: DaemonProcess) -> None:
    early, late = uid("early"), uid("late")
    run(d, early, "exec sleep 1000")
    got: list[StatsSample] = []
    late_ended = asyncio.Event()
    async with d.client() as c:

        async def read() -> None:
            async for s in c.stats.stream(all=True, interval=0.2):
                got.append(s)
                if s.id == late and s.end:
                    late_ended.set()

        reader = asyncio.create_task(read())
        try:
            await wait_until_async(lambda: any(s.id == early for s in got), timeout=15, what="a sample of early")
            await asyncio.to_thread(run, d, late, "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1; exit 3")
            async with asyncio.timeout(20):
                await late_ended.wait()
            ended_at = len(got)
            # Three more rounds of the other container: time enough for a late sample to show.
            await wait_until_async(lambda: sum(s.id == early for s in got[ended_at:]) >= 3, timeout=15,
                                   what="the other container's samples after the end marker")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    mine = [s for s in got if s.id == late]
    assert len(mine) >= 2, "the late container never joined the stream"
    final = mine[-1]
    assert final.end and sum(s.end for s in mine) == 1
    assert final.cpu is not None and final.cpu.usage_total_ns >= mine[0].cpu.usage_total_ns > 0  # type: ignore[union-attr]
    assert final.pids is not None and final.pids.current == 0  # its processes are gone
    assert [s.seq for s in mine] == list(range(mine[0].seq, mine[0].seq + len(mine)))
    assert not any(s.id == late for s in got[ended_at:]), "samples after the end marker"
    assert any(s.id == early for s in got[ended_at:]), "the other container stopped streaming"
    assert all(not s.end for s in got if s.id == early)


async def test_dead_shim_ends_its_container_with_a_marker(d: DaemonProcess) -> None:
    victim = uid("victim")
    run(d, victim, "exec sleep 1000")
    shim_pid = int((d.state / "tasks" / NS / victim / "shim.pid").read_text())
    async with d.client() as c:
        stream = c.stats.stream(victim, interval=0.2)
        try:
            (first,) = await take(stream, 1)
            os.kill(shim_pid, signal.SIGKILL)
            async with asyncio.timeout(20):
                async for s in stream:
                    if s.end:
                        break
        finally:
            await stream.aclose()
    assert first.cpu is not None
    assert s.id == victim and s.end and s.cpu is None  # the daemon's marker: no stats to give


async def test_label_filter_selects_containers_that_start_later(d: DaemonProcess) -> None:
    web, other, probe = uid("web"), uid("other"), uid("probe")
    run(d, probe, "exec sleep 1000")
    got: list[StatsSample] = []
    async with d.client() as c:
        # The probe, selected by id, shows when the subscription is live: nothing else would.
        stream = c.stats.stream(probe, filters=['labels."app"==web'], interval=0.2)

        async def read() -> None:
            async for s in stream:
                got.append(s)

        reader = asyncio.create_task(read())
        try:
            await wait_until_async(lambda: any(s.id == probe for s in got), timeout=15, what="the probe's sample")
            await asyncio.to_thread(run, d, other, "exec sleep 1000", label="app=db")
            await asyncio.to_thread(run, d, web, "exec sleep 1000", label="app=web")
            await wait_until_async(lambda: sum(s.id == web for s in got) >= 3, timeout=15, what="3 samples of web")
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    assert {s.id for s in got} == {probe, web}


async def test_bad_requests_are_refused(d: DaemonProcess) -> None:
    async with d.client() as c:
        with pytest.raises(NotFound, match="nope"):
            await take(c.stats.stream("nope"), 1)
        with pytest.raises(InvalidArgument, match="interval_ms 10"):
            await take(c.stats.stream(all=True, interval=0.01), 1)
        with pytest.raises(InvalidArgument, match="parse error"):
            await take(c.stats.stream(filters=["labels.=="]), 1)


# ----- nobody waits for a slow reader ------------------------------------------------------------


async def test_a_reader_that_stops_stalls_neither_the_shims_nor_other_readers(d: DaemonProcess) -> None:
    ids = [uid(f"busy{i}") for i in range(3)]
    for cid in ids:
        run(d, cid, "exec sleep 1000")
    req = pb.StreamRequest(all=True, interval_ms=100)
    md = [("containerd-namespace", NS)]
    # A reader with small HTTP/2 windows, so gRPC's own buffers fill in a moment and the
    # daemon's bound (one unsent sample per container) is what gives.
    opts = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    async with grpc.aio.insecure_channel(f"unix:{d.address}", options=opts) as slow_ch, d.client() as fast:
        slow = pb_grpc.StatsStub(slow_ch).Stream(req, metadata=md)
        slow_it = slow.__aiter__()
        await slow_it.__anext__()  # subscribed; now it stops reading
        fast_got: list[StatsSample] = []
        stream = fast.stats.stream(all=True, interval=0.1)
        started = time.monotonic()
        try:
            async with asyncio.timeout(30):
                async for s in stream:
                    fast_got.append(s)
                    if time.monotonic() - started > 6:
                        break
        finally:
            await stream.aclose()
        # The fast reader got every container's samples on time, without gaps: no shim waited.
        for cid in ids:
            seqs = [s.seq for s in fast_got if s.id == cid]
            assert len(seqs) >= 40, (cid, len(seqs))
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{cid}: samples lost for the fast reader"
        late = [s for s in fast_got if s.received_ns - s.timestamp_ns > 500_000_000]
        assert len(late) <= len(fast_got) // 20, f"{len(late)} of {len(fast_got)} samples arrived late"
        assert all(s.dropped == 0 for s in fast_got)
        # The slow reader resumes: what it missed was dropped (and counted), and it gets fresh samples.
        last = None
        async with asyncio.timeout(15):
            while True:
                last = await slow_it.__anext__()
                if time.time_ns() - last.samples[-1].timestamp.ToNanoseconds() < 300_000_000:
                    break
        assert last is not None and last.dropped > 50, last.dropped
        slow.cancel()


# ----- a daemon restart does not end an SDK stream -----------------------------------------------


async def test_stream_survives_a_daemon_restart(d: DaemonProcess) -> None:
    cid = uid("steady")
    run(d, cid, "exec sleep 1000")
    async with d.client() as c:
        stream = c.stats.stream(cid, interval=0.2)
        try:
            before = await take(stream, 2)
            await asyncio.to_thread(d.stop, signal.SIGKILL)
            restarted = time.time_ns()
            new = await asyncio.to_thread(start_daemon, d.base)
            d.proc, d.log_start = new.proc, new.log_start
            after = await take(stream, 3, timeout=30)
        finally:
            await stream.aclose()
    assert all(s.id == cid and not s.end for s in before + after)
    assert after[0].reconnected and not any(s.reconnected for s in after[1:])
    assert all(s.timestamp_ns > restarted for s in after)
    assert after[-1].cpu is not None


# ----- dock stats ------------------------------------------------------------------------------


def dock(d: DaemonProcess, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=REPO)


def test_dock_stats_prints_a_table_json_lines_and_a_live_table(d: DaemonProcess) -> None:
    cid = uid("cli")
    run(d, cid, "exec sleep 1000")
    res = dock(d, "stats", "--no-stream")
    assert res.returncode == 0, res.stderr
    header, *rows = res.stdout.splitlines()
    assert header.split("  ")[0] == "CONTAINER" and "MEM USAGE / LIMIT" in header and "BLOCK I/O" in header
    (row,) = [r for r in rows if r.startswith(cid)]
    assert row.split()[1].endswith("%") and " / " in row

    res = dock(d, "stats", "--no-stream", "--format", "json", cid)
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    snap = json.loads(line)
    assert snap["id"] == cid and snap["cpu_percent"] is not None and snap["memory"]["usage"] > 0

    # Into a pipe, streaming: one JSON object per sample, as they come.
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": d.address}
    proc = subprocess.Popen([sys.executable, "-m", "dock.cli", "stats", "--interval", "0.2", cid],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert [x["id"] for x in lines] == [cid] * 3
    assert [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)

    # On a terminal (script(1) gives it one): the table, redrawn in place.
    shown = subprocess.run(["script", "-qfec", f"timeout -s INT 3 {sys.executable} -m dock.cli stats --interval 0.5",
                            "/dev/null"], capture_output=True, text=True, env=env, cwd=REPO, timeout=30).stdout
    assert "CONTAINER" in shown and cid in shown and "\x1b[" in shown  # cursor movement: redrawn in place
    assert "Traceback" not in shown


# ----- a shim without our extension ------------------------------------------------------------


@pytest.mark.skipif(not shim_available("runc-go"), reason="containerd-shim-runc-v2 is not installed")
async def test_containerds_own_shim_is_polled_instead() -> None:
    with daemon_with_runtime("runc-go") as d:
        try:
            import_busybox(d)
            cid = uid("go")
            run(d, cid, "sleep 1.5; exit 2")
            async with d.client() as c:
                stream = c.stats.stream(cid, interval=0.2)
                try:
                    got = []
                    async with asyncio.timeout(20):
                        async for s in stream:
                            got.append(s)
                            if s.end:
                                break
                finally:
                    await stream.aclose()
        finally:
            remove_everything(d)
    assert len(got) >= 3 and got[-1].end and not any(s.end for s in got[:-1])
    assert all(s.cpu is not None and s.memory is not None and s.cgroup_version == 1 for s in got[:-1])
    assert got[0].cpu is not None and got[0].cpu.usage_total_ns > 0
    assert [s.seq for s in got] == list(range(1, len(got) + 1))
