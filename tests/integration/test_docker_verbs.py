"""Docker's verbs that `dock` gained as Docker users type them, against a real dockyardd: create,
save/load, import (a rootfs tarball made an image), rename, run -a, --version, system prune's
--filter. Each end to end, and bad input as one clear line, exit status 1, nothing left behind.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.daemon import REPO, DaemonProcess
from tests.dockcli import DockCLI

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")]

BUSYBOX = "docker.io/library/busybox:latest"


def dock_binary(cli: DockCLI, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """`dock` with bytes in and out (archives through stdin and stdout)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": cli.address}
    env.pop("DOCK_DEBUG", None)
    if cli.tmp is not None:
        env["TMPDIR"] = str(cli.tmp)
    return subprocess.run([sys.executable, "-m", "dock.cli", *args], input=stdin, capture_output=True, env=env,
                          timeout=90, cwd=REPO)


def state(d: DaemonProcess) -> dict[str, list[str]]:
    """What a failed command must not leave: containers, images, leases, ingests, snapshots, and
    blobs after a collection."""
    async def ask() -> dict[str, list[str]]:
        async with d.client() as c:
            await c.leases.collect_garbage()
            return {"containers": sorted(x.id for x in await c.containers.list()),
                    "images": sorted(i.name for i in await c.images.list()),
                    "leases": [lease.id for lease in await c.leases.list()],
                    "ingests": [s.ref for s in await c.content.list_statuses()],
                    "blobs": sorted(i.digest for i in await c.content.list()),
                    "snapshots": sorted([s.name async for s in c.snapshots.using("overlayfs").list()])}
    return asyncio.run(ask())


def ps_names(cli: DockCLI) -> dict[str, str]:
    """id -> NAMES of every container."""
    return {row["id"]: row["name"] for row in cli.json("ps", "-a")}


@pytest.fixture
def rootfs_tar(dock_cli: DockCLI, tmp_path: Path) -> Path:
    """busybox's root filesystem as one tar (what `docker export` writes, `docker import` reads)."""
    dock_cli.ok("create", "--name", "rootfs-src", "busybox", "true")
    out = tmp_path / "rootfs.tar"
    dock_cli.ok("export", "-o", str(out), "rootfs-src")
    dock_cli.ok("rm", "rootfs-src")
    return out


# -- create -------------------------------------------------------------------------------------


def test_create_makes_a_container_start_runs_it(dock_cli: DockCLI, tmp_path: Path) -> None:
    cidfile = tmp_path / "cid"
    out = dock_cli.ok("create", "--name", "made", "-e", "WHO=create", "--label", "k=v", "--cidfile", str(cidfile),
                      "busybox", "sh", "-c", "echo hello $WHO")
    assert out == "made\n"
    assert cidfile.read_text() == "made"
    [row] = [r for r in dock_cli.json("ps", "-a") if r["id"] == "made"]
    assert row["state"] == "created" and row["labels"]["k"] == "v"
    assert dock_cli.ok("start", "-a", "made") == "hello create\n"
    assert dock_cli.ok("wait", "made") == "0\n"
    generated = dock_cli.ok("create", "busybox", "true").strip()
    assert len(generated) == 64
    assert dock_cli.json("create", "--name", "as-json", "busybox", "true")["id"] == "as-json"


def test_create_bad_input_is_one_line_and_leaves_nothing(dock_cli: DockCLI, busybox_daemon: DaemonProcess,
                                                         tmp_path: Path) -> None:
    dock_cli.ok("create", "--name", "taken", "busybox", "true")
    before = state(busybox_daemon)
    dock_cli.fails("create", "--name", "taken", "busybox", "true", words='name "taken" is already in use')
    dock_cli.fails("create", "--pull", "never", "nosuchimage:1", words="not found")
    dock_cli.fails("create", "--name", "bad name", "busybox", words="invalid container name")
    dock_cli.fails("create", "-a", "stdweird", "busybox", words="valid streams are STDIN, STDOUT, STDERR")
    assert state(busybox_daemon) == before


# -- run -a, --version ----------------------------------------------------------------------------------


