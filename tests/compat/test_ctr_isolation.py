"""Isolation of containers started the way a user does, with the real `ctr` against dockyardd:
namespaces, masked and read-only paths, descriptors, cgroup limits (memory with its OOM event,
cpu quota), a user namespace, and bad input that must fail clearly and leave nothing behind.

Parametrized over the shim serving io.containerd.runc.v2 (ours, and containerd's Go shim with
runc as the reference), with test_ctr_run's session: after each test no shim or container
process, mount or cgroup of it is left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

import pytest

from tests.compat.conftest import CTR, ctr
from tests.compat.runtimes import IMAGE
from tests.compat.test_ctr_run import Session, mounts_under, session, stop_our_zygotes, task_pid
from tests.ctr import exec_output
from tests.daemon import shims_in_bundles
from tests.eventlog import EventLog
from tests.images import build_image, oci_archive, tar_tree
from tests.rootfs import make_busybox_rootfs
from tests.unit.archive_fixtures import build_tar, symlink

__all__ = ["session", "stop_our_zygotes"]  # fixtures shared with test_ctr_run

pytestmark = [pytest.mark.compat, pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

HOST_UID = 100000
ESCAPING_IMAGE = "docker.io/library/escape:latest"


def run(s: Session, name: str, *args: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """`ctr run --rm [flags] IMAGE <new id> args...`."""
    return ctr(s.d, "run", "--rm", *flags, IMAGE, s.new_id(name), *args)


def start(s: Session, name: str, *args: str, flags: tuple[str, ...] = ()) -> tuple[str, int]:
    """A detached task (`ctr run -d`): its id and host PID, watched for cleanup."""
    cid = s.new_id(name)
    res = ctr(s.d, "run", "-d", *flags, IMAGE, cid, *args)
    assert res.returncode == 0, res.stderr
    s.watch(cid)
    return cid, task_pid(s.d, cid)


def exec_in(s: Session, cid: str, *args: str) -> str:
    res = exec_output(partial(ctr, s.d), cid, *args)
    assert res.returncode == 0, res.stderr
    return res.stdout


def cgroup_of(pid: int, controller: str) -> Path:
    """The task's cgroup directory in a v1 hierarchy, from the host's view of the process."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            assert path.startswith("/dockyard/"), f"cgroup {path} outside our parent"
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    raise AssertionError(f"pid {pid} has no {controller} cgroup")


def nothing_left(s: Session, base_shims: set[int]) -> None:
    """Failed runs leave no task, container, shim, runc state, bundle, mount or cgroup."""
    assert ctr(s.d, "tasks", "ls", "-q").stdout == ""
    assert ctr(s.d, "containers", "ls", "-q").stdout == ""
    deadline = time.monotonic() + 10
    while (left := shims_in_bundles(s.d) - base_shims) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"shims left: {left}"
    assert mounts_under(s.d.state) == []
    assert list((s.d.state / "tasks").glob("[!.]*/*")) == []  # no bundle, even hidden (.dockyard-shim: zygote)
    for cid in s.ids:
        assert not list(Path("/sys/fs/cgroup").glob(f"*/dockyard/default/{cid}")), f"cgroup of {cid} left"
        assert not Path("/run/containerd/runc/default", cid).exists(), f"runc state of {cid} left"


# -- namespaces and paths ----------------------------------------------------------------------------


