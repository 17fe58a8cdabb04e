"""The everyday workflow end to end, with nothing but Dockyard and a real registry: build an
image from a Dockerfile on one daemon, push it, pull it on another daemon, run it there as a
service published on a port, reach it, and read what it logged.

Everything runs inside one network namespace this module pins (the registry on its loopback,
both daemons in it; the second daemon's default bridge and port rules stay there too), so the
host's links and firewall are never touched. The base image is busybox from local material.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon import REPO, DaemonProcess, in_netns, pinned_netns, remove_base, start_daemon, stopping_new_zygotes
from tests.images import build_image, oci_archive, tar_tree
from tests.registry import REGISTRY_BINARY, RegistryProcess, start_registry
from tests.rootfs import make_busybox_rootfs
from tests.waiting import wait_until

pytestmark = pytest.mark.root

NEEDED = [Path("/usr/lib/cni") / p for p in ("bridge", "host-local", "portmap", "firewall", "loopback")]
if os.geteuid() != 0 or not all(p.exists() for p in NEEDED) or not Path(REGISTRY_BINARY).exists() \
        or not Path("/bin/busybox").exists() or not shutil.which("iptables-save"):
    pytest.skip("needs root, containernetworking-plugins, iptables, docker-registry and busybox-static "
                "(scripts/install)", allow_module_level=True)

PAGE = "served by a dockyard-built image\n"


@dataclass
class Daemon:
    d: DaemonProcess
    tmp: Path

    def dock(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": self.d.address, "TMPDIR": str(self.tmp)}
        env.pop("DOCK_DEBUG", None)
        return subprocess.run([sys.executable, "-m", "dock.cli", *args], capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=REPO)

    def ok(self, *args: str) -> str:
        res = self.dock(*args)
        assert res.returncode == 0, f"dock {shlex.join(args)}: rc {res.returncode}\n{res.stdout}\n{res.stderr}"
        assert "Traceback" not in res.stderr, res.stderr
        return res.stdout


@dataclass
class World:
    netns: Path
    registry: RegistryProcess
    builder: Daemon  # builds and pushes; no default network (its RUN steps need none here)
    runner: Daemon  # pulls and runs, on its default bridge


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with pinned_netns() as ns, start_registry(netns=ns) as registry, \
            tempfile.TemporaryDirectory(prefix="dy-seed-") as tmp, stopping_new_zygotes():
        daemons: list[DaemonProcess] = []
        try:
            daemons.append(start_daemon(netns=ns, extra=["--default-network", "none"]))
            builder = Daemon(daemons[-1], Path(tmp))
            daemons.append(start_daemon(netns=ns))
            runner = Daemon(daemons[-1], Path(tmp))
            base = Path(tmp) / "busybox.tar"
            root = make_busybox_rootfs(Path(tmp) / "rootfs", all_applets=True)
            base.write_bytes(oci_archive([build_image("docker.io/library/busybox:latest", [tar_tree(root)])]))
            builder.ok("images", "import", "--unpack", str(base))
            yield World(ns, registry, builder, runner)
        finally:
            for d in daemons:
                remove_base(d)


def _context(tmp: Path) -> Path:
    ctx = Path(tempfile.mkdtemp(prefix="ctx-", dir=tmp))
    (ctx / "index.html").write_text(PAGE)
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY index.html /www/index.html\n"
        "RUN echo \"$(wc -c < /www/index.html) bytes\" > /www/size.txt\n"
        "EXPOSE 80\n"
        # -vv: the URL of each request on stderr, which `dock logs` must show
        'CMD ["httpd", "-f", "-vv", "-p", "80", "-h", "/www"]\n')
    return ctx


def test_build_push_pull_run_serve_and_log(world: World) -> None:
    ref = f"{world.registry.host}/seed/web:{secrets.token_hex(3)}"
    b, r = world.builder, world.runner

    out = b.ok("build", "-t", ref, "--progress", "plain", str(_context(b.tmp)))
    assert f"Successfully tagged {ref}" in out, out
    built = json.loads(b.ok("--format", "json", "images", "ls"))
    [image] = [i for i in built if i["name"] == ref]

    b.ok("push", "--plain-http", ref)
    r.ok("pull", "--plain-http", ref)
    [pulled] = [i for i in json.loads(r.ok("--format", "json", "images", "ls")) if i["name"] == ref]
    assert pulled["target"]["digest"] == image["target"]["digest"]  # the same manifest, byte for byte

    name = f"web-{secrets.token_hex(3)}"
    try:
        assert r.ok("run", "-d", "--name", name, "-p", "18080:80", ref).strip() == name

        def page(path: str) -> str | None:
            res = in_netns(world.netns, "/bin/busybox", "wget", "-q", "-O", "-", f"http://127.0.0.1:18080/{path}",
                           check=False, timeout=20)
            return res.stdout if res.returncode == 0 else None

        assert wait_until(lambda: page("index.html"), timeout=60, what="the service to answer") == PAGE
        assert page("size.txt") == f"{len(PAGE)} bytes\n"  # what the RUN step made at build time
        # httpd -v logged the requests it served; the daemon kept them

        def logged() -> str | None:
            res = r.dock("logs", name)  # httpd logs on stderr, and `dock logs` keeps the streams apart
            assert res.returncode == 0 and res.stdout == "", res
            return res.stderr if "url:/index.html" in res.stderr and "url:/size.txt" in res.stderr else None

        wait_until(logged, timeout=30, what="both requests in the container's log")
    finally:
        r.dock("rm", "-f", name)
    assert name not in r.ok("containers", "ls", "-q").split()
