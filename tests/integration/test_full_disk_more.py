"""A full disk for what tests/integration/test_full_disk.py leaves out: container logs, metadata
writes, volumes, builds and commits. Same set-up (its fixtures and helpers): the daemon's whole
root on a small tmpfs, busybox imported, then the disk filled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dock.client import Client
from dockyard_common import containerlog as cl
from dockyard_common.errors import DockyardError, ResourceExhausted
from dockyard_common.imagespec import Descriptor
from dockyard_common.types import AnyValue, Container
from supervisor.diskreserve import RESERVE_NAME
from tests.ctr import ok
from tests.daemon import REPO, start_daemon
from tests.integration import test_full_disk
from tests.integration.test_full_disk import PYTHON_NAMES, Env, MiB, assert_clear, fill
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")]

env = test_full_disk.env  # the fixture: the daemon on a small tmpfs root, busybox imported
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
LINE = re.compile(r"^line (\d+)( x+)?$")


def fill_up(e: Env, filler: Path) -> None:
    """Collect first (what the import left is removed now, not later into the full disk's
    room), then fill the disk with `filler`."""
    e.d.wait_startup_collection()
    ok(e.dock("gc"))
    fill(filler)


def uid(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


# -- container logs --------------------------------------------------------------------------------


def numbers(text: str) -> list[int]:
    """The line numbers in `dock logs` output; every line must be one the container wrote whole
    (a record cut by the full disk and glued to the next would not match)."""
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, f"a damaged log line: {line[:200]!r}"
        out.append(int(m.group(1)))
    return out


def task_pid(e: Env, cid: str) -> int | None:
    """The init's pid while the task runs (None otherwise)."""
    for row in ok(e.ctr("tasks", "ls")).splitlines()[1:]:
        parts = row.split()
        if parts[0] == cid:
            return int(parts[1]) if parts[2] == "RUNNING" else None
    return None


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE).group(1))  # type: ignore[union-attr]


def cpu_seconds(pid: int) -> float:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_files(e: Env, cid: str) -> list[Path]:
    """The log's files, oldest first."""
    found = sorted((e.root / "logs" / "default" / cid).glob(f"{cl.CURRENT}*"), key=lambda p: p.name)
    return found[1:][::-1] + found[:1]


def assert_whole_records(files: list[Path]) -> None:
    """Every record on disk is whole: a piece of one that did not fit, left in the file, would
    glue to the next and `dock logs` would drop that line without a word."""
    for f in files:
        data = f.read_bytes()
        assert not data or data.endswith(b"\n"), f"{f.name} ends in the middle of a record"
        bad = [r for r in data.splitlines() if cl.parse_record(r) is None]
        assert not bad, f"{f.name}: {len(bad)} broken records, the first {bad[0][:120]!r}"


def shim_report(e: Env) -> str | None:
    """The shim's first line in the daemon's log about the disk being full, if any."""
    return next((line for line in e.d.log()[e.d.log_start:].splitlines()
                 if "dockyard.shim." in line and "No space left on device" in line), None)


@pytest.fixture
def ctl(env: Env) -> Iterator[Path]:
    """A directory of the test's (off the small filesystem), the containers' /ctl: they stop
    writing when /ctl/stop appears."""
    path = env.tmp / "ctl"
    path.mkdir()
    yield path
    (path / "stop").touch()


WRITER = ("busybox awk -v n={fast} 'BEGIN {{ pad = sprintf(\"%200s\", \"\"); gsub(/ /, \"x\", pad); "
          "for (i = 1; i <= n; i++) printf \"line %d %s\\n\", i, pad }}'; "
          "i={fast}; while [ ! -e /ctl/stop ]; do i=$((i+1)); echo line $i; busybox usleep 2000; done")