def test_namespaces_seen_from_inside(session: Session) -> None:
    s = session
    script = ("echo $$; for n in pid mnt uts ipc net; do readlink /proc/self/ns/$n; done; echo ---; "
              "cat /proc/self/mountinfo; echo ---; cat /proc/net/dev; echo ---; ls /sys/class/net")
    res = run(s, "ns", "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    pid1, mountinfo, netdev, sysnet = res.stdout.split("---\n")
    lines = pid1.split()
    assert lines[0] == "1"  # the shell is PID 1 of its own PID namespace
    host = {os.readlink(f"/proc/self/ns/{n}") for n in ("pid", "mnt", "uts", "ipc", "net")}
    assert not set(lines[1:]) & host and len(lines[1:]) == 5  # none of the host's namespaces
    # Its own mount table: rooted at the snapshot, none of the host's mount points.
    rows = [line.split() for line in mountinfo.splitlines()]
    assert rows[0][4] == "/" and rows[0][rows[0].index("-") + 1] == "overlay"
    targets = {r[4] for r in rows}
    spec_mounts = {"/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run"}
    assert spec_mounts <= targets  # and the rest are masked or read-only paths:
    assert all(t in spec_mounts or t.startswith(("/proc/", "/sys/")) for t in targets), targets
    # A new network namespace has only the loopback device.
    assert [line.split(":")[0].strip() for line in netdev.splitlines()[2:]] == ["lo"]
    assert sysnet.split() == ["lo"]


def test_hostname_and_mounts_made_inside_stay_inside(session: Session) -> None:
    """ctr sets no hostname, so the container starts with the host's name, in a UTS namespace of
    its own: renaming it there (CAP_SYS_ADMIN: --privileged) leaves the host's alone; and a mount
    made inside does not propagate to the host (not even onto the bundle's rootfs)."""
    s = session
    before = os.uname().nodename
    script = "hostname; hostname inside-box; hostname; mkdir -p /mnt/in; mount -t tmpfs inside /mnt/in; sleep 300"
    cid, pid = start(s, "uts", "sh", "-c", script, flags=("--privileged",))
    deadline = time.monotonic() + 10
    while " /mnt/in " not in Path(f"/proc/{pid}/mountinfo").read_text():
        assert time.monotonic() < deadline, "the container did not mount"
        time.sleep(0.05)
    assert os.uname().nodename == before
    assert exec_in(s, cid, "hostname").strip() == "inside-box"
    host = Path("/proc/self/mountinfo").read_text()
    assert "/mnt/in " not in host and " inside " not in host
    ctr(s.d, "tasks", "kill", "-s", "SIGKILL", cid)


def test_masked_and_readonly_paths(session: Session) -> None:
    s = session
    script = ("wc -c < /proc/keys; wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; ls -A /proc/acpi | wc -l; "
              "echo ---; grep -E ' /proc/(sys|bus|fs|irq|sysrq-trigger) ' /proc/self/mountinfo; echo ---; "
              "echo x 2>&1 > /proc/sys/kernel/domainname || echo refused; touch /proc/sys/newfile 2>&1 || echo refused")
    res = run(s, "masked", "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    masked, ro, writes = res.stdout.split("---\n")
    assert masked.split() == ["0", "0", "0", "0"]  # /dev/null or an empty read-only tmpfs over them
    # not empty on the host: the masks are what empty them
    assert Path("/proc/timer_list").read_bytes() and list(Path("/sys/firmware").iterdir())
    ro_rows = {line.split()[4]: line.split()[5] for line in ro.splitlines()}
    assert {"/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"} <= set(ro_rows), ro
    assert all(opts.split(",")[0] == "ro" for opts in ro_rows.values()), ro
    assert writes.count("refused") == 2 and "Read-only file system" in writes + res.stderr
    assert Path("/proc/sys/kernel/domainname").read_text().strip() != "x"


def test_no_host_descriptor_leaks_in(session: Session) -> None:
    s = session
    res = run(s, "fds", "ls", "/proc/self/fd")
    assert (res.returncode, res.stdout.split()) == (0, ["0", "1", "2", "3"]), res.stderr  # 3: ls's own
    cid, _ = start(s, "fdbg", "sleep", "300")
    assert exec_in(s, cid, "ls", "/proc/1/fd").split() == ["0", "1", "2"]  # the init's
    assert exec_in(s, cid, "ls", "/proc/self/fd").split() == ["0", "1", "2", "3"]  # an exec's
    ctr(s.d, "tasks", "kill", "-s", "SIGKILL", cid)


# -- cgroup limits -----------------------------------------------------------------------------------


def test_memory_limit_kills_and_publishes_oom(session: Session) -> None:
    """The OOM kill of a child (the shell lives on) and of the init, each with its /tasks/oom
    before its /tasks/exit. The workload fills its limit only once the test has seen the task's
    /tasks/start: containerd's shim watches for OOM from its Start (ours from Create), and a v1
    cgroup's eventfd reports no OOM from before it was registered."""
    s = session
    gate = Path(tempfile.mkdtemp(prefix="oom-gate-"))
    flags = ("--memory-limit", str(32 << 20), "--mount", f"type=bind,src={gate},dst=/gate,options=rbind:ro")
    wait = "until [ -e /gate/go ]; do sleep 0.01; done"
    # tail of /dev/zero keeps everything it reads (no newline ever comes): only the OOM killer stops it.
    cases = (("oom", f"{wait}; tail /dev/zero; echo tail-ended-$?", 0, "tail-ended-137\n"),  # the shell lives on
             ("oominit", f"{wait}; exec tail /dev/zero", 137, ""))  # the container's init itself, SIGKILLed
    try:
        with EventLog(["ctr", "--address", s.d.address, "events"], s.d.address) as events:
            for name, script, code, out in cases:
                cid = s.new_id(name)
                assert CTR is not None
                proc = subprocess.Popen([CTR, "--address", s.d.address, "--namespace", "default", "run", "--rm",
                                         *flags, IMAGE, cid, "sh", "-c", script],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                try:
                    events.task_topics(f'"container_id":"{cid}"', until="/tasks/start")
                    (gate / "go").touch()
                    stdout, stderr = proc.communicate(timeout=60)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.communicate()
                (gate / "go").unlink()
                assert (proc.returncode, stdout) == (code, out), stderr
                topics = events.task_topics(f'"container_id":"{cid}"', until="/tasks/delete")
                assert "/tasks/oom" in topics and topics.index("/tasks/oom") < topics.index("/tasks/exit"), events.seen
    finally:
        shutil.rmtree(gate, ignore_errors=True)


def test_cpu_quota_bounds_usage(session: Session) -> None:
    s = session
    cid, pid = start(s, "cpu", "sh", "-c", "while :; do :; done", flags=("--cpus", "0.2"))
    cpu, acct = cgroup_of(pid, "cpu"), cgroup_of(pid, "cpuacct")
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "20000"
    assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    used0, t0 = int((acct / "cpuacct.usage").read_text()), time.monotonic()
    time.sleep(2)
    used1, t1 = int((acct / "cpuacct.usage").read_text()), time.monotonic()
    share = (used1 - used0) / 1e9 / (t1 - t0)
    # A busy loop takes a whole CPU when it may; the quota holds it near 0.2 (loose: others load the host).
    assert 0.02 < share < 0.35, share
    assert int(re.search(r"nr_throttled (\d+)", (cpu / "cpu.stat").read_text())[1]) > 0  # type: ignore[index]
    ctr(s.d, "tasks", "kill", "-s", "SIGKILL", cid)


# -- a user namespace --------------------------------------------------------------------------------


def test_user_namespace_maps_root_to_an_unprivileged_host_uid(session: Session) -> None:
    s = session
    idmap = f"0:{HOST_UID}:65536"
    # The remapped root must be able to reach the bundle's rootfs (containerd makes its state dirs
    # 0711 for this); our test daemon lives in a private mkdtemp dir, 0700: refused, and clearly.
    assert s.d.base.stat().st_mode & 0o777 == 0o700
    res = run(s, "userns0700", "true", flags=("--uidmap", idmap, "--gidmap", idmap))
    assert res.returncode != 0 and f"cannot reach its bundle: {s.d.base} is mode 0700" in res.stderr, res.stderr
    os.chmod(s.d.base, 0o711)
    cid, pid = start(s, "userns", "sleep", "300", flags=("--uidmap", idmap, "--gidmap", idmap))
    assert exec_in(s, cid, "id", "-u").strip() == "0"
    assert exec_in(s, cid, "cat", "/proc/self/uid_map").split() == ["0", str(HOST_UID), "65536"]
    status = Path(f"/proc/{pid}/status").read_text()
    assert re.search(rf"^Uid:\s+{HOST_UID}\s+{HOST_UID}\s+{HOST_UID}\s+{HOST_UID}$", status, re.M), status
    assert re.search(rf"^Gid:\s+{HOST_UID}\s+{HOST_UID}\s+{HOST_UID}\s+{HOST_UID}$", status, re.M), status
    # ctr shifted the image's files (a remapped snapshot): they belong to the container's root
    assert exec_in(s, cid, "stat", "-c", "%u:%g", "/bin/busybox").strip() == "0:0"
    exec_in(s, cid, "touch", "/tmp/made-inside")
    made = Path(f"/proc/{pid}/root/tmp/made-inside").stat()
    assert (made.st_uid, made.st_gid) == (HOST_UID, HOST_UID)
    ctr(s.d, "tasks", "kill", "-s", "SIGKILL", cid)


# -- bad input ---------------------------------------------------------------------------------------


def import_escaping_image(s: Session) -> None:
    """busybox plus `/escape`, a relative symlink climbing far above the container's root."""
    with tempfile.TemporaryDirectory(prefix="dy-img-") as tmp:
        base = tar_tree(make_busybox_rootfs(Path(tmp) / "rootfs"))
    link = build_tar([symlink("escape", "../" * 16 + "tmp")])
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(oci_archive([build_image(ESCAPING_IMAGE, [base, link])]))
        f.flush()
        res = ctr(s.d, "images", "import", f.name)
        assert res.returncode == 0, res.stderr


def test_bad_input_fails_clearly_and_leaves_nothing(session: Session) -> None:
    s = session
    shims = shims_in_bundles(s.d)
    res = run(s, "nobin", "/no/such/binary")
    assert res.returncode != 0 and "/no/such/binary" in res.stderr and "no such file" in res.stderr, res.stderr
    res = ctr(s.d, "run", "--rm", "docker.io/library/nothere:latest", s.new_id("noimg"), "true")
    assert res.returncode != 0 and "not found" in res.stderr, res.stderr
    # A snapshot removed under a created container: its task cannot get a root filesystem.
    cid = s.new_id("nosnap")
    assert ctr(s.d, "containers", "create", IMAGE, cid, "true").returncode == 0
    assert ctr(s.d, "snapshots", "rm", cid).returncode == 0
    res = ctr(s.d, "tasks", "start", cid)
    assert res.returncode != 0 and "not found" in res.stderr, res.stderr
    assert ctr(s.d, "containers", "rm", cid).returncode == 0
    # A mount whose target climbs out of the rootfs through a symlink in the image.
    import_escaping_image(s)
    victim = f"dy-escape-{secrets.token_hex(4)}"
    res = ctr(s.d, "run", "--rm", "--mount", f"type=tmpfs,src=tmpfs,dst=/escape/{victim},options=rw",
              ESCAPING_IMAGE, s.new_id("escape"), "grep", "-c", f" /tmp/{victim} ", "/proc/self/mountinfo")
    assert not Path("/tmp", victim).exists(), "a mount went to the host's /tmp"
    if s.runtime == "dockyard":  # refused, as the issue asks
        assert res.returncode != 0 and "escapes the container root" in res.stderr, res.stderr
    else:  # runc clamps ".." at the root (securejoin): the mount lands on the rootfs' /tmp
        assert (res.returncode, res.stdout) == (0, "1\n"), res.stderr
    # A spec with an unknown namespace type (ctr takes a whole spec with --config).
    with tempfile.TemporaryDirectory(prefix="dy-cfg-") as tmp:
        rootfs = make_busybox_rootfs(Path(tmp) / "rootfs")
        spec = json.loads(ctr(s.d, "oci", "spec").stdout)
        spec["root"] = {"path": str(rootfs)}
        spec["process"]["args"] = ["true"]
        spec["linux"]["namespaces"].append({"type": "bogus"})
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(spec))
        res = ctr(s.d, "run", "--rm", "--config", str(cfg), s.new_id("badns"))
        assert res.returncode != 0 and "bogus" in res.stderr, res.stderr
        assert mounts_under(Path(tmp)) == []
    nothing_left(s, shims)
