"""The seccomp program cache against the real kernel, as root.

A program loaded from the cache must be the very filter libseccomp's seccomp_load installs (read
back from the kernel with PTRACE_SECCOMP_GET_FILTER), and containers made by `create_container`
in a runtime dir the shim has marked must take the cache on their second start, rebuild a corrupt
entry and key a different profile apart; `dock run` on dockyardd fills and then uses its tasks
dir's cache. Each test cleans up its processes and temp dir.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dockyard_common import linux as L
from dockyard_common.seccomp import default_profile
from dockyard_common.shimlaunch import ZYGOTE_DIR
from shim.init import ContainerProcess, StdioFds, create_container, default_spec, parse_spec
from shim.init import seccomp as S
from shim.init import seccomp_cache as C
from tests.ctr import ctr, ok
from tests.daemon import REPO, DaemonProcess
from tests.images import busybox_oci_archive
from tests.integration.test_container_init import containers_dir, read_all, wait_pid
from tests.rootfs import make_busybox_rootfs

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

PTRACE_ATTACH = 16
PTRACE_SECCOMP_GET_FILTER = 0x420C
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]

MKDIR_REFUSED: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}
DOCKER_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
               "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
               "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def _kernel_filter(load: str, program: S.Program, entry: C.Compiled) -> bytes:
    """The filter a child installed (by libseccomp or from `entry`), as the kernel holds it."""
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(hold_w)
            L.prctl(L.PR_SET_NO_NEW_PRIVS, 1)  # the no_new_privs path: no CAP_SYS_ADMIN involved
            if load == "libseccomp":
                f = S._build(program)
                f.load()
            else:
                L.seccomp_load_program(entry.program, entry.flags)
            os.write(ready_w, b"1")
            os.read(hold_r, 1)  # until the parent has read the filter (and kills us)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.close(hold_r)
    try:
        assert os.read(ready_r, 1) == b"1", f"{load}: the child could not load the filter"
        assert _libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0, os.strerror(ctypes.get_errno())
        assert os.WIFSTOPPED(os.waitpid(pid, 0)[1])
        count = _libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, None, None)
        assert count > 0, os.strerror(ctypes.get_errno())
        buf = ctypes.create_string_buffer(count * L.SOCK_FILTER_SIZE)
        assert _libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, None, buf) == count
        return buf.raw
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        os.close(hold_w)


@pytest.mark.parametrize("profile", ["docker-default", "mkdir-refused"])
def test_a_cached_program_is_the_filter_libseccomp_installs(profile: str, tmp_path: Path) -> None:
    raw = default_profile().resolve(DOCKER_CAPS) if profile == "docker-default" else MKDIR_REFUSED
    program = S.compile_profile(raw)
    f = S._build(program)
    try:
        built = C.Compiled(*f.export())
    finally:
        f.release()
    d = str(tmp_path / "cache")
    C.write(d, C.key(program), built)
    entry = C.read(d, C.key(program))
    assert entry == built
    from_libseccomp = _kernel_filter("libseccomp", program, entry)
    assert _kernel_filter("cache", program, entry) == from_libseccomp == entry.program


# ----- containers in a runtime dir -------------------------------------------------------------------


@dataclass
class Runtime:
    """A runtime state dir laid out as a daemon's (<dir>/<namespace>/<id> bundles, .dockyard-shim)."""

    dir: Path
    procs: list[ContainerProcess] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    @property
    def cache(self) -> Path:
        return self.dir / ZYGOTE_DIR / C.SUBDIR

    def run(self, cid: str, seccomp: dict[str, Any]) -> str:
        bundle = self.dir / "default" / cid
        make_busybox_rootfs(bundle / "rootfs")
        spec = default_spec()
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["sh", "-c", "mkdir /tmp/a 2>&1 || echo refused; echo ok"]
        spec["root"]["readonly"] = False
        spec["linux"]["seccomp"] = seccomp
        (bundle / "config.json").write_text(json.dumps(spec))
        # A fresh shim: nothing prepared in memory, only what the cache holds.
        S._prepared.clear()
        out_r, out_w = os.pipe()
        self.fds.append(out_r)
        try:
            proc: ContainerProcess = create_container(bundle, parse_spec((bundle / "config.json").read_text()), [],
                                                      StdioFds(None, out_w, out_w))
        finally:
            os.close(out_w)
        self.procs.append(proc)
        proc.start()
        out = read_all(out_r)
        assert wait_pid(proc.pid) == 0, out
        return out


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    with containers_dir("dockyard-seccomp-cache-") as made:
        (made.dir / ZYGOTE_DIR).mkdir(mode=0o700)
        try:
            yield Runtime(made.dir, made.procs, made.fds)
        finally:
            S._prepared.clear()