def test_container_log_on_a_full_disk(env: Env, ctl: Path) -> None:
    """A container writes fast until its log has filled the disk, then slowly: it is neither
    killed nor blocked, the shim neither dies nor spins, the loss is reported, what was written
    reads back whole, and once there is room again (a ballast file of the test's removed) the
    log goes on."""
    ballast = env.root / "test-ballast"
    with open(ballast, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 16 * MiB)
    fast = (env.free() + 16 * MiB) // 200  # more bytes than the disk holds, in records
    cid = uid("log")
    ok(env.dock("run", "-d", "--net", "none", "--name", cid, "--log-opt", "max-size=1g", "-v", f"{ctl}:/ctl",
                "busybox", "sh", "-c", WRITER.format(fast=fast)))
    init = wait_until(lambda: task_pid(env, cid), 30, what="the container to run")
    followed = env.tmp / "followed"
    with open(followed, "wb") as out:  # a follower all along: it must see each line once, whole
        follower = subprocess.Popen([sys.executable, "-m", "dock.cli", "logs", "-f", cid], stdout=out,
                                    stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO),
                                                                 "DOCKYARD_ADDRESS": env.d.address}, cwd=REPO)
    try:
        through_the_full_disk(env, cid, fast, ctl, ballast, parent_of(init), init)
        _, err = follower.communicate(timeout=60)  # ends with the log
        assert follower.returncode == 0, err
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    everything = numbers(ok(env.dock("logs", cid)))
    assert numbers(followed.read_text()) == everything
    ok(env.dock("rm", cid))


def through_the_full_disk(env: Env, cid: str, fast: int, ctl: Path, ballast: Path, shim: int, init: int) -> None:
    """The container's log fills the disk; then the ballast goes; then the container stops."""
    assert_clear(wait_until(lambda: shim_report(env), 60, what="the shim to report the full disk", interval=0.05))
    assert env.free() < MiB
    cpu_before, t_before = cpu_seconds(shim), time.monotonic()
    tail = ok(env.dock("logs", "--tail", "3", cid))  # readable while full
    assert len(numbers(tail)) == 3
    last_written = numbers(tail)[-1]
    assert last_written < fast
    # A measurement, not a wait for a state: the shim's CPU over a second of the full disk,
    # while the container writes a line every 2 ms that cannot be stored.
    wait_until(lambda: time.monotonic() - t_before >= 1.0, 5, what="a second of the full disk", interval=0.1)
    busy = (cpu_seconds(shim) - cpu_before) / (time.monotonic() - t_before)
    print(f"shim CPU while full: {busy:.0%}")
    assert busy < 0.5, f"the shim spins on the full disk ({busy:.0%} of a CPU)"
    assert task_pid(env, cid) == init, "the container did not survive its log's full disk"
    reports = [line for line in env.d.log()[env.d.log_start:].splitlines() if "dockyard.shim." in line and
               "No space left on device" in line]
    assert len(reports) < 5, f"the shim floods its log: {len(reports)} reports"
    ballast.unlink()

    def resumed() -> list[int] | None:
        got = numbers(ok(env.dock("logs", "--tail", "5", cid)))
        return got if got[-1] > fast else None

    wait_until(resumed, 20, what="the log to go on once there is room", interval=0.05)
    report = re.compile(r"container log \S+ is written again; (\d+) bytes of log records lost since \S+\"")
    lost = wait_until(lambda: report.search(env.d.log()[env.d.log_start:]), 10, what="the loss to be reported")
    print(lost.group(0))
    assert int(lost.group(1)) > 0
    (ctl / "stop").touch()
    wait_until(lambda: task_pid(env, cid) is None, 30, what="the container to stop")
    everything = numbers(ok(env.dock("logs", cid)))
    assert everything == sorted(set(everything)), "lines out of order or twice"
    # from the first line on until the disk filled, then what fitted (at the last blocks a
    # write fails, and the next smaller one fits), then, after the gap, the slow lines
    first_gap = next(i for i, n in enumerate(everything) if n != i + 1)
    assert first_gap > 1000 and set(numbers(tail)) <= set(everything) and everything[-1] > fast
    files = log_files(env, cid)
    assert [f.name for f in files] == [cl.CURRENT]
    assert_whole_records(files)
    log = env.d.log()[env.d.log_start:]
    assert "Traceback" not in log


