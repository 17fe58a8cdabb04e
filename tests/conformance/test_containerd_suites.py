"""containerd's own Go conformance suites, run against a real dockyardd.

`tests/conformance/go/` is a small Go package of ours that imports containerd's
`content/testsuite` and `snapshots/testsuite` (Debian's golang-github-containerd-containerd-dev)
and runs them through containerd's gRPC proxies (`content/proxy`, `snapshots/proxy`) on the
daemon's socket: the client code ctr and containerd's own integration tests use. It is built
in GOPATH mode against /usr/share/gocode with Debian's golang-go, into a temporary GOPATH and
GOCACHE, without network. Each case runs one suite with `go test` and fails with go's output.

The content suite runs twice in a row on one daemon, on both gRPC servers: its content is the
same bytes every run, so whatever a run leaves behind (an ingest, a blob the collector kept)
shows up in the next one as a shared or resumed ingest.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.daemon import DaemonProcess, remove_base, start_daemon

from .mounts import mounts_under, unmount

pytestmark = pytest.mark.root

GO_SOURCES = Path(__file__).resolve().parent / "go"
GOCODE = Path("/usr/share/gocode")
PACKAGE = "dockyard/conformance"
GO_TIMEOUT = 600  # seconds for one `go test`, building included; a run takes well under a minute

# Subtests that pass in each suite of containerd 1.6 (Debian bookworm); fewer means some did not run.
CONTENT_TESTS = 12
SNAPSHOT_TESTS = 20
# The one subtest containerd's suite always skips ("rename test still fails on some kernels with
# overlay", snapshots/testsuite/issues.go); any other skip fails the case.
UPSTREAM_SKIPS = {"Rename"}


@dataclass
class GoWorkspace:
    """A GOPATH holding our package, with its own GOCACHE and TMPDIR."""

    base: Path

    @property
    def tmp(self) -> Path:
        return self.base / "tmp"

    def env(self, address: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.base),
            "GO111MODULE": "off",  # GOPATH mode: imports resolve in Debian's /usr/share/gocode
            "GOPATH": f"{self.base / 'gopath'}:{GOCODE}",
            "GOCACHE": str(self.base / "cache"),
            "GOFLAGS": "",
            "GOENV": "off",
            "GOPROXY": "off",  # never the network
            "CGO_ENABLED": "0",
            "TMPDIR": str(self.tmp),  # the suites' scratch dirs (and their mounts) stay in here
            "DOCKYARD_ADDRESS": address,
        }


@pytest.fixture(scope="module")
def workspace() -> Iterator[GoWorkspace]:
    go = shutil.which("go")
    assert go is not None, "go is missing: bash scripts/install installs golang-go"
    assert (GOCODE / "src/github.com/containerd/containerd/content/testsuite").is_dir(), \
        "containerd's Go sources are missing: bash scripts/install installs golang-github-containerd-containerd-dev"
    ws = GoWorkspace(Path(tempfile.mkdtemp(prefix="dy-go-")))
    try:
        package = ws.base / "gopath" / "src" / PACKAGE
        package.mkdir(parents=True)
        for source in GO_SOURCES.glob("*.go"):
            shutil.copy2(source, package / source.name)
        ws.tmp.mkdir()
        yield ws
    finally:
        for target in sorted(mounts_under(str(ws.base)), reverse=True):
            unmount(target)  # only after a suite failed half-way
        shutil.rmtree(ws.base, ignore_errors=True)


@pytest.fixture(scope="module")
def daemons() -> Iterator[Callable[[str], DaemonProcess]]:
    """One daemon per gRPC server, started on first use and shared by the cases of this module."""
    started: dict[str, DaemonProcess] = {}

    def get(server: str) -> DaemonProcess:
        if server not in started:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("DOCKYARD_GRPC_SERVER", server)
                started[server] = start_daemon()
        return started[server]

    try:
        yield get
    finally:
        codes = {server: d.stop() for server, d in started.items()}
        for d in started.values():
            remove_base(d)
        assert all(code == 0 for code in codes.values()), f"dockyardd exit codes on SIGTERM: {codes}"


def run_suite(ws: GoWorkspace, d: DaemonProcess, test: str, minimum: int) -> None:
    """`go test` one suite against `d`; every subtest must pass, none be skipped."""
    cmd = ["go", "test", "-count=1", "-v", f"-timeout={GO_TIMEOUT}s", "-run", f"^{test}$", PACKAGE]
    res = subprocess.run(cmd, env=ws.env(d.address), cwd=ws.base, capture_output=True, text=True,
                         timeout=GO_TIMEOUT + 60, check=False)
    output = res.stdout + res.stderr
    passed = re.findall(rf"^\s*--- PASS: {test}/(\S+)", output, re.MULTILINE)
    bad = [f"{verdict} {name}" for verdict, name in
           re.findall(rf"^\s*--- (FAIL|SKIP): {test}/(\S+)", output, re.MULTILINE)
           if verdict == "FAIL" or name not in UPSTREAM_SKIPS]
    if res.returncode != 0 or bad or len(passed) < minimum:
        log = d.log()
        pytest.fail(f"{' '.join(cmd)} exited {res.returncode}; {len(passed)} of at least {minimum} subtests "
                    f"passed; not passed: {bad}\n----- go test output -----\n{output[-30000:]}\n"
                    f"----- dockyardd log (tail) -----\n{log[-8000:]}", pytrace=False)


def leftovers(d: DaemonProcess) -> dict[str, object]:
    """What the daemon still holds: metadata rows and backend content (all should be empty)."""
    found: dict[str, object] = {}
    with contextlib.closing(sqlite3.connect(f"file:{d.root / 'metadata.db'}?mode=ro", uri=True)) as conn:
        for table in ("namespaces", "leases", "ingests", "content", "snapshots"):
            rows = conn.execute(f"SELECT * FROM {table}").fetchall()
            if rows:
                found[table] = rows
    for what in ("content/ingest", "content/blobs/sha256"):
        names = sorted(p.name for p in (d.root / what).glob("*")) if (d.root / what).is_dir() else []
        if names:
            found[what] = names
    return found


@pytest.mark.parametrize("server", ["dockyard", "grpcio"])
def test_content_suite(workspace: GoWorkspace, daemons: Callable[[str], DaemonProcess], server: str) -> None:
    d = daemons(server)
    for _ in range(2):  # the second run fails if the first one left state behind
        run_suite(workspace, d, "TestContentSuite", CONTENT_TESTS)
        assert leftovers(d) == {}


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
def test_snapshots_suite(workspace: GoWorkspace, daemons: Callable[[str], DaemonProcess],
                         snapshotter: str) -> None:
    d = daemons("dockyard")
    run_suite(workspace, d, f"TestSnapshots{snapshotter.capitalize()}", SNAPSHOT_TESTS)
    assert mounts_under(str(workspace.tmp)) == []
    assert leftovers(d) == {}
    assert sorted(os.listdir(d.root / "snapshots" / snapshotter / "snapshots")) == []