def _entries(r: Runtime) -> list[str]:
    return sorted(p.name for p in r.cache.iterdir())


def test_the_second_container_loads_the_cached_program(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "dockyard.shim.seccomp")
    key = C.key(S.compile_profile(MKDIR_REFUSED))
    assert "refused" in runtime.run("first", MKDIR_REFUSED)
    assert "built by libseccomp" in caplog.text
    assert _entries(runtime) == [key + C.SUFFIX]
    stored = (runtime.cache / (key + C.SUFFIX)).read_bytes()

    caplog.clear()
    out = runtime.run("second", MKDIR_REFUSED)
    assert out.splitlines()[-2:] == ["refused", "ok"] and "Operation not permitted" in out
    assert f"program {key[:12]} from the cache" in caplog.text
    assert "built by libseccomp" not in caplog.text
    assert (runtime.cache / (key + C.SUFFIX)).read_bytes() == stored


def test_a_corrupt_entry_is_rebuilt(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "dockyard.shim.seccomp")
    key = C.key(S.compile_profile(MKDIR_REFUSED))
    runtime.run("first", MKDIR_REFUSED)
    path = runtime.cache / (key + C.SUFFIX)
    good = path.read_bytes()
    # Turn the filter's ERRNO(1) for mkdir into ALLOW: loaded, it would let mkdir through.
    errno1 = (0x00050001).to_bytes(4, "little")
    assert good.count(errno1) >= 1
    path.write_bytes(good.replace(errno1, (0x7FFF0000).to_bytes(4, "little")))

    caplog.clear()
    out = runtime.run("second", MKDIR_REFUSED)
    assert "refused" in out, out
    assert "corrupt or mismatching" in caplog.text and "built by libseccomp" in caplog.text
    assert path.read_bytes() == good


def test_a_different_profile_gets_its_own_entry(runtime: Runtime) -> None:
    other = {**MKDIR_REFUSED, "syscalls": [{**MKDIR_REFUSED["syscalls"][0], "errnoRet": 13}]}
    runtime.run("first", MKDIR_REFUSED)
    assert "Permission denied" in runtime.run("second", other)
    keys = {C.key(S.compile_profile(MKDIR_REFUSED)), C.key(S.compile_profile(other))}
    assert len(keys) == 2
    assert _entries(runtime) == sorted(k + C.SUFFIX for k in keys)


def test_no_cache_outside_a_runtime_dir(runtime: Runtime) -> None:
    shutil.rmtree(runtime.dir / ZYGOTE_DIR)  # a bundle laid out as no daemon's
    assert "refused" in runtime.run("first", MKDIR_REFUSED)
    assert sorted(p.name for p in runtime.dir.iterdir()) == ["default"]


# ----- through the daemon ------------------------------------------------------------------------------


def test_dock_run_fills_and_then_uses_the_daemons_cache(daemon: DaemonProcess, tmp_path: Path) -> None:
    image = "docker.io/library/busybox:latest"
    archive = tmp_path / "busybox.tar"
    archive.write_bytes(busybox_oci_archive(image))
    ok(ctr(daemon, "images", "import", str(archive)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": daemon.address, "TMPDIR": str(tmp_path)}
    cache = daemon.state / "tasks" / ZYGOTE_DIR / C.SUBDIR

    def run(cid: str) -> str:
        res = subprocess.run([sys.executable, "-m", "dock.cli", "run", "--rm", "--name", cid, image, "grep",
                              "^Seccomp:", "/proc/self/status"],
                             capture_output=True, text=True, env=env, timeout=90, cwd=REPO)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res
        return res.stdout

    assert run("first").split() == ["Seccomp:", "2"]
    entries = list(cache.iterdir())
    assert len(entries) == 1 and entries[0].suffix == C.SUFFIX
    inode = entries[0].stat().st_ino
    assert run("second").split() == ["Seccomp:", "2"]
    # Read, not rewritten: an entry is only ever replaced by renaming a new file over it.
    assert [(p, p.stat().st_ino) for p in cache.iterdir()] == [(entries[0], inode)]
