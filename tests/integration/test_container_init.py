"""The container init against the real kernel: busybox containers made by shim.init, as root.

Every test builds a busybox rootfs in its own temp dir, creates containers with
`create_container`, and cleans up: processes are killed and reaped by PID, nothing may stay
mounted under the temp dir, the temp dir is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dockyard_common import linux as L
from dockyard_common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.types import Mount
from shim.init import ContainerProcess, StdioFds, create_container, default_spec, exec_process, parse_spec
from shim.init.spec import parse_process
from tests.conformance.mounts import mounts_under, unmount
from tests.rootfs import make_busybox_rootfs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

HOST_UID = 100000


@dataclass
class Result:
    code: int
    out: str
    err: str


def read_all(fd: int, timeout: float = 20.0) -> str:
    """Read `fd` to EOF, failing the test rather than hanging."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no EOF within {timeout}s; read so far: {b''.join(chunks)!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                return b"".join(chunks).decode(errors="replace")
            chunks.append(data)


def wait_pid(pid: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    raise AssertionError(f"process {pid} still running after {timeout}s")


def children_of(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as f:
                # the command may contain spaces: PPid is the 2nd field after the last ")"
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.add(int(entry))
    return out


@dataclass
class Box:
    """A temp dir with a bundle (config.json + busybox rootfs) and what the test made in it."""

    dir: Path
    bundle: Path
    rootfs: Path
    procs: list[ContainerProcess] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def spec(self, *args: str, userns: bool = False) -> dict[str, Any]:
        s = default_spec()
        s["process"]["terminal"] = False
        s["process"]["args"] = list(args) or ["true"]
        if userns:
            s["linux"]["namespaces"].append({"type": "user"})
            s["linux"]["uidMappings"] = [{"containerID": 0, "hostID": HOST_UID, "size": 65536}]
            s["linux"]["gidMappings"] = [{"containerID": 0, "hostID": HOST_UID, "size": 65536}]
        return s

    def pipe(self) -> tuple[int, int]:
        r, w = os.pipe()
        self.fds += [r, w]
        return r, w

    def close(self, fd: int) -> None:
        if fd in self.fds:
            self.fds.remove(fd)
            os.close(fd)

    def create(self, spec: dict[str, Any], rootfs_mounts: Sequence[Mount] = (), *, extra: tuple[int, ...] = (),
               stdin: int | None = None, hook: Callable[[int], None] | None = None,
               bundle: Path | None = None) -> tuple[ContainerProcess, int, int]:
        """Create (not start) a container; returns it and the read ends of its stdout/stderr."""
        out_r, out_w = self.pipe()
        err_r, err_w = self.pipe()
        b = bundle or self.bundle
        (b / "config.json").write_text(json.dumps(spec))
        try:
            proc = create_container(b, parse_spec((b / "config.json").read_text()), list(rootfs_mounts),
                                    StdioFds(stdin, out_w, err_w, extra), hook)
        finally:
            self.close(out_w)
            self.close(err_w)
        self.procs.append(proc)
        return proc, out_r, err_r

    def run(self, spec: dict[str, Any], rootfs_mounts: Sequence[Mount] = (), **kw: Any) -> Result:
        proc, out_r, err_r = self.create(spec, rootfs_mounts, **kw)
        proc.start()
        out = read_all(out_r)
        err = read_all(err_r)
        return Result(wait_pid(proc.pid), out, err)

    def sh(self, script: str, *, userns: bool = False, **kw: Any) -> Result:
        return self.run(self.spec("sh", "-c", script, userns=userns), **kw)


@dataclass
class Made:
    """A test's temp dir and the containers and fds it made there (`containers_dir` undoes them)."""

    dir: Path
    procs: list[ContainerProcess] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)


@contextlib.contextmanager
def containers_dir(prefix: str) -> Iterator[Made]:
    """A temp dir to make containers in; at the end their processes are killed and reaped, the
    fds closed, mounts left below it undone (and the test failed for them), the dir removed and
    this process' child-subreaper flag as it was."""
    was_subreaper = L.is_child_subreaper()
    d = Path(tempfile.mkdtemp(prefix=prefix))
    # Container root in a user namespace is an unprivileged host uid: it must be able to reach
    # the rootfs (mkdtemp makes the directory 0700).
    os.chmod(d, 0o755)
    made = Made(d)
    try:
        yield made
    finally:
        for p in made.procs:
            p.close()
            p.kill()
            with contextlib.suppress(ChildProcessError):
                wait_pid(p.pid)
        for fd in made.fds:
            os.close(fd)
        left = mounts_under(str(d))
        if left:
            unmount(str(d))
        shutil.rmtree(d)
        if not was_subreaper:
            L.set_child_subreaper(False)
        assert not left, f"left mounted: {left}"


@pytest.fixture
def box() -> Iterator[Box]:
    with containers_dir("dockyard-init-") as made:
        bundle = made.dir / "bundle"
        bundle.mkdir()
        yield Box(made.dir, bundle, make_busybox_rootfs(bundle / "rootfs"), made.procs, made.fds)


# ----- the basics ------------------------------------------------------------------------------------


def test_echo_hello(box: Box) -> None:
    r = box.run(box.spec("echo", "hello"))
    assert (r.code, r.out, r.err) == (0, "hello\n", "")


def test_exit_code_passes_through(box: Box) -> None:
    assert box.sh("exit 3").code == 3


def test_killed_by_signal(box: Box) -> None:
    # From inside, PID 1 of a PID namespace ignores signals it has no handler for, even SIGKILL.
    assert box.sh("kill -9 $$; echo survived").out == "survived\n"
    proc, _, _ = box.create(box.spec("sleep", "30"))
    proc.start()
    proc.kill(signal.SIGKILL)
    assert wait_pid(proc.pid) == 128 + 9


def test_pid_one(box: Box) -> None:
    r = box.sh("echo $$; ps -o pid,comm")
    lines = r.out.splitlines()
    assert lines[0] == "1"
    assert [ln.split()[0] for ln in lines[2:]] == ["1", "2"][: len(lines) - 2]  # sh (1) and ps only


def test_own_hostname(box: Box) -> None:
    spec = box.spec("hostname")
    spec["hostname"] = "dockyard-box"
    assert box.run(spec).out == "dockyard-box\n"
    assert os.uname().nodename != "dockyard-box"


def test_created_is_not_started(box: Box) -> None:
    proc, out_r, _ = box.create(box.spec("echo", "started"))
    assert select.select([out_r], [], [], 0.3)[0] == []  # nothing ran yet
    with open(f"/proc/{proc.pid}/status") as f:
        assert "NSpid" in f.read()
    proc.start()
    assert read_all(out_r) == "started\n"
    assert wait_pid(proc.pid) == 0
    with pytest.raises(FailedPrecondition):
        proc.start()


def test_delete_before_start(box: Box) -> None:
    proc, out_r, _ = box.create(box.spec("echo", "never"))
    proc.close()  # the init sees EOF on its sync socket and exits without exec'ing
    assert wait_pid(proc.pid) == 0
    assert read_all(out_r) == ""


def test_stdin_and_preserved_fds(box: Box) -> None:
    in_r, in_w = box.pipe()
    x_r, x_w = box.pipe()
    os.write(in_w, b"from stdin\n")
    os.write(x_w, b"from fd 3\n")
    box.close(in_w)
    box.close(x_w)
    r = box.sh("cat; cat <&3", stdin=in_r, extra=(x_r,))
    assert r.out == "from stdin\nfrom fd 3\n"


def test_no_host_fd_leaks_into_the_container(box: Box) -> None:
    marker = os.open("/etc/hostname", os.O_RDONLY)  # no O_CLOEXEC: inherited by a plain fork+exec
    high = 77
    os.dup2(marker, high, inheritable=True)
    os.close(marker)
    try:
        r = box.sh("ls /proc/self/fd")
    finally:
        os.close(high)
    fds = sorted(int(x) for x in r.out.split())
    assert fds == [0, 1, 2, 3], r.out  # 3 is ls's own handle on /proc/self/fd


def test_env_cwd_and_home(box: Box) -> None:
    spec = box.spec("sh", "-c", "pwd; echo $FOO; echo $HOME")
    spec["process"]["cwd"] = "/tmp"
    spec["process"]["env"].append("FOO=bar")
    assert box.run(spec).out == "/tmp\nbar\n/root\n"


def test_rlimits(box: Box) -> None:
    spec = box.spec("sh", "-c", "ulimit -n; ulimit -Hn")
    spec["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]
    assert box.run(spec).out == "256\n512\n"


def test_user_and_groups(box: Box) -> None:
    spec = box.spec("sh", "-c", "id -u; id -g; id -G; umask")
    spec["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5], "umask": 0o27}
    r = box.run(spec)
    uid, gid, groups, umask = r.out.splitlines()
    assert (uid, gid, set(groups.split()), umask) == ("1000", "1000", {"1000", "5"}, "0027")


def test_sysctl(box: Box) -> None:
    spec = box.spec("cat", "/proc/sys/net/ipv4/ip_forward")
    spec["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    assert box.run(spec).out == "1\n"


# ----- isolation ---------------------------------------------------------------------------------------


def test_own_mount_table(box: Box) -> None:
    host_marker = box.dir / "host-only"
    host_marker.mkdir()
    L.mount("dockyard-host-marker", str(host_marker), "tmpfs", 0, None)
    try:
        proc, out_r, _ = box.create(box.spec("cat", "/proc/self/mountinfo"))
        # Created: the container's mounts exist, in its own mount namespace; none on the host.
        assert mounts_under(str(box.bundle)) == []
        proc.start()
        table = read_all(out_r)
    finally:
        L.umount2(str(host_marker))
    assert "dockyard-host-marker" not in table
    points = [line.split()[4] for line in table.splitlines()]
    assert not any(str(box.dir) in p for p in points)  # (field 4, the source's root, may name it)
    assert points[0] == "/" and "/proc" in points and "/dev/pts" in points


def test_only_loopback_in_a_new_network_namespace(box: Box) -> None:
    r = box.sh("ls /sys/class/net; cat /sys/class/net/lo/flags; ip -o link")
    lines = r.out.splitlines()
    assert lines[0] == "lo"
    assert int(lines[1], 16) & 0x1  # IFF_UP: brought up like runc does
    assert len(lines[2:]) == 1 and ": lo:" in lines[2]


def test_masked_paths(box: Box) -> None:
    (box.rootfs / "etc" / "secret").write_text("top secret\n")
    (box.rootfs / "secrets").mkdir()
    (box.rootfs / "secrets" / "key").write_text("key\n")
    spec = box.spec("sh", "-c", "cat /proc/timer_list /proc/keys /etc/secret | wc -c; ls -A /secrets /sys/firmware;"
                    " touch /secrets/x 2>/dev/null || echo ro")
    spec["linux"]["maskedPaths"] += ["/etc/secret", "/secrets", "/does/not/exist"]
    spec["root"]["readonly"] = False
    r = box.run(spec)
    lines = r.out.split()
    assert lines[0] == "0"  # files masked by /dev/null read empty
    assert "key" not in r.out
    assert r.out.rstrip().endswith("ro")  # a masked directory is an empty read-only tmpfs
    assert os.path.exists(box.rootfs / "secrets" / "key")


def test_readonly_paths_and_readonly_root(box: Box) -> None:
    (box.rootfs / "data").mkdir()
    spec = box.spec("sh", "-c", "for p in /proc/sys /data / /tmp/w; do touch $p/x 2>/dev/null && echo $p rw"
                    " || echo $p ro; done")
    spec["linux"]["readonlyPaths"].append("/data")
    spec["mounts"].append({"destination": "/tmp/w", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]})
    assert box.run(spec).out.splitlines() == ["/proc/sys ro", "/data ro", "/ ro", "/tmp/w rw"]
    assert not (box.rootfs / "x").exists()


def test_capabilities_as_specified(box: Box) -> None:
    spec = box.spec("sh", "-c", "grep -E '^Cap(Eff|Bnd|Prm|Inh|Amb)' /proc/self/status")
    caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE"]
    spec["process"]["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
    got = dict(line.split(":\t") for line in box.run(spec).out.splitlines())
    mask = f"{(1 << 5) | (1 << 10):016x}"
    assert got == {"CapInh": "0" * 16, "CapPrm": mask, "CapEff": mask, "CapBnd": mask, "CapAmb": "0" * 16}


def test_ambient_capabilities_for_a_non_root_user(box: Box) -> None:
    spec = box.spec("sh", "-c", "grep -E '^Cap(Eff|Amb)' /proc/self/status")
    spec["process"]["user"] = {"uid": 1000, "gid": 1000}
    caps = ["CAP_NET_BIND_SERVICE"]
    spec["process"]["capabilities"] = {k: caps for k in ("bounding", "effective", "permitted", "inheritable",
                                                         "ambient")}
    got = dict(line.split(":\t") for line in box.run(spec).out.splitlines())
    assert got == {"CapEff": f"{1 << 10:016x}", "CapAmb": f"{1 << 10:016x}"}


def test_no_new_privileges(box: Box) -> None:
    assert box.sh("grep NoNewPrivs /proc/self/status").out.split() == ["NoNewPrivs:", "1"]


# ----- user namespaces ---------------------------------------------------------------------------------


def test_user_namespace_maps_root_to_an_unprivileged_host_uid(box: Box) -> None:
    proc, out_r, _ = box.create(box.spec("sh", "-c", "id -u; echo $$; sleep 10", userns=True))
    proc.start()
    with os.fdopen(os.dup(out_r)) as f:
        assert f.readline() == "0\n"
        assert f.readline() == "1\n"
    with open(f"/proc/{proc.pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    assert status["Uid"].split() == [str(HOST_UID)] * 4
    assert status["Gid"].split() == [str(HOST_UID)] * 4
    with open(f"/proc/{proc.pid}/uid_map") as f:
        assert f.read().split() == ["0", str(HOST_UID), "65536"]
    proc.kill()
    assert wait_pid(proc.pid) == 128 + 9


def test_user_namespace_devices_and_mounts(box: Box) -> None:
    r = box.sh("echo x > /dev/null && head -c 4 /dev/zero | wc -c; grep -c ' /proc ' /proc/self/mountinfo;"
               " touch /tmp/f 2>/dev/null || echo ro", userns=True)
    assert r.out.split() == ["4", "1", "ro"], r.err


# ----- errors ------------------------------------------------------------------------------------------


def _assert_nothing_left(box: Box, before: set[int]) -> None:
    assert children_of(os.getpid()) == before
    assert mounts_under(str(box.dir)) == []


@pytest.mark.parametrize(("arg0", "message"), [
    ("/bin/nope", 'exec: "/bin/nope": no such file or directory'),
    ("nope", 'exec: "nope": executable file not found in $PATH'),
])
def test_missing_binary_fails_at_create(box: Box, arg0: str, message: str) -> None:
    before = children_of(os.getpid())
    with pytest.raises(NotFound) as info:
        box.create(box.spec(arg0))
    assert info.value.message == message
    _assert_nothing_left(box, before)


def test_missing_binary_in_a_user_namespace(box: Box) -> None:
    before = children_of(os.getpid())
    with pytest.raises(NotFound, match="nope"):
        box.create(box.spec("/bin/nope", userns=True), [Mount("bind", str(box.rootfs), "", ["rbind", "ro"])])
    _assert_nothing_left(box, before)


def test_not_executable(box: Box) -> None:
    (box.rootfs / "script").write_text("#!/bin/sh\n")
    with pytest.raises(FailedPrecondition, match="permission denied"):
        box.create(box.spec("/script"))


def test_missing_cwd_is_made_and_a_file_in_the_way_refused(box: Box) -> None:
    """As runc: a missing cwd is made in the rootfs (0755, container root's); a file is not a cwd."""
    spec = box.spec("true")
    spec["process"]["cwd"] = "/nowhere/deeper"
    assert box.run(spec).code == 0
    made = box.rootfs / "nowhere" / "deeper"
    assert made.is_dir() and (made.stat().st_mode & 0o777, made.stat().st_uid) == (0o755, 0)
    (box.rootfs / "afile").write_text("")
    spec["process"]["cwd"] = "/afile/sub"
    with pytest.raises(InvalidArgument, match="not a directory"):
        box.create(spec)


def test_mount_through_an_escaping_symlink_is_refused(box: Box) -> None:
    outside = box.dir / "outside"
    outside.mkdir()
    (box.rootfs / "escape").symlink_to("../../outside")
    before = children_of(os.getpid())
    spec = box.spec("true")
    spec["mounts"].append({"destination": "/escape/x", "type": "tmpfs", "source": "tmpfs"})
    with pytest.raises(InvalidArgument, match="escapes the container root"):
        box.create(spec)
    assert list(outside.iterdir()) == []
    _assert_nothing_left(box, before)


def test_absolute_symlinks_stay_inside_the_rootfs(box: Box) -> None:
    host_dir = box.dir / "hostdir"
    host_dir.mkdir()
    (box.rootfs / "abs").symlink_to(str(host_dir))  # read as the container would: <rootfs><host_dir>
    spec = box.spec("sh", "-c", "grep -c ' /abs ' /proc/self/mountinfo; touch /abs/inside; ls /abs")
    spec["root"]["readonly"] = False
    spec["mounts"].append({"destination": "/abs", "type": "tmpfs", "source": "tmpfs"})
    r = box.run(spec)
    assert r.out.split() == ["0", "inside"]  # mounted on the link's target inside the rootfs
    assert list(host_dir.iterdir()) == []
    assert (box.rootfs / str(host_dir).lstrip("/")).is_dir()


def test_bind_mount_source_missing(box: Box) -> None:
    spec = box.spec("true")
    spec["mounts"].append({"destination": "/x", "type": "bind", "source": "/no/such/dir", "options": ["rbind"]})
    with pytest.raises(NotFound, match="/no/such/dir"):
        box.create(spec)


def test_bind_mounts_ro_and_rw(box: Box) -> None:
    shared = box.dir / "shared"
    shared.mkdir()
    (shared / "f").write_text("hello\n")
    spec = box.spec("sh", "-c", "cat /ro/f; touch /ro/x 2>/dev/null || echo ro; touch /rw/y && echo rw")
    spec["mounts"] += [
        {"destination": "/ro", "type": "bind", "source": str(shared), "options": ["rbind", "ro"]},
        {"destination": "/rw", "type": "bind", "source": str(shared), "options": ["rbind", "rw", "rprivate"]},
    ]
    assert box.run(spec).out == "hello\nro\nrw\n"
    assert (shared / "y").exists() and not (shared / "x").exists()


# ----- rootfs mounts, cgroup hook, exec ----------------------------------------------------------------


def _overlay(box: Box) -> tuple[list[Mount], Path]:
    upper, work = box.dir / "upper", box.dir / "work"
    upper.mkdir()
    work.mkdir()
    lower = box.dir / "lower"
    box.rootfs.rename(lower)
    (box.bundle / "rootfs").mkdir()
    box.rootfs = box.bundle / "rootfs"
    opts = [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"]
    if os.path.exists("/sys/module/overlay/parameters/index"):
        opts.append("index=off")
    return [Mount("overlay", "overlay", "", opts)], upper


@pytest.mark.parametrize("userns", [False, True], ids=["plain", "userns"])
def test_rootfs_mounts_live_in_the_container(box: Box, userns: bool) -> None:
    mounts, upper = _overlay(box)
    # /tmp (1777): container root of a user namespace owns nothing else in this root-owned tree.
    spec = box.spec("sh", "-c", "echo written > /tmp/made-inside; cat /tmp/made-inside; sleep 5", userns=userns)
    spec["root"]["readonly"] = False
    proc, out_r, _ = box.create(spec, mounts)
    assert mounts_under(str(box.bundle)) == []  # mounted in the container's namespace only
    assert list((box.bundle / "rootfs").iterdir()) == []
    proc.start()
    with os.fdopen(os.dup(out_r)) as f:
        assert f.readline() == "written\n"
    assert (upper / "tmp" / "made-inside").read_text() == "written\n"
    proc.kill()
    wait_pid(proc.pid)


def test_cgroup_hook_runs_before_the_container_forks(box: Box) -> None:
    seen: list[tuple[int, int]] = []

    def hook(pid: int) -> None:
        with open(f"/proc/{pid}/status") as f:
            ppid = int(next(line for line in f if line.startswith("PPid:")).split()[1])
        seen.append((pid, ppid))

    proc, _, _ = box.create(box.spec("true"), hook=hook)
    assert len(seen) == 1 and seen[0][1] == os.getpid()  # our direct child, before it forked
    assert seen[0][0] != proc.pid  # stage 1 (its descendants inherit the cgroup), not the init
    proc.start()
    assert wait_pid(proc.pid) == 0


def test_failing_cgroup_hook_cleans_up(box: Box) -> None:
    before = children_of(os.getpid())

    def hook(pid: int) -> None:
        raise OSError(errno.EACCES, "cgroup says no")

    with pytest.raises(Exception, match="cgroup says no"):
        box.create(box.spec("true"), hook=hook)
    _assert_nothing_left(box, before)


@pytest.mark.parametrize("userns", [False, True], ids=["plain", "userns"])
def test_exec_into_a_running_container(box: Box, userns: bool) -> None:
    spec = box.spec("sleep", "30", userns=userns)
    spec["hostname"] = "exec-box"
    proc, _, _ = box.create(spec)
    proc.start()
    out_r, out_w = box.pipe()
    script = "echo $$; hostname; cat /proc/1/cmdline; echo; id -u; cat /proc/self/uid_map; ls /proc/self/fd"
    process = parse_process({"args": ["sh", "-c", script], "cwd": "/tmp", "env": ["PATH=/bin"],
                             "user": {"uid": 1000, "gid": 1000}})
    ex = exec_process(proc.pid, process, StdioFds(None, out_w, out_w))
    box.procs.append(ex)
    box.close(out_w)
    lines = read_all(out_r).splitlines()
    assert wait_pid(ex.pid) == 0
    assert lines[0] != "1" and lines[1:4] == ["exec-box", "sleep\x0030\x00", "1000"]
    uid_map = lines[4].split()
    assert uid_map == (["0", str(HOST_UID), "65536"] if userns else ["0", "0", "4294967295"])
    assert lines[5:] == ["0", "1", "2", "3"]  # no fd of the shim's


def test_exec_missing_binary(box: Box) -> None:
    proc, _, _ = box.create(box.spec("sleep", "30"))
    proc.start()
    before = children_of(os.getpid())
    with pytest.raises(NotFound, match="executable file not found"):
        exec_process(proc.pid, parse_process({"args": ["nope"], "cwd": "/"}), StdioFds())
    assert children_of(os.getpid()) == before


def test_exec_into_a_gone_container(box: Box) -> None:
    with pytest.raises(NotFound):
        exec_process(2**22 + 1, parse_process({"args": ["true"], "cwd": "/"}), StdioFds())


def test_terminal(box: Box) -> None:
    spec = box.spec("sh", "-c", "tty; stty size; echo hi")
    spec["process"]["terminal"] = True
    spec["process"]["consoleSize"] = {"height": 33, "width": 101}
    proc, _, _ = box.create(spec)
    assert proc.console is not None
    box.fds.append(proc.console)
    proc.start()
    out = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"hi" not in out:
        if select.select([proc.console], [], [], 1)[0]:
            try:
                out += os.read(proc.console, 4096)
            except OSError:  # EIO: the slave side closed
                break
    assert wait_pid(proc.pid) == 0
    lines = out.decode().split("\r\n")
    assert lines[0].startswith("/dev/pts/") and lines[1] == "33 101" and lines[2] == "hi"


@pytest.mark.parametrize("nnp", [True, False], ids=["no_new_privs", "privileged-load"])
def test_seccomp_profile_applies(box: Box, nnp: bool) -> None:
    spec = box.spec("sh", "-c", "mkdir /tmp/a 2>&1 || echo refused; echo ok > /tmp/b && cat /tmp/b")
    spec["root"]["readonly"] = False
    spec["process"]["noNewPrivileges"] = nnp
    spec["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    r = box.run(spec)
    assert r.out.splitlines()[-2:] == ["refused", "ok"], r
    assert "Operation not permitted" in r.out
    assert not (box.rootfs / "tmp" / "a").exists()


def test_join_a_namespace_by_path(box: Box) -> None:
    first, out1, _ = box.create(box.spec("sh", "-c", "readlink /proc/self/ns/net; sleep 30"))
    first.start()
    with os.fdopen(os.dup(out1)) as f:
        net1 = f.readline().strip()
    spec = box.spec("sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/uts")
    spec["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    spec["linux"]["namespaces"].append({"type": "network", "path": f"/proc/{first.pid}/ns/net"})
    net2, uts2 = box.run(spec).out.split()
    assert net2 == net1 and net1.startswith("net:[")
    assert uts2 != os.readlink("/proc/self/ns/uts")


def test_a_stuck_handshake_times_out_and_cleans_up(box: Box) -> None:
    before = children_of(os.getpid())
    (box.bundle / "config.json").write_text(json.dumps(box.spec("true")))
    spec = parse_spec((box.bundle / "config.json").read_text())
    with pytest.raises(DeadlineExceeded, match="not ready within"):
        create_container(box.bundle, spec, [], StdioFds(), lambda pid: time.sleep(0.3), timeout=0.2)
    _assert_nothing_left(box, before)
