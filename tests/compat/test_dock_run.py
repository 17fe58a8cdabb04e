"""`dock run`, `dock tasks`, `dock containers` and `dock events` against a real dockyardd.

Parametrized over the shims in RUNTIMES, like test_ctr_run: the same dock session must behave
the same whichever shim serves io.containerd.runc.v2. After each test nothing of it is left:
no task or container or snapshot, no container cgroup, no mount under the daemon's dirs, and
no FIFO or rootfs temp dir of dock's (the dock processes get a private TMPDIR to check that).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock import runner
from dock.events import Envelope
from dock.images import OCI_INDEX, Descriptor
from dock.oci import SpecOptions
from dock.runner import RunRequest
from dock.tasks import Status
from dockyard_common.errors import NotFound
from tests.compat.conftest import ctr
from tests.compat.runtimes import IMAGE, RUNTIMES, daemon_with_runtime, import_busybox, remove_everything
from tests.daemon import REPO, DaemonProcess
from tests.eventlog import EventLog
from tests.images import build_image, oci_archive, tar_tree
from tests.rootfs import make_busybox_rootfs
from tests.unit.archive_fixtures import build_tar, directory, file

pytestmark = [pytest.mark.compat, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


class Session:
    """A daemon with busybox imported, a private TMPDIR for dock, and the ids a test used."""

    def __init__(self, d: DaemonProcess, runtime: str, tmp: Path) -> None:
        self.d = d
        self.runtime = runtime
        self.tmp = tmp
        self.ids: list[str] = []

    def new_id(self, name: str) -> str:
        cid = f"{name}-{secrets.token_hex(3)}"  # the Go shim keeps runc state machine-wide
        self.ids.append(cid)
        return cid

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": self.d.address, "TMPDIR": str(self.tmp)}

    def dock(self, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True,
                              env=self.env(), timeout=timeout, input=input, cwd=REPO)

    def ok(self, *args: str, input: str | None = None) -> str:
        res = self.dock(*args, input=input)
        assert res.returncode == 0, f"dock {shlex.join(args)}: rc {res.returncode}\n{res.stderr}"
        assert "Traceback" not in res.stderr, res.stderr
        return res.stdout

    def popen(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "dock.cli", *args], env=self.env(), cwd=REPO, text=True,
                                **kw)  # type: ignore[call-overload]

    def tasks(self) -> dict[str, tuple[int, str]]:
        rows = [r.split() for r in self.ok("tasks", "ls").splitlines()[1:]]
        return {r[0]: (int(r[1]), r[2]) for r in rows}

    def wait_status(self, cid: str, status: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while self.tasks().get(cid, (0, ""))[1] != status:
            assert time.monotonic() < deadline, f"task {cid} never became {status}: {self.tasks()}"
            time.sleep(0.1)

    def cgroup(self, controller: str, cid: str) -> Path:
        return CGROUP_ROOT / controller / "dockyard" / "default" / cid

    def snapshots(self) -> str:
        return ctr(self.d, "snapshots", "ls").stdout


@pytest.fixture(params=RUNTIMES)
def session(request: pytest.FixtureRequest) -> Iterator[Session]:
    with daemon_with_runtime(request.param) as d, tempfile.TemporaryDirectory(prefix="dy-docktmp-") as tmp:
        import_busybox(d)
        s = Session(d, request.param, Path(tmp))
        try:
            yield s
        finally:
            remove_everything(d)
            assert ctr(d, "tasks", "ls", "-q").stdout == ""
            assert ctr(d, "containers", "ls", "-q").stdout == ""
            assert not [cid for cid in s.ids if cid in s.snapshots()]
            assert mounts_under(d.base) == [] and mounts_under(s.tmp) == []
            assert list(s.tmp.iterdir()) == [], "dock left temp files behind"
            for cid in s.ids:
                for controller in ("memory", "pids", "freezer", "cpu"):
                    deadline = time.monotonic() + 5
                    while s.cgroup(controller, cid).exists() and time.monotonic() < deadline:
                        time.sleep(0.05)
                    assert not s.cgroup(controller, cid).exists(), f"cgroup {controller}/{cid} left behind"


def import_image(s: Session, archive: bytes) -> None:
    path = s.tmp / "image.tar"
    path.write_bytes(archive)
    try:
        res = ctr(s.d, "images", "import", str(path))
        assert res.returncode == 0, res.stderr
    finally:
        path.unlink()


# -- run in the foreground -------------------------------------------------------------------------


def test_run_rm_prints_and_passes_the_exit_code(session: Session) -> None:
    s = session
    res = s.dock("run", "--rm", "--name", s.new_id("hello"), "busybox", "echo", "hello")
    assert (res.returncode, res.stdout, res.stderr) == (0, "hello\n", "")
    res = s.dock("run", "--rm", "--name", s.new_id("three"), IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    assert s.ok("containers", "ls", "-q") == "" and s.ok("tasks", "ls", "-q") == ""
    assert not [cid for cid in s.ids if cid in s.snapshots()]


def test_run_without_rm_keeps_the_container(session: Session) -> None:
    s = session
    cid = s.new_id("keep")
    assert s.ok("run", "--name", cid, "busybox", "true") == ""
    assert s.ok("containers", "ls", "-q") == f"{cid}\n"
    assert s.ok("tasks", "ls", "-q") == ""  # the task goes, as with ctr run
    info = json.loads(s.ok("containers", "info", cid))
    assert info["image"] == IMAGE and info["snapshot_key"] == cid and info["snapshotter"] == "overlayfs"
    assert info["labels"]["io.containerd.image.config.stop-signal"] == "SIGTERM"
    spec = info["spec"]
    assert spec["root"] == {"path": "rootfs"} and spec["linux"]["cgroupsPath"] == f"/default/{cid}"
    assert spec["process"]["args"] == ["true"] and spec["process"]["user"]["additionalGids"] == [0]
    assert cid in s.snapshots()
    assert s.ok("containers", "rm", cid) == ""
    assert s.ok("containers", "ls", "-q") == "" and cid not in s.snapshots()
    res = s.dock("containers", "rm", cid)
    assert res.returncode == 1 and "not found" in res.stderr and "Traceback" not in res.stderr


def test_env_cwd_user_hostname(session: Session) -> None:
    s = session
    out = s.ok("run", "--rm", "--env", "FOO=bar", "-e", "PATH=/bin", "--cwd", "/tmp", "--user", "1000",
               "--hostname", "boxy", "--name", s.new_id("who"), "busybox", "sh", "-c",
               "id -u; id -g; pwd; hostname; env")
    lines = out.splitlines()
    assert lines[:4] == ["1000", "1000", "/tmp", "boxy"]
    assert "FOO=bar" in lines and "PATH=/bin" in lines  # the user's PATH replaces the image's
    out = s.ok("run", "--rm", "--user", "nobody", "--name", s.new_id("nobody"), "busybox", "id", "-u")
    assert out == "65534\n"
    res = s.dock("run", "--rm", "--user", "ghost", "--name", s.new_id("ghost"), "busybox", "true")
    assert res.returncode == 1 and "user 'ghost'" in res.stderr and "not found" in res.stderr


def test_image_config_is_honoured(session: Session) -> None:
    s = session
    with tempfile.TemporaryDirectory(prefix="dy-img-") as tmp:
        base = tar_tree(make_busybox_rootfs(Path(tmp) / "rootfs"))
    # A second layer puts `user` in the tty group too: additionalGids come from the image's /etc/group.
    groups = build_tar([directory("etc"), directory("work"),
                        file("etc/group", b"root:x:0:\ntty:x:5:user\nuser:x:1000:\n")])
    name = "docker.io/library/configured:1"
    image = build_image(name, [base, groups], {
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo from-cmd; id -u; id -G; pwd; echo $GREETING $PATH"],
        "Env": ["GREETING=hi", "PATH=/bin:/usr/bin"], "WorkingDir": "/work", "User": "user",
        "StopSignal": "SIGINT"})
    import_image(s, oci_archive([image]))
    cid = s.new_id("cfg")
    out = s.ok("run", "--name", cid, name)
    assert out.splitlines() == ["from-cmd", "1000", "1000 5", "/work", "hi /bin:/usr/bin"]
    assert json.loads(s.ok("containers", "info", cid))["labels"]["io.containerd.image.config.stop-signal"] == \
        "SIGINT"
    s.ok("containers", "rm", cid)
    # Arguments replace Cmd and keep the Entrypoint; --env goes over the image's.
    out = s.ok("run", "--rm", "-e", "GREETING=bye", "--name", s.new_id("args"), name, "echo $GREETING; id -u")
    assert out == "bye\n1000\n"


def test_an_index_target_picks_this_platform(session: Session) -> None:
    s = session

    async def tag_index() -> None:
        async with s.d.client() as c:
            img = await c.images.get(IMAGE)
            index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {"mediaType": img.target.media_type, "digest": "sha256:" + "0" * 64, "size": 10,
                 "platform": {"os": "linux", "architecture": "arm64"}},
                {"mediaType": img.target.media_type, "digest": img.target.digest, "size": img.target.size,
                 "platform": {"os": "linux", "architecture": "amd64"}},
            ]}).encode()
            info = await c.content.write("dock-test-index", index)
            await c.images.create("docker.io/library/multi:1", Descriptor(OCI_INDEX, info.digest, len(index)))

    asyncio.run(tag_index())
    assert s.ok("run", "--rm", "--name", s.new_id("multi"), "multi:1", "echo", "picked") == "picked\n"


# -- failures undo what they made --------------------------------------------------------------------


def test_failures_leave_nothing_behind(session: Session) -> None:
    s = session
    res = s.dock("run", "--rm", "--name", s.new_id("noimg"), "nothere", "true")
    assert res.returncode == 1 and "not found" in res.stderr and "Traceback" not in res.stderr
    res = s.dock("run", "--rm", "--name", s.new_id("nocmd"), "busybox", "/no/such/binary")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    res = s.dock("run", "--rm", "--mount", "src=relative,dst=/x", "--name", s.new_id("badmount"), "busybox", "true")
    assert res.returncode != 0 and "absolute" in res.stderr
    res = s.dock("run", "--memory", "lots", "--name", s.new_id("badmem"), "busybox", "true")
    assert res.returncode != 0 and "invalid size" in res.stderr
    res = s.dock("run", "-it", "--detach-keys", "ctrl-pp", "--name", s.new_id("keys"), "busybox", "cat")
    assert res.returncode == 1 and "invalid detach keys" in res.stderr  # (-d -i is allowed now: dock attach)
    assert s.ok("containers", "ls", "-q") == "" and s.ok("tasks", "ls", "-q") == ""
    assert not [cid for cid in s.ids if cid in s.snapshots()]
    assert list(s.tmp.iterdir()) == []
    assert ctr(s.d, "leases", "ls", "-q").stdout == ""


def test_a_taken_id_is_refused_and_the_owner_untouched(session: Session) -> None:
    s = session
    cid = s.new_id("taken")
    assert s.ok("run", "-d", "--name", cid, "busybox", "sleep", "300") == f"{cid}\n"
    res = s.dock("run", "--rm", "--name", cid, "busybox", "true")
    assert res.returncode == 1 and "already exists" in res.stderr
    assert s.tasks()[cid][1] == "RUNNING"
    assert cid in s.snapshots() and s.ok("containers", "ls", "-q") == f"{cid}\n"
    s.ok("tasks", "kill", "-s", "KILL", cid)


# -- detached tasks and the tasks commands ----------------------------------------------------------


def test_detached_task_lifecycle(session: Session) -> None:
    s = session
    cid = s.new_id("bg")
    assert s.ok("run", "-d", "--name", cid, "busybox", "sleep", "300") == f"{cid}\n"
    pid, status = s.tasks()[cid]
    assert status == "RUNNING" and pid > 0
    assert [str(pid), "-"] in [r.split() for r in s.ok("tasks", "ps", cid).splitlines()]
    data = json.loads(s.ok("--format", "json", "tasks", "ls"))
    assert data == [{"id": cid, "pid": pid, "status": "RUNNING", "stdin": "", "stdout": "", "stderr": "",
                     "terminal": False, "exit_status": 0, "exited_at": None}]
    metrics = json.loads(s.ok("--format", "json", "tasks", "metrics", cid))
    assert metrics[0]["id"] == cid and metrics[0]["data"]["pids"]["current"] == 1
    assert "memory.usage.usage" in s.ok("tasks", "metrics", cid)
    res = s.dock("tasks", "exec", "--exec-id", "e1", cid, "echo", "hi")
    assert (res.returncode, res.stdout) == (0, "hi\n"), res.stderr
    assert s.dock("tasks", "exec", cid, "sh", "-c", "exit 4").returncode == 4
    assert s.ok("tasks", "exec", "-i", cid, "cat", input="piped\n") == "piped\n"
    s.ok("tasks", "pause", cid)
    assert s.tasks()[cid] == (pid, "PAUSED")
    s.ok("tasks", "resume", cid)
    assert s.tasks()[cid] == (pid, "RUNNING")
    res = s.dock("tasks", "rm", cid)
    assert res.returncode == 1 and "must be stopped" in res.stderr
    res = s.dock("containers", "rm", cid)
    assert res.returncode == 1 and "non stopped" in res.stderr
    # Whether the waiter's Wait reaches the daemon before or after the kill, it answers 137 (a
    # stopped task's Wait returns its exit at once, as containerd's): no need to time the two.
    waiter = s.popen("tasks", "wait", cid, stdout=subprocess.PIPE)
    s.ok("tasks", "kill", "--signal", "SIGKILL", cid)
    assert waiter.wait(timeout=20) == 137
    waiter.stdout.close()  # type: ignore[union-attr]
    assert s.tasks()[cid][1] == "STOPPED"
    res = s.dock("tasks", "rm", cid)
    assert res.returncode == 0 and "137" in res.stderr
    assert s.ok("containers", "ls", "-q") == f"{cid}\n"
    s.ok("containers", "rm", cid)
    assert s.ok("containers", "ls", "-q") == "" and cid not in s.snapshots()


def test_containers_create_then_tasks_start(session: Session) -> None:
    s = session
    cid = s.new_id("made")
    assert s.ok("containers", "create", "--env", "X=1", "--name", cid, "busybox", "sh", "-c", "echo $X") == f"{cid}\n"
    assert s.ok("tasks", "ls", "-q") == ""
    assert s.ok("tasks", "start", cid) == "1\n"
    assert s.ok("tasks", "ls", "-q") == ""  # a foreground start deletes the task after
    cid2 = s.new_id("bgstart")
    s.ok("containers", "create", "--name", cid2, "busybox", "sleep", "300")
    s.ok("tasks", "start", "-d", cid2)
    s.wait_status(cid2, "RUNNING")
    s.ok("tasks", "kill", "-a", "-s", "9", cid2)
    res = s.dock("tasks", "wait", cid2)
    assert (res.returncode, res.stdout) == (137, "")
    s.ok("tasks", "rm", cid2)
    s.ok("containers", "rm", cid, cid2)


def test_signals_are_forwarded(session: Session) -> None:
    s = session
    cid = s.new_id("sig")
    # PID 1 of a PID namespace ignores signals it has no handler for: trap it.
    proc = s.popen("run", "--rm", "--name", cid, "busybox", "sh", "-c", "trap 'echo got TERM; exit 7' TERM; "
                   "echo trapped; while true; do sleep 0.1; done", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        s.wait_status(cid, "RUNNING")
        assert proc.stdout is not None and proc.stdout.readline() == "trapped\n"  # the trap is set now
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (proc.returncode, out) == (7, "got TERM\n"), err
    assert s.ok("containers", "ls", "-q") == ""


# -- resources, network, mounts, stdin, terminal ---------------------------------------------------


def test_resource_limits_reach_the_cgroup(session: Session) -> None:
    s = session
    cid = s.new_id("limits")
    s.ok("run", "-d", "--memory", "64m", "--pids-limit", "20", "--cpus", "0.5", "--name", cid, "busybox",
         "sleep", "300")
    assert (s.cgroup("memory", cid) / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert (s.cgroup("pids", cid) / "pids.max").read_text().strip() == "20"
    assert (s.cgroup("cpu", cid) / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert (s.cgroup("cpu", cid) / "cpu.cfs_period_us").read_text().strip() == "100000"
    s.ok("tasks", "kill", "-s", "KILL", cid)


def test_network_modes(session: Session) -> None:
    s = session
    out = s.ok("run", "--rm", "--net", "none", "--name", s.new_id("netnone"), "busybox", "cat", "/proc/net/dev")
    ifaces = [line.split(":")[0].strip() for line in out.splitlines()[2:]]
    assert ifaces == ["lo"]
    out = s.ok("run", "--rm", "--net", "host", "--name", s.new_id("nethost"), "busybox", "cat", "/proc/net/dev")
    host = [line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]]
    assert sorted(line.split(":")[0].strip() for line in out.splitlines()[2:]) == sorted(host)


def test_bind_mounts(session: Session) -> None:
    s = session
    with tempfile.TemporaryDirectory(prefix="dy-bind-") as host:
        (Path(host) / "in.txt").write_text("from the host\n")
        out = s.ok("run", "--rm", "--mount", f"type=bind,src={host},dst=/data,options=rbind:rw", "--name",
                   s.new_id("rw"), "busybox", "sh", "-c", "cat /data/in.txt; echo written > /data/out.txt")
        assert out == "from the host\n" and (Path(host) / "out.txt").read_text() == "written\n"
        res = s.dock("run", "--rm", "--mount", f"type=bind,src={host},dst=/data,options=rbind:ro", "--name",
                     s.new_id("ro"), "busybox", "sh", "-c", "cat /data/in.txt; touch /data/nope")
        assert res.returncode != 0 and res.stdout == "from the host\n" and "Read-only" in res.stderr
        assert not (Path(host) / "nope").exists()


def test_piped_stdin(session: Session) -> None:
    s = session
    out = s.ok("run", "--rm", "-i", "--name", s.new_id("cat"), "busybox", "cat", input="data\nmore\n")
    assert out == "data\nmore\n"
    # Instant EOF (the case where ctr hangs): CloseIO is sent once our copy is done.
    res = subprocess.run(["sh", "-c", f"printf data | {shlex.quote(sys.executable)} -m dock.cli run --rm -i "
                          f"--name {s.new_id('printf')} busybox cat"], capture_output=True, text=True, env=s.env(),
                         cwd=REPO, timeout=60)
    assert (res.returncode, res.stdout) == (0, "data"), res.stderr
    # Without -i the process reads an empty stdin.
    assert s.ok("run", "--rm", "--name", s.new_id("noin"), "busybox", "cat", input="ignored\n") == ""


def test_run_with_a_terminal(session: Session) -> None:
    s = session
    command = (f"{shlex.quote(sys.executable)} -m dock.cli run --rm -t -i --name {s.new_id('tty')} busybox "
               "sh -c 'tty; echo $TERM; echo done'")
    res = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL, env=s.env(), cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "/dev/pts/0" in res.stdout and "xterm" in res.stdout and "done" in res.stdout


# -- events -------------------------------------------------------------------------------------------


def test_events_of_a_run(session: Session) -> None:
    s = session
    cid = s.new_id("ev")
    with EventLog([sys.executable, "-m", "dock.cli", "--format", "json", "events"], s.d.address,
                  env=s.env()) as watcher:
        s.ok("run", "--rm", "--name", cid, "busybox", "true")

        def deleted(lines: list[str]) -> bool:
            return any('"/containers/delete"' in line and cid in line for line in lines)

        lines = watcher.until(deleted, what=f"the delete of {cid}")
    events = [json.loads(line) for line in lines]
    mine = [e for e in events if e["topic"].startswith("/tasks/") and e["event"].get("container_id") == cid]
    assert [e["topic"] for e in mine] == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    assert mine[0]["type"] == "containerd.events.TaskCreate" and mine[0]["namespace"] == "default"
    assert mine[0]["event"]["pid"] > 0 and mine[2]["event"].get("exit_status", 0) == 0  # proto3: 0 is unset
    assert {"/containers/create", "/containers/delete"} <= {e["topic"] for e in events}


# -- the SDK itself, in-process ------------------------------------------------------------------------


async def test_sdk_run_tasks_and_events(session: Session) -> None:
    s = session
    cid, bg = s.new_id("sdk"), s.new_id("sdkbg")
    async with s.d.client() as c:
        seen: list[Envelope] = []

        async with c.events.subscribed('topic~="/tasks/"') as events:  # live: nothing of the run can be missed
            async def watch() -> None:
                async for env in events:
                    seen.append(env)
                    if env.topic == "/tasks/delete" and env.event.get("container_id") == cid:
                        return

            watcher = asyncio.create_task(watch())
            with tempfile.TemporaryFile() as out, open(os.devnull) as devnull:
                req = RunRequest("busybox", cid, SpecOptions(args=["sh", "-c", "echo hi; exit 5"]), rm=True)
                code = await runner.run(c, req, in_fd=devnull.fileno(), out_fd=out.fileno(), err_fd=out.fileno())
                out.seek(0)
                assert (code, out.read()) == (5, b"hi\n")
            await asyncio.wait_for(watcher, 10)
        mine = [e for e in seen if e.event.get("container_id") == cid]
        assert [e.topic for e in mine] == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
        assert mine[2].type_url == "containerd.events.TaskExit" and mine[2].event["exit_status"] == 5
        assert mine[2].decoded and mine[2].timestamp is not None

        async with contextlib.AsyncExitStack() as undo:
            await runner.create_container(c, RunRequest("busybox", bg, SpecOptions(args=["sleep", "300"])), undo)
            undo.pop_all()
        await c.tasks.create(bg, await runner.container_mounts(c, bg))
        assert (await c.tasks.get(bg)).status == Status.CREATED
        pid = await c.tasks.start(bg)
        assert [p.pid for p in await c.tasks.pids(bg)] == [pid]
        [m] = await c.tasks.metrics(bg)
        assert m.id == bg and m.cgroup_version == 1 and m.data["pids"]["current"] == 1
        await c.tasks.pause(bg)
        assert (await c.tasks.get(bg)).status == Status.PAUSED
        await c.tasks.resume(bg)
        assert [t.id for t in await c.tasks.list("status==running")] == [bg]
        await c.tasks.kill(bg, signal.SIGKILL)
        status = await c.tasks.wait(bg)
        assert status.code == 137 and status.exited_at is not None
        assert (await c.tasks.delete(bg)).code == 137
        with pytest.raises(NotFound):
            await c.tasks.get(bg)
        await runner.remove_container(c, bg)
        with pytest.raises(NotFound):
            await c.containers.get(bg)


async def test_a_signal_before_the_task_starts_undoes_the_run(session: Session, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """SIGTERM while the task is being created: the run stops, and what it made is removed."""
    s = session
    cid = s.new_id("intr")
    async with s.d.client() as c:
        real_create = c.tasks.create

        async def slow_create(*args: object, **kwargs: object) -> int:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the run: it cancels what it is doing
            await asyncio.sleep(30)
            return await real_create(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(c.tasks, "create", slow_create)
        fifo_dirs = set(Path(tempfile.gettempdir()).glob("dock-fifo-*"))
        code = await asyncio.wait_for(runner.run(c, RunRequest("busybox", cid, SpecOptions(args=["true"]))), 20)
        assert code == 128 + signal.SIGTERM
        assert await c.containers.list() == []
        assert set(Path(tempfile.gettempdir()).glob("dock-fifo-*")) <= fifo_dirs  # orphans may be swept
    assert cid not in s.snapshots()
