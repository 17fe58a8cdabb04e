"""Hostile images, as a registry or a tarball could hand them to Dockyard: run defaults of odd
shapes, VOLUME and WORKDIR paths that climb or point out through symlinks, /etc/passwd that is
a FIFO, a device or huge. Each case is busybox plus an optional extra layer and config fields.

    archive = hostile_archive(["vol-dotdot", "user-fifo"])   # one OCI archive, one image a case
    Path("h.tar").write_bytes(archive)                          # `ctr images import h.tar`

`python3 -m tests.image_fuzz` imports every case into a fresh daemon, runs `dock run --rm IMAGE
true` on each and prints one line per case (its exit code and dock's stderr): the exploration
tests/integration/test_image_inputs.py turns into assertions.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.images import Image, build_image, oci_archive, tar_tree
from tests.rootfs import make_busybox_rootfs
from tests.unit.archive_fixtures import TarEntry, build_tar, char_device, directory, fifo, file, symlink

PREFIX = "docker.io/library/hostile-"
HOST_TARGET = "/etc"  # where the outward symlinks point; must stay untouched


@dataclass(frozen=True)
class Case:
    config: dict[str, Any] = field(default_factory=dict)
    layer: tuple[TarEntry, ...] = ()
    words: str | None = ""  # what dock's one-line error must say; "" = the run succeeds; None = either

    def image(self, name: str, base: bytes) -> Image:
        layers = [base, build_tar(self.layer)] if self.layer else [base]
        return build_image(PREFIX + name + ":1", layers, self.config)


def _etc_passwd(*entries: TarEntry) -> tuple[TarEntry, ...]:
    return (directory("etc"), *entries)


CASES: dict[str, Case] = {
    # VOLUME paths
    "vol-relative": Case({"Volumes": {"data": {}}}, words="absolute"),
    "vol-dotdot": Case({"Volumes": {"/../../../../tmp/dy-hostile-vol": {}}}),  # cleaned: /tmp/dy-hostile-vol inside
    "vol-root": Case({"Volumes": {"/": {}}}, words="cannot be a volume"),
    "vol-proc": Case({"Volumes": {"/proc": {}}}, words="cannot be a volume"),
    "vol-proc-sub": Case({"Volumes": {"/proc/sys": {}}}, words="cannot be a volume"),
    "vol-sys": Case({"Volumes": {"/sys/fs": {}}}),
    "vol-nul": Case({"Volumes": {"/da\x00ta": {}}}, words="NUL"),
    "vol-dup": Case({"Volumes": {"/data": {}, "/data/": {}, "/./data": {}}}),
    "vol-link-abs": Case({"Volumes": {"/data": {}}}, (symlink("data", "/etc"),)),
    "vol-link-rel": Case({"Volumes": {"/data": {}}}, (symlink("data", "../../../../../etc"),), words="escapes"),
    "vol-link-sub": Case({"Volumes": {"/data/x": {}}}, (symlink("data", "../../../../../tmp"),), words="escapes"),
    "vol-many": Case({"Volumes": {f"/v{i}": {} for i in range(10_000)}}, words="volumes"),
    # WORKDIR
    "wd-relative": Case({"WorkingDir": "work"}, words="absolute"),
    "wd-dotdot": Case({"WorkingDir": "/../../../../tmp/dy-hostile-wd"}, words=None),
    "wd-link": Case({"WorkingDir": "/w/sub"}, (symlink("w", "../../../../../tmp/dy-hostile-wd2"),), words=None),
    "wd-nul": Case({"WorkingDir": "/a\x00b"}, words="NUL"),
    # USER
    "user-3parts": Case({"User": "0:0:0"}, words="invalid USER"),
    "user-negative": Case({"User": "-1"}, words="user '-1'"),
    "user-huge": Case({"User": "99999999999"}, words="user '99999999999'"),
    "user-unknown": Case({"User": "nosuchuser"}, words="nosuchuser"),
    "user-passwd-abs": Case({"User": "root"}, _etc_passwd(symlink("etc/passwd", "/etc/passwd")),
                            words="symbolic links"),
    "user-passwd-rel": Case({"User": "root"}, _etc_passwd(symlink("etc/passwd", "../../../../../etc/passwd")),
                            words="symbolic links"),
    "user-passwd-fifo": Case({"User": "someone"}, _etc_passwd(fifo("etc/passwd")), words="not a regular file"),
    "user-passwd-dev": Case({"User": "someone"}, _etc_passwd(char_device("etc/passwd", 1, 5)),
                            words="not a regular file"),
    "user-group-fifo": Case({"User": "0:grp"}, _etc_passwd(fifo("etc/group")), words="not a regular file"),
    "user-passwd-proc": Case({"User": "root"}, _etc_passwd(symlink("etc/passwd", "/proc/1/root/etc/passwd")),
                             words="the image has no /etc/passwd"),
    "user-passwd-big": Case({"User": "someone"}, _etc_passwd(file("etc/passwd", b"x" * (17 << 20))),
                            words="more than the limit"),
    "user-passwd-dir": Case({"User": "someone"}, _etc_passwd(directory("etc/passwd")), words="someone"),
    # Env, Entrypoint, Cmd
    "env-no-equals": Case({"Env": ["JUSTANAME", "PATH=/bin"]}),
    "env-nul": Case({"Env": ["A=b\x00c"]}, words="NUL"),
    "env-huge": Case({"Env": ["A=" + "x" * 200_000]}, words="too long"),
    "env-empty-name": Case({"Env": ["=value"]}),
    "cmd-string": Case({"Cmd": "true"}, words="must be an array of strings"),
    "cmd-numbers": Case({"Cmd": [1, 2]}, words="must be an array of strings"),
    "cmd-nested": Case({"Cmd": [["true"]]}, words="must be an array of strings"),
    "cmd-null": Case({"Cmd": None, "Entrypoint": None}),
    "cmd-nul": Case({"Cmd": ["tr\x00ue"]}, words="NUL"),
    "entrypoint-object": Case({"Entrypoint": {"a": 1}}, words="must be an array of strings"),
    # the rest of the run config
    "ports-odd": Case({"ExposedPorts": {"99999/tcp": {}, "abc/udp": {}, "80/sctp": {}}}),
    "stopsignal-foo": Case({"StopSignal": "SIGFOO"}),
    "stopsignal-999": Case({"StopSignal": "999"}),
    "health-negative": Case({"Healthcheck": {"Test": ["CMD", "true"], "Interval": -5, "Timeout": -1,
                                             "Retries": -3, "StartPeriod": -9}}),
    "health-types": Case({"Healthcheck": {"Test": "true", "Interval": "soon"}}),
    "labels-huge": Case({"Labels": {"big": "x" * 1_000_000}}, words="maximum size"),
    "labels-types": Case({"Labels": {"n": 1}}, words="must be an object of strings"),
    "shell-string": Case({"Shell": "/bin/sh"}, words="must be an array of strings"),
}

# Refused by ctr's own (Go) unpack at import: JSON types Go's structs do not take.
IMPORT_REFUSED = frozenset({"cmd-string", "cmd-numbers", "cmd-nested", "entrypoint-object", "labels-types"})


def base_layer() -> bytes:
    with tempfile.TemporaryDirectory(prefix="dy-hostile-") as tmp:
        return tar_tree(make_busybox_rootfs(Path(tmp) / "rootfs"))


def hostile_images(names: Iterable[str], base: bytes | None = None) -> list[Image]:
    base = base if base is not None else base_layer()
    return [CASES[n].image(n, base) for n in names]


def hostile_archive(names: Iterable[str]) -> bytes:
    return oci_archive(hostile_images(names))


def image_name(case: str) -> str:
    return PREFIX + case + ":1"


def main(argv: list[str]) -> int:
    from tests.compat.conftest import ctr
    from tests.compat.runtimes import daemon_with_runtime, remove_everything
    from tests.dockcli import DockCLI

    names = argv or list(CASES)
    with tempfile.TemporaryDirectory(prefix="dy-hostile-") as tmp, daemon_with_runtime("dockyard") as d:
        cli = DockCLI(d.address)
        for n in names:
            archive = Path(tmp) / f"{n}.tar"
            archive.write_bytes(hostile_archive([n]))
            res = ctr(d, "images", "import", str(archive))
            if res.returncode != 0:
                print(f"{n:20} import rc={res.returncode} {res.stderr.strip()[:300]!r}")
                continue
            try:
                run = cli.dock("run", "--rm", image_name(n), "true", timeout=60)
                print(f"{n:20} run rc={run.returncode} {run.stderr.strip()[:300]!r}")
            except subprocess.TimeoutExpired:
                print(f"{n:20} run HUNG")
            remove_everything(d)
        print("traceback in daemon log" if "Traceback" in d.log() else "daemon log clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
