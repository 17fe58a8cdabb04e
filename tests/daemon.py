"""A real dockyardd in private temp dirs, for integration and compat tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf import any_pb2

from dock.client import Client
from dockyard_api.containerd.services.events.v1 import events_pb2, events_pb2_grpc
from dockyard_common.eventstream import SUBSCRIBED_HEADER
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parent.parent


@dataclass
class DaemonProcess:
    base: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_start: int = 0  # where this process' lines begin in a log shared across restarts

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def address(self) -> str:
        return str(self.state / "dockyard.sock")

    def client(self, namespace: str = "default") -> Client:
        return Client(self.address, namespace)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_startup_collection(self, timeout: float = 20) -> None:
        """Return once this process' start-up garbage collection (0.1 s after start) has run.

        Writes made without a lease, as ctr makes them, are rightly collected by it (as by
        containerd's): a test that makes them, or counts what its own collections remove,
        waits for it first."""
        def collected() -> bool:
            assert self.proc.poll() is None, f"dockyardd exited with {self.proc.returncode}"
            return "garbage collection: removed" in self.log()[self.log_start:]

        wait_until(collected, timeout, what="the start-up garbage collection")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def dockyardd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "supervisor", *args]


def start_daemon(base: Path | None = None, extra: list[str] | None = None,
                 wait: bool = True, netns: Path | None = None, private_ipc: bool = False,
                 wrap: list[str] | None = None) -> DaemonProcess:
    """Start dockyardd on private dirs (short paths: unix socket paths max out at 107 bytes).

    Unless `extra` names a --config, the daemon reads an empty <base>/config.toml: its config
    directory (the networks' net.d/, certs.d/) is then <base>, never the machine's /etc/dockyard,
    which the daemons of other tests would share. With `netns` (a pinned namespace file, see
    `pinned_netns`) the daemon runs inside it (`nsenter --net=`, not `ip netns exec`, which
    remounts /sys and hides the cgroup mounts). With `private_ipc` it runs in an IPC namespace of
    its own (/proc/<pid>/ns/ipc), which is then the "host" IPC of its host-IPC containers.
    `wrap` goes before the command: a program that execs it (`prlimit --nofile=64:4096`)."""
    made_base = base is None
    base = base or Path(tempfile.mkdtemp(prefix="dy-"))
    log_path = base / "dockyardd.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    args = ["--root", str(base / "root"), "--state", str(base / "state"), "--log-level", "debug",
            *(extra or [])]
    if netns is None and "--default-network" not in args:
        # On the host's own network namespace a test daemon has no default network (as dockerd
        # -b none): `dock run` without --net must not make bridges and firewall chains on the host.
        # Networking tests run their daemon in a namespace they make (netns=...).
        args += ["--default-network", "none"]
    if "--config" not in args:
        config = base / "config.toml"
        if not config.exists():
            config.write_text("")
        args += ["--config", str(config)]
    command = dockyardd_command(*args)
    if netns is not None:
        command = ["nsenter", f"--net={netns}", *command]
    if private_ipc:
        command = ["unshare", "--ipc", *command]  # exec'd in turn: the pid stays the daemon's
    command = [*(wrap or []), *command]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=REPO,
                                start_new_session=True)
    d = DaemonProcess(base, proc, log_path, log_start)
    if wait:
        try:
            wait_ready(d)  # its error carries the daemon's log
        except BaseException:
            if made_base:  # a daemon that never served leaves nothing behind either
                remove_base(d)
            raise
    return d


@contextlib.contextmanager
def pinned_netns(prefix: str = "dy-netns-") -> Iterator[Path]:
    """A fresh network namespace pinned on a file in a private temp dir, `lo` up inside, standing
    in for the host: start a daemon in it (`start_daemon(netns=...)`) and run clients in it with
    `nsenter --net=<path>` (see `in_netns`). Removed (unmounted, unlinked) at the end; the
    namespace itself ends with its last process."""
    from supervisor.network import netns as netns_files

    base = Path(tempfile.mkdtemp(prefix=prefix))
    path = netns_files.create(base / "net")
    try:
        in_netns(path, "ip", "link", "set", "lo", "up")
        yield path
    finally:
        netns_files.remove(path)
        shutil.rmtree(base, ignore_errors=True)


def in_netns(path: Path, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command inside the namespace pinned at `path` (output captured as text)."""
    return subprocess.run(["nsenter", f"--net={path}", *argv], capture_output=True, text=True, check=check,
                          timeout=timeout)


def wait_ready(d: DaemonProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.proc.poll() is not None:
            raise RuntimeError(f"dockyardd exited with {d.proc.returncode}:\n{d.log()}")
        if os.path.exists(d.address) and "serving on" in d.log()[d.log_start:]:
            return
        time.sleep(0.05)
    d.stop(signal.SIGKILL)
    raise RuntimeError(f"dockyardd did not become ready in {timeout}s:\n{d.log()}")


def processes_mentioning(text: str) -> set[int]:
    """PIDs (other than ours) whose command line contains `text`."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: read while the process is being torn down
        return False
    return data[data.rindex(b")") + 2 :].split()[0] not in (b"Z", b"X")


def processes_in(directory: Path) -> set[int]:
    """PIDs whose working directory is at or below `directory`: shims run in their bundle, and
    ours, forked by the zygote, carry no command line of their own to find them by."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/cwd").startswith(str(directory)):
                    found.add(int(entry))
    return found


def shim_pids(d: DaemonProcess) -> set[int]:
    """Shims of this daemon started by command (both kinds carry `-address <its socket>`)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if d.address.encode() in args and any(b"shim" in a for a in args[:3]):
                found.add(int(entry))
    return found


def shims_in_bundles(d: DaemonProcess) -> set[int]:
    """All shims of this daemon: started by command, or forked by the zygote; both keep their
    bundle as cwd, even after it is gone ("(deleted)")."""
    return shim_pids(d) | processes_in(d.state / "tasks")


def remove_empty_cgroups(below: str = "dockyard") -> None:
    """rmdir the empty cgroups at and below /sys/fs/cgroup/*/<below>, leaves first (only
    ever under our own parent; a cgroup with processes in it refuses, and stays)."""
    assert below == "dockyard" or below.startswith("dockyard/"), below
    for top in Path("/sys/fs/cgroup").glob(f"*/{below}"):
        # os.walk, not rglob: cgroups may come and go while we look (another run's containers)
        found = [Path(root, d) for root, subdirs, _ in os.walk(top) for d in subdirs]
        dirs = sorted(found, key=lambda p: len(p.parts), reverse=True)
        for d in [*dirs, top]:
            for _ in range(20):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)  # a killed process may still be leaving


def reap_leftovers(base: Path) -> None:
    """After a failed test: shims of this daemon (found by their -address under `base`) are
    killed by PID, the containers in their cgroups too, and mounts under `base` undone."""
    for pid in processes_mentioning(str(base)) | processes_in(base):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for config in (base / "state" / "tasks").glob("*/*/config.json"):
        with contextlib.suppress(OSError, ValueError):
            cgroup = json.loads(config.read_text()).get("linux", {}).get("cgroupsPath", "").strip("/")
            for procs in Path("/sys/fs/cgroup").glob(f"*/dockyard/{cgroup}/cgroup.procs"):
                for member in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(member), signal.SIGKILL)
            remove_empty_cgroups(f"dockyard/{cgroup}")
        subprocess.run(["runc", "--root", f"/run/containerd/runc/{config.parent.parent.name}", "delete", "-f",
                        config.parent.name], capture_output=True, check=False)
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(base) + "/")), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