GATED = "while [ ! -e /ctl/go ]; do busybox usleep 10000; done; " + WRITER


def test_container_log_rotation_out_of_inodes(env: Env, ctl: Path) -> None:
    """The log's own filesystem (a tmpfs mounted on its directory) has no inode left when the
    log must rotate: the set of files stays whole (`dock logs` reads it), the container runs
    on, and once inodes are free again the log rotates and goes on."""
    cid = uid("rot")
    logdir = env.root / "logs" / "default" / cid
    logdir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=32,mode=0700", "dy-log", str(logdir)],
                   check=True)
    try:
        fast = 400  # ~100 KiB: a dozen files of 8 KiB
        ok(env.dock("run", "-d", "--net", "none", "--name", cid, "--log-opt", "max-size=8k", "--log-opt",
                    "max-file=3", "-v", f"{ctl}:/ctl", "busybox", "sh", "-c", GATED.format(fast=fast)))
        init = wait_until(lambda: task_pid(env, cid), 30, what="the container to run")
        fillers: list[Path] = []
        with contextlib.suppress(OSError):
            while True:
                fillers.append(logdir / f"filler-{len(fillers)}")
                fillers[-1].touch()
        fillers.pop()
        (ctl / "go").touch()
        assert_clear(wait_until(lambda: shim_report(env), 30, what="the shim to report the log it cannot rotate"))
        assert [f.name for f in log_files(env, cid)] == [cl.CURRENT]  # nothing renamed
        got = numbers(ok(env.dock("logs", cid)))
        first = [n for n in got if n <= fast]  # the first file, whole; short slow lines may still fit
        assert first == list(range(1, len(first) + 1)) and first and got == sorted(got), got
        assert task_pid(env, cid) == init
        for f in fillers:
            f.unlink()

        def resumed() -> list[int] | None:
            got = numbers(ok(env.dock("logs", "--tail", "5", cid)))
            return got if got[-1] > fast else None

        wait_until(resumed, 20, what="the log to go on once inodes are free", interval=0.05)
        wait_until(lambda: "is written again" in env.d.log()[env.d.log_start:], 10, what="the loss to be reported")
        (ctl / "stop").touch()
        wait_until(lambda: task_pid(env, cid) is None, 30, what="the container to stop")
        files = log_files(env, cid)
        assert [f.name for f in files] == [f"{cl.CURRENT}.2", f"{cl.CURRENT}.1", cl.CURRENT]
        assert all(f.stat().st_size <= 8 * 1024 for f in files)
        assert_whole_records(files)
        assert not [p.name for p in logdir.iterdir() if p.name.startswith(".")], "a staged file left behind"
        everything = numbers(ok(env.dock("logs", cid)))
        assert everything == sorted(set(everything)) and everything[-1] > fast
        assert "Traceback" not in env.d.log()[env.d.log_start:]
    finally:
        subprocess.run(["umount", "-l", str(logdir)], check=False)
    ok(env.dock("rm", cid))


# -- metadata writes -------------------------------------------------------------------------------


def container_of(cid: str, spec_size: int) -> Container:
    return Container(id=cid, runtime_name="io.containerd.runc.v2",
                     spec=AnyValue(SPEC_URL, json.dumps({"pad": "x" * spec_size}).encode()),
                     labels={"test": "full"})


async def until_refused(attempt: Callable[[int], Awaitable[object]], tries: int = 200) -> DockyardError:
    """Call attempt(0), attempt(1), ... until one is refused (writes may land in room SQLite's
    log already has); the error."""
    for i in range(tries):
        try:
            await attempt(i)
        except DockyardError as exc:
            return exc
    pytest.fail(f"{tries} writes went through on a full disk")