def test_run_attach_shows_only_the_streams_named(dock_cli: DockCLI) -> None:
    both = ["busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]
    plain = dock_cli.dock("run", "--rm", *both)
    assert (plain.returncode, plain.stdout, plain.stderr) == (3, "out\n", "err\n")
    only_out = dock_cli.dock("run", "--rm", "-a", "stdout", *both)
    assert (only_out.returncode, only_out.stdout, only_out.stderr) == (3, "out\n", "")
    only_err = dock_cli.dock("run", "--rm", "--attach", "STDERR", *both)
    assert (only_err.returncode, only_err.stdout, only_err.stderr) == (3, "", "err\n")
    named = dock_cli.dock("run", "--rm", "-a", "stdout", "-a", "stderr", *both)
    assert (named.returncode, named.stdout, named.stderr) == (3, "out\n", "err\n")
    # -i attaches stdin whatever -a says (Docker's rule)
    piped = dock_cli.dock("run", "--rm", "-i", "-a", "stdout", "busybox", "cat", input="in\n")
    assert (piped.returncode, piped.stdout) == (0, "in\n")
    # a terminal's output is stdout's
    tty = dock_cli.dock("run", "--rm", "-t", "-a", "stderr", "busybox", "echo", "on the tty")
    assert (tty.returncode, tty.stdout) == (0, "")
    assert ps_names(dock_cli) == {}


def test_run_attach_bad_input(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    before = state(busybox_daemon)
    dock_cli.fails("run", "-a", "stdall", "busybox", "true", words='invalid argument "stdall" for "-a, --attach"')
    dock_cli.fails("run", "-d", "-a", "stdout", "busybox", "true", words="conflicting options: -a and -d")
    assert state(busybox_daemon) == before


def test_version_flag_prints_the_client_version_without_a_daemon() -> None:
    from dockyard_common.version import REVISION, VERSION

    cli = DockCLI("/nonexistent/dockyard.sock")
    assert cli.ok("--version") == f"Dock version {VERSION}, build {REVISION}\n"
    assert cli.ok("-v") == cli.ok("--version")


# -- save, load ---------------------------------------------------------------------------------------


def test_save_and_load(dock_cli: DockCLI, busybox_daemon: DaemonProcess, tmp_path: Path) -> None:
    dock_cli.ok("tag", "busybox", "saved:1")
    archive = tmp_path / "saved.tar"
    assert dock_cli.ok("save", "-o", str(archive), "saved:1", "busybox") == ""
    streamed = dock_binary(dock_cli, "save", "saved:1")
    assert streamed.returncode == 0 and streamed.stdout[257:262] == b"ustar", streamed.stderr
    dock_cli.ok("rmi", "saved:1")
    assert sorted(dock_cli.ok("load", "-i", str(archive)).splitlines()) == ["Loaded image: busybox:latest",
                                                                            "Loaded image: saved:1"]
    dock_cli.ok("rmi", "saved:1")
    loaded = dock_binary(dock_cli, "load", stdin=streamed.stdout)
    assert (loaded.returncode, loaded.stdout) == (0, b"Loaded image: saved:1\n"), loaded.stderr
    assert dock_cli.ok("load", "-q", "-i", str(archive)).count("Loaded image:") == 2
    assert dock_cli.ok("run", "--rm", "saved:1", "echo", "ran") == "ran\n"
    assert dock_cli.json("load", "-i", str(archive))["images"]
    dock_cli.ok("rmi", "saved:1")


def test_save_and_load_bad_input(dock_cli: DockCLI, busybox_daemon: DaemonProcess, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not an archive\n" * 100)
    before = state(busybox_daemon)
    out = tmp_path / "out.tar"
    dock_cli.fails("save", "-o", str(out), "busybox", "nosuchimage", words='"nosuchimage": not found')
    assert not out.exists()
    dock_cli.fails("load", "-i", str(tmp_path / "missing.tar"), words="missing.tar: No such file or directory")
    dock_cli.fails("load", "-i", str(junk), words="invalid argument")
    empty = dock_binary(dock_cli, "load")
    assert empty.returncode == 1 and empty.stderr.decode().startswith("dock: "), empty
    assert state(busybox_daemon) == before


# -- import -------------------------------------------------------------------------------------------


def test_import_a_rootfs_tarball(dock_cli: DockCLI, busybox_daemon: DaemonProcess, rootfs_tar: Path,
                                 tmp_path: Path) -> None:
    before = state(busybox_daemon)
    changes = ["-c", 'CMD ["sh", "-c", "echo $GREETING from $(pwd) as $(id -u)"]', "-c", "ENV GREETING=hi",
               "-c", "WORKDIR /tmp", "-c", "USER 1000", "-c", "EXPOSE 8080/tcp", "-c", "LABEL team=blue",
               "-c", 'ENTRYPOINT ["/bin/env", "--"]']
    image_id = dock_cli.ok("import", *changes, "-m", "vendor drop", str(rootfs_tar), "imported:1").strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    assert dock_cli.ok("run", "--rm", "imported:1") == "hi from /tmp as 1000\n"
    info = dock_cli.json("images", "inspect", "imported:1")
    config = info["config"]
    assert info["config_descriptor"]["digest"] == image_id
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}} and config["config"]["Labels"] == {"team": "blue"}
    assert config["config"]["Entrypoint"] == ["/bin/env", "--"] and config["config"]["User"] == "1000"
    assert len(config["rootfs"]["diff_ids"]) == 1
    assert [h.get("comment") for h in config["history"]] == ["vendor drop"]

    # gzip from stdin, Docker's default comment; and without a name: an untagged image
    zipped = gzip.compress(rootfs_tar.read_bytes())
    res = dock_binary(dock_cli, "import", "-", "imported:2", stdin=zipped)
    assert res.returncode == 0, res.stderr
    assert [h.get("comment") for h in dock_cli.json("images", "inspect", "imported:2")["config"]["history"]] \
        == ["Imported from -"]
    assert dock_cli.ok("run", "--rm", "imported:2", "cat", "/etc/hostname").strip()
    untagged = dock_binary(dock_cli, "import", "-", stdin=zipped)
    assert untagged.returncode == 0, untagged.stderr
    dangling = [n for n in dock_cli.ok("images", "ls", "-q").split() if n.startswith("dockyard-dangling@")]
    assert len(dangling) == 1
    # nothing of the import's own stays: no container record, snapshot or lease
    after = state(busybox_daemon)
    assert after["containers"] == before["containers"] and after["leases"] == [] and after["ingests"] == []
    # the runs unpacked the new images (committed chains); no active snapshot of the import stays
    assert [s for s in after["snapshots"] if s not in before["snapshots"] and not s.startswith("sha256:")] == []
    for name in ("imported:1", "imported:2", dangling[0]):
        dock_cli.ok("rmi", name)


def test_import_from_a_url(dock_cli: DockCLI, rootfs_tar: Path) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(rootfs_tar.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{rootfs_tar.name}"
        dock_cli.ok("import", url, "fromurl:1")
        history = dock_cli.json("images", "inspect", "fromurl:1")["config"]["history"]
        assert [h.get("comment") for h in history] == [f"Imported from {url}"]
        dock_cli.fails("import", url + ".missing", "fromurl:2", words="HTTP 404")
    finally:
        server.shutdown()
        server.server_close()
    dock_cli.ok("rmi", "fromurl:1")


def test_import_bad_input_is_one_line_and_leaves_nothing(dock_cli: DockCLI, busybox_daemon: DaemonProcess,
                                                         rootfs_tar: Path, tmp_path: Path) -> None:
    random_bytes = tmp_path / "random.bin"
    random_bytes.write_bytes(os.urandom(200_000))
    text = tmp_path / "text.tar"
    text.write_text("hello\n" * 1000)
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    before = state(busybox_daemon)
    dock_cli.fails("import", str(tmp_path / "missing.tar"), "x:1", words="missing.tar: No such file or directory")
    dock_cli.fails("import", str(random_bytes), "x:1", words="not a tar archive")
    dock_cli.fails("import", str(text), "x:1", words="not a tar archive")
    dock_cli.fails("import", str(empty), "x:1", words="the input is empty")
    dock_cli.fails("import", "-c", "FROM busybox", str(rootfs_tar), "x:1", words="FROM is not a valid change")
    dock_cli.fails("import", "-c", "CMD", str(rootfs_tar), "x:1", words="CMD")
    dock_cli.fails("import", str(rootfs_tar), "Upper:1", words="must be lowercase")
    dock_cli.fails("import", str(rootfs_tar), "x@sha256:" + "0" * 64, words="has a digest")
    dock_cli.fails("import", str(tmp_path), "x:1", words="Is a directory")
    assert state(busybox_daemon) == before


# -- rename -------------------------------------------------------------------------------------------


def test_rename_a_running_container(dock_cli: DockCLI) -> None:
    dock_cli.ok("run", "-d", "--name", "web", "busybox", "sleep", "600")
    assert dock_cli.ok("rename", "web", "api") == ""
    assert ps_names(dock_cli) == {"web": "api"}
    assert dock_cli.json("inspect", "api")[0]["name"] == "api"
    assert [r["id"] for r in dock_cli.json("ps", "--filter", "name=ap")] == ["web"]
    assert dock_cli.ok("exec", "api", "echo", "in api") == "in api\n"
    # the id stays the container's (containerd's key): the old name is not free for another
    dock_cli.fails("run", "--name", "web", "busybox", "true", words='name "web" is already in use by container "web"')
    dock_cli.fails("create", "--name", "api", "busybox", "true",
                   words='name "api" is already in use by container "web"')
    dock_cli.ok("stop", "-t", "0", "api")
    assert dock_cli.ok("wait", "api") == "137\n"
    # by a generated id's prefix, and back to its id (the name label is then the id, as --name writes it)
    other = dock_cli.ok("create", "busybox", "true").strip()
    dock_cli.ok("rename", other[:10], "second")
    assert ps_names(dock_cli) == {"web": "api", other: "second"}
    dock_cli.ok("rename", "api", "web")
    assert ps_names(dock_cli) == {"web": "web", other: "second"}
    assert dock_cli.json("inspect", "web")[0]["labels"]["dockyard.name"] == "web"
    dock_cli.ok("rm", "second", "web")
    assert ps_names(dock_cli) == {}


def test_rename_bad_input(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    dock_cli.ok("create", "--name", "one", "busybox", "true")
    dock_cli.ok("create", "--name", "two", "busybox", "true")
    dock_cli.ok("rename", "two", "three")
    before = state(busybox_daemon)
    dock_cli.fails("rename", "nosuch", "x", words='container "nosuch"')
    dock_cli.fails("rename", "one", "two", words='name "two" is already in use by container "two"')
    dock_cli.fails("rename", "one", "three", words='name "three" is already in use by container "two"')
    dock_cli.fails("rename", "three", "three", words="same name as its current name")
    dock_cli.fails("rename", "one", "bad/name", words="invalid container name")
    assert state(busybox_daemon) == before
    assert ps_names(dock_cli) == {"one": "one", "two": "three"}


# -- system prune --filter ------------------------------------------------------------------------------


def test_system_prune_filters_by_label(dock_cli: DockCLI) -> None:
    dock_cli.ok("create", "--name", "goes", "-l", "tier=tmp", "busybox", "true")
    dock_cli.ok("create", "--name", "stays", "-l", "tier=keep", "busybox", "true")
    dock_cli.ok("network", "create", "--label", "tier=tmp", "tmpnet")
    dock_cli.ok("network", "create", "--label", "tier=keep", "keepnet")
    result = dock_cli.json("system", "prune", "-f", "--filter", "label=tier=tmp")
    assert result["containers_deleted"] == ["goes"] and result["networks_deleted"] == ["tmpnet"]
    assert result["images_deleted"] == [] and result["build_cache_deleted"] == []
    assert sorted(ps_names(dock_cli)) == ["stays"]
    out = dock_cli.ok("system", "prune", "-f", "--filter", "label!=tier=keep")
    assert "Total reclaimed space" in out and "stays" not in out
    assert sorted(ps_names(dock_cli)) == ["stays"]
    dock_cli.fails("system", "prune", "-f", "--filter", "until=24h", words="invalid filter")
    dock_cli.ok("system", "prune", "-f")
    assert ps_names(dock_cli) == {}
    assert [n["name"] for n in dock_cli.json("network", "ls") if n["name"] in ("tmpnet", "keepnet")] == []


def test_top_level_help_lists_the_new_verbs(dock_cli: DockCLI) -> None:
    text = dock_cli.ok("--help")
    for verb in ("create", "save", "load", "import", "rename"):
        assert f"    {verb} " in text, verb
    assert json.loads(dock_cli.ok("--format", "json", "ps", "-a")) == []