def remove_base(d: DaemonProcess) -> None:
    d.stop()
    reap_leftovers(d.base)
    shutil.rmtree(d.base, ignore_errors=True)


def our_zygotes() -> list[int]:
    """PIDs of shim zygotes running this checkout's code: another checkout's are not ours to stop."""
    pids = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if (entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == "dockyard-zygote"
                    and str(REPO).encode() in Path(f"/proc/{entry}/cmdline").read_bytes()):
                pids.append(int(entry))
    return pids


@contextlib.contextmanager
def stopping_new_zygotes() -> Iterator[None]:
    """Our shims' zygote outlives a test by design (it exits when idle): the ones started in the
    block are stopped at its end, once their shims are gone, so a test run leaves no process."""
    before = set(our_zygotes())
    yield
    for pid in set(our_zygotes()) - before:
        deadline = time.monotonic() + 5
        with contextlib.suppress(OSError):
            while Path(f"/proc/{pid}/task/{pid}/children").read_text().split() and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(pid, signal.SIGTERM)


@contextlib.contextmanager
def daemon_with_busybox(prefix: str, image: str, *, all_applets: bool = False
                        ) -> Iterator[tuple[DaemonProcess, Path, bytes]]:
    """A daemon of its own with `image`, a busybox image made from local material, imported and
    unpacked by dock: (the daemon, a temp dir, the layer's tar). After the block its log must hold
    no traceback; the daemon, its root and its new zygotes are removed."""
    from tests.dockcli import DockCLI
    from tests.images import build_image, oci_archive, tar_tree
    from tests.rootfs import make_busybox_rootfs

    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, stopping_new_zygotes():
        d = start_daemon()
        try:
            layer = tar_tree(make_busybox_rootfs(Path(tmp) / "rootfs", all_applets=all_applets))
            archive = Path(tmp) / "busybox.tar"
            archive.write_bytes(oci_archive([build_image(image, [layer])]))
            DockCLI(d.address).ok("images", "import", "--unpack", str(archive))
            yield d, Path(tmp), layer
            assert "Traceback" not in d.log()[d.log_start:], d.log()[-5000:]
        finally:
            remove_base(d)