async def test_metadata_writes_on_a_full_disk(env: Env) -> None:
    """Containers.Create and Update, Leases.Create, Images.Create while the filesystem holding
    metadata.db is full: ResourceExhausted in words, nothing half-stored, reads still served;
    deletions work (in the disk reserve's room, which other writes do not get to keep); writes
    work again once there is room, also after a restart on the full disk."""
    filler = env.root / "test-filler"
    async with env.d.client() as c:
        for cid in ("before", "doomed"):
            await c.containers.create(container_of(cid, 100))
        busybox = await c.images.get("docker.io/library/busybox:latest")
        fill_up(env, filler)
        refused = await refused_writes(c, busybox.target, "full")
        # reads are served, and show nothing of what was refused
        assert {x.id for x in await c.containers.list()} >= {"before", "doomed"}
        assert json.loads((await c.containers.get("before")).spec.value)["pad"] == "x" * 100  # type: ignore[union-attr]
        assert "docker.io/library/busybox:latest" in {i.name for i in await c.images.list()}
        assert not {x.id for x in await c.leases.list()} & {f"full-{i}" for i in range(200)}
        # a deletion on the full disk works; the room the reserve gave it is taken back, so the
        # records created next cannot keep the following deletions from working too
        await c.containers.delete("doomed")
        await deletions_keep_working(env, c, "full")
        for cid in refused:
            await c.containers.delete(cid)
    ok(env.dock("ps", "-a"))
    ok(env.dock("images", "ls"))
    check_database(env)
    # a restart while the disk is still full: reads served, writes refused, deletions work
    assert env.d.stop() == 0
    env.d = start_daemon(base=env.base)
    log = env.d.log()[env.d.log_start:]
    assert "Traceback" not in log and "the filesystem is full at start-up" in log
    assert "before" in ok(env.dock("ps", "-a"))
    async with env.d.client() as c:
        await deletions_keep_working(env, c, "restarted")
        refused = await refused_writes(c, busybox.target, "restarted")
        for cid in refused:
            await c.containers.delete(cid)
    filler.unlink()
    async with env.d.client() as c:
        await c.containers.create(container_of("after", 100))
        await c.containers.update(container_of("before", 200))
        lease = await c.leases.create(labels={"pad": "x" * 4000})
        await c.leases.delete(lease.id)
        await c.images.create("docker.io/library/after:1", busybox.target)
        await c.images.delete("docker.io/library/after:1")
        for cid in ("after", "before"):
            await c.containers.delete(cid)
    env.run_busybox()
    assert "Traceback" not in env.d.log()[env.d.log_start:]
    assert env.d.stop() == 0
    check_database(env)
    env.d = start_daemon(base=env.base)


async def refused_writes(c: Client, target: Descriptor, prefix: str) -> list[str]:
    """Each kind of write, until refused (the first ones may fit in room the database's log
    already has): ResourceExhausted, in words. The ids of the containers that did fit."""
    made: list[str] = []

    async def create(i: int) -> None:
        await c.containers.create(container_of(f"{prefix}-{i}", 256 * 1024))
        made.append(f"{prefix}-{i}")

    writes: dict[str, Callable[[int], Awaitable[object]]] = {
        "Containers.Create": create,
        "Containers.Update": lambda i: c.containers.update(container_of("before", 256 * 1024 + i)),
        "Leases.Create": lambda i: c.leases.create(f"{prefix}-{i}", labels={"pad": "x" * 4000}),
        "Images.Create": lambda i: c.images.create(f"docker.io/library/{prefix}:{i}", target,
                                                   labels={"pad": "x" * 4000}),
    }
    for name, write in writes.items():
        err = await until_refused(write)
        assert isinstance(err, ResourceExhausted), f"{name}: {err!r}"
        assert_clear(str(err))
    print(f"{prefix}: {len(made)} creates went through before one was refused")
    return made


async def deletions_keep_working(env: Env, c: Client, prefix: str) -> None:
    """The reserve released (by a deletion, or by start-up) is taken back, and records made in
    what is left free can all be deleted again."""
    wait_until(lambda: env.free() < 2 * MiB, 5, what="the released disk reserve's room to be taken back",
               interval=0.02)
    made: list[str] = []

    async def create(i: int) -> None:
        await c.containers.create(container_of(f"{prefix}-more-{i}", 256 * 1024))
        made.append(f"{prefix}-more-{i}")

    assert isinstance(await until_refused(create), ResourceExhausted)
    for cid in made:
        await c.containers.delete(cid)
    print(f"{prefix}: deleted the {len(made)} containers made in what was free")