async def subscribed(channel: grpc.aio.Channel | events_pb2_grpc.EventsStub, *filters: str,
                     namespace: str | None = None, timeout: float = 10
                     ) -> grpc.aio.UnaryStreamCall[events_pb2.SubscribeRequest, events_pb2.Envelope]:
    """A raw Events/Subscribe call, returned once the daemon has it in place (it says so in its
    headers, SUBSCRIBED_HEADER): nothing published afterwards can be missed. With the SDK, use
    `client.events.subscribed(...)`. (A real `ctr events` cannot tell us: see tests/eventlog.py.)
    `channel` may be an Events stub already made on it."""
    stub = channel if isinstance(channel, events_pb2_grpc.EventsStub) else events_pb2_grpc.EventsStub(channel)
    metadata = [("containerd-namespace", namespace)] if namespace else None
    call = stub.Subscribe(events_pb2.SubscribeRequest(filters=list(filters)), metadata=metadata)
    try:
        headers = await asyncio.wait_for(call.initial_metadata(), timeout)
        assert SUBSCRIBED_HEADER in (headers or ()), \
            f"no subscription: {await call.code()} {await call.details()}"
    except BaseException:
        call.cancel()
        raise
    return call


async def publish_marker(channel: grpc.aio.Channel, namespace: str = "default") -> str:
    """Publish an event of a topic of its own; returns the topic. A subscription delivers in
    order, so once it yields the marker it has yielded every event published before it (a test
    that checks that something was NOT published waits for its marker, not for time to pass)."""
    topic = f"/dockyard-test/marker-{secrets.token_hex(4)}"
    request = events_pb2.PublishRequest(topic=topic, event=any_pb2.Any(type_url="dockyard.test.Marker"))
    await events_pb2_grpc.EventsStub(channel).Publish(request, metadata=[("containerd-namespace", namespace)])
    return topic


@contextlib.contextmanager
def traceback_free_daemon() -> Iterator[DaemonProcess]:
    """A daemon on private dirs for a module of hostile calls: at the end its log must hold no
    traceback (every fault answered as a status); stopped and removed either way."""
    d = start_daemon()
    try:
        yield d
        assert "Traceback" not in d.log()[d.log_start:], d.log()[-5000:]
    finally:
        d.stop()
        remove_base(d)