def check_database(e: Env) -> None:
    db = sqlite3.connect(f"file:{e.root / 'metadata.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


# -- volumes ---------------------------------------------------------------------------------------


def volumes_dir(e: Env) -> Path:
    return e.root / "volumes" / "default"


def hidden_volume_entries(e: Env) -> list[str]:
    d = volumes_dir(e)
    return sorted(p.name for p in d.iterdir() if p.name.startswith(".")) if d.exists() else []


def leave_free(e: Env, filler: Path, room: int) -> None:
    """Fill the disk with `filler`, then give `room` bytes of it back."""
    fill_up(e, filler)
    os.truncate(filler, max(0, filler.stat().st_size - room))


def assert_exhausted(stderr: str) -> None:
    """Clear (test_full_disk.assert_clear), and of the kind a full disk is, not "internal"."""
    assert_clear(stderr)
    assert "resource exhausted" in stderr and "internal" not in stderr, stderr


def test_volume_create_on_a_full_disk(env: Env) -> None:
    filler = env.root / "test-filler"
    fill_up(env, filler)
    res = env.dock("volume", "create", "vol1")
    assert res.returncode != 0
    assert_exhausted(res.stderr)
    assert "vol1" not in ok(env.dock("volume", "ls"))
    assert hidden_volume_entries(env) == [] and not (volumes_dir(env) / "vol1").exists()
    filler.unlink()
    ok(env.dock("volume", "create", "vol1"))
    assert "vol1" in ok(env.dock("volume", "ls"))
    ok(env.dock("volume", "rm", "vol1"))


def test_volume_seed_that_does_not_fit(env: Env) -> None:
    """`dock run -v data:/bin`: Docker's copy-up of the image's /bin (busybox, ~2 MiB) into the
    new volume meets a full disk. The run fails in words, the volume is left empty (so the next
    run seeds it whole) and nothing of the container stays."""
    filler = env.root / "test-filler"
    leave_free(env, filler, 512 * 1024)
    res = env.dock("run", "--net", "none", "--name", "seeded", "-v", "data:/bin", "busybox", "true")
    assert res.returncode != 0
    assert_exhausted(res.stderr)
    assert "seeded" not in ok(env.dock("ps", "-a"))
    assert hidden_volume_entries(env) == []
    data = volumes_dir(env) / "data" / "_data"
    if data.exists():  # made before the copy, as Docker's: then it is empty, not half-seeded
        assert list(data.iterdir()) == [], "a half-seeded volume (it would never be seeded again)"
    filler.unlink()
    out = ok(env.dock("run", "--rm", "--net", "none", "-v", "data:/bin", "busybox", "ls", "/bin"))
    assert {"busybox", "sh", "ls"} <= set(out.split())
    image_bin = ok(env.dock("run", "--rm", "--net", "none", "busybox", "ls", "-l", "/bin/busybox")).split()[4]
    seeded_bin = ok(env.dock("run", "--rm", "--net", "none", "-v", "data:/bin", "busybox", "ls", "-l",
                             "/bin/busybox")).split()[4]
    assert seeded_bin == image_bin
    ok(env.dock("volume", "rm", "data"))


# -- builds and commits ----------------------------------------------------------------------------


@dataclass
class Leftovers:
    """What a build or commit may leave behind: snapshots, leases, ingests (as the API lists
    them), and any file or directory under the root (temp dirs, build contexts, snapshot dirs)."""

    snapshots: list[str]
    leases: list[str]
    ingests: list[str]
    files: list[str]


def leftovers(e: Env) -> Leftovers:
    snaps = [line.split()[0] for line in ok(e.ctr("snapshots", "ls")).splitlines()[1:]]
    leases = [line.split()[0] for line in ok(e.ctr("leases", "ls")).splitlines()[1:]]
    ingests = [line.split()[0] for line in ok(e.ctr("content", "active")).splitlines()[1:]]
    return Leftovers(snaps, leases, ingests, files_under(e.root))


def assert_no_leftovers(before: Leftovers, after: Leftovers) -> None:
    for what in ("snapshots", "leases", "ingests", "files"):
        was, now = set(getattr(before, what)), set(getattr(after, what))
        assert was == now, f"{what}: left {sorted(now - was)}, gone {sorted(was - now)}"


def files_under(root: Path) -> list[str]:
    """Every entry under `root` but the databases and reserves (which stay, changing), the
    build contexts (kept on purpose: the next build of the directory sends only what changed)
    and the temp directory itself (made on first use; what is in it counts); a snapshot's
    directory counts, not what is in it."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] == ("build-contexts",):
            continue
        if len(rel.parts) == 3 and rel.parts[0] == "snapshots" and rel.parts[2] == "snapshots":
            out += [str(rel / d) for d in dirnames]
            dirnames[:] = []
            continue
        out += [str(rel / n) for n in dirnames + filenames
                if not n.startswith(("metadata.db", RESERVE_NAME)) and str(rel / n) not in ("tmp", "build-contexts")]
    return sorted(out)


def build_context(e: Env, dockerfile: str) -> Path:
    ctx = e.tmp / f"ctx-{secrets.token_hex(3)}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


@pytest.mark.parametrize("step", ["fails", "succeeds"])
def test_build_whose_run_step_writes_past_the_free_space(env: Env, step: str) -> None:
    """A RUN step writes more than the disk holds: either the command fails for it (dd reports
    the full disk) or it goes on regardless (`|| true`) and its layer then does not fit in the
    content store. The build fails in words; no snapshot, lease, ingest or temp dir is left;
    the space comes back; the next build works."""
    env.d.wait_startup_collection()
    ok(env.dock("gc"))
    before_state = leftovers(env)
    before = env.free()
    write = f"dd if=/dev/urandom of=/big bs=1M count={before // MiB + 8}"
    ctx = build_context(env, f"FROM busybox\nRUN {write}{' || true' if step == 'succeeds' else ''}\n")
    res = env.dock("build", "--network", "none", "--progress", "plain", "-t", "big:1", str(ctx), timeout=300)
    print(res.stdout[-2000:], res.stderr[-2000:])
    assert res.returncode != 0
    assert "no space left on device" in (res.stdout + res.stderr).lower()
    assert not [n for n in PYTHON_NAMES if n in res.stderr], res.stderr
    env.wait_freed(before)
    assert_no_leftovers(before_state, leftovers(env))
    assert "big:1" not in ok(env.dock("images", "ls"))
    ctx = build_context(env, "FROM busybox\nRUN echo small > /small\n")
    ok(env.dock("build", "--network", "none", "-t", "small:1", str(ctx), timeout=300))
    env.run_busybox()
    assert "Traceback" not in env.d.log()[env.d.log_start:]


def test_commit_whose_layer_does_not_fit(env: Env) -> None:
    """`dock commit` of a container whose writable layer (incompressible) is larger than what is
    left free: ResourceExhausted in words; no view, lease, ingest or temp file left; the space
    back; the container as it was (removed, its space goes too)."""
    env.d.wait_startup_collection()
    ok(env.dock("gc"))
    size = env.free() * 6 // 10
    cid = uid("commit")
    ok(env.dock("run", "--net", "none", "--name", cid, "busybox", "sh", "-c", f"head -c {size} /dev/urandom > /big"))
    before_state = leftovers(env)
    before = env.free()
    assert before < size
    res = env.dock("commit", cid, "committed:1")
    assert res.returncode != 0
    assert_exhausted(res.stderr)
    env.wait_freed(before)
    assert_no_leftovers(before_state, leftovers(env))
    assert "committed:1" not in ok(env.dock("images", "ls"))
    assert cid in ok(env.dock("ps", "-a"))
    ok(env.dock("rm", cid))
    env.wait_freed(before + size)
    env.run_busybox()
    assert "Traceback" not in env.d.log()[env.d.log_start:]
