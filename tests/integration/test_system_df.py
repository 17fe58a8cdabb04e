"""dock system df [-v] against a real daemon: each test works in a namespace of its own (an empty
daemon as far as it can see), puts known amounts on disk and checks the numbers df reports.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.compat.runtimes import remove_everything
from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI
from tests.images import build_image, busybox_image, oci_archive, tar_tree

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

MiB = 1 << 20
SLACK = 256 * 1024  # directories, inodes and block rounding around the bytes a test writes
BOX = "docker.io/library/dfbox:1"
BOX2 = "docker.io/library/dfbox:2"  # the same image under another name: everything shared
SOLO = "docker.io/library/dfsolo:1"  # an image of its own layer, no container uses it
TYPES = ["Images", "Containers", "Local Volumes", "Build Cache"]


class NsCLI:
    """`dock -n NS ...`: a test's own namespace."""

    def __init__(self, cli: DockCLI, ns: str) -> None:
        self.cli, self.ns = cli, ns

    def ok(self, *args: str, timeout: float = 90) -> str:
        return self.cli.ok("-n", self.ns, *args, timeout=timeout)

    def json(self, *args: str) -> Any:
        return self.cli.json("-n", self.ns, *args)


@pytest.fixture
def ns(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> Iterator[NsCLI]:
    cli = NsCLI(dock_cli, f"df-{secrets.token_hex(4)}")
    cli.ok("namespaces", "create", cli.ns)
    yield cli
    remove_everything(busybox_daemon, namespace=cli.ns)
    for vol in cli.ok("volume", "ls", "-q").split():
        cli.ok("volume", "rm", vol)
    names = [i["name"] for i in cli.json("images", "ls")]
    if names:
        cli.ok("images", "rm", "--sync", *names)
    cli.ok("builder", "prune", "-a", "-f")
    cli.ok("gc")
    dock_cli.ok("namespaces", "rm", cli.ns)


def summary(cli: NsCLI) -> dict[str, dict[str, int]]:
    out = cli.json("system", "df")
    assert [s["type"] for s in out["summary"]] == TYPES
    return {s["type"]: s for s in out["summary"]}


def table(cli: NsCLI) -> dict[str, list[str]]:
    """The text table's rows by TYPE: TOTAL, ACTIVE, SIZE, RECLAIMABLE as printed."""
    lines = cli.ok("system", "df").splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    rows = {}
    for line in lines[1:]:
        cells = [c for c in line.split("    ") if c.strip()]
        rows[cells[0].strip()] = [c.strip() for c in cells[1:]]
    return rows


def import_images(cli: NsCLI, tmp: Path) -> None:
    blob = os.urandom(MiB)  # random: the layer's blob is as large as its content
    solo_root = tmp / "solo"
    solo_root.mkdir()
    (solo_root / "blob").write_bytes(blob)
    archive = tmp / "images.tar"
    archive.write_bytes(oci_archive([busybox_image(BOX), build_image(SOLO, [tar_tree(solo_root)])]))
    cli.ok("images", "import", "--unpack", str(archive), timeout=180)
    cli.ok("tag", BOX, BOX2)


def test_an_empty_namespace_shows_zeros(ns: NsCLI) -> None:
    for s in summary(ns).values():
        assert (s["total"], s["active"], s["size"], s["reclaimable"]) == (0, 0, 0, 0)
    assert table(ns) == {t: ["0", "0", "0 B", "0 B"] for t in TYPES}
    out = ns.ok("system", "df", "-v")
    for heading in ("Images space usage:", "Containers space usage:", "Local Volumes space usage:",
                    "Build cache usage: 0 B"):
        assert heading in out


def test_sizes_active_and_reclaimable(ns: NsCLI, tmp_path: Path) -> None:
    import_images(ns, tmp_path)
    listed = {i["name"]: i for i in ns.json("images", "ls")}
    # what `images ls` says by another path (reading the manifests): blobs + unpacked layers
    expected = {n: i["size"] + sum(i["unpacked"].values()) for n, i in listed.items()}
    assert all(i["unpacked"] for i in listed.values()), {n: i["unpacked"] for n, i in listed.items()}

    ns.ok("volume", "create", "idle")
    ns.ok("run", "-d", "--net", "none", "--name", "writer", "-v", "data:/data", BOX, "sh", "-c",
          "dd if=/dev/zero of=/big bs=1M count=3 && dd if=/dev/urandom of=/data/f bs=1M count=2 && sync")
    assert ns.ok("wait", "writer") == "0\n"
    ns.ok("run", "-d", "--net", "none", "--name", "sleeper", BOX, "sleep", "600")

    out = ns.json("system", "df", "-v")
    s = {x["type"]: x for x in out["summary"]}
    images = {i["name"]: i for i in out["images"]}
    assert set(images) == {BOX, BOX2, SOLO}
    for name_, img in images.items():
        assert img["size"] == expected[name_], (name_, img, listed[name_])
        assert img["unique_size"] == img["size"] - img["shared_size"]
    assert images[BOX]["shared_size"] == images[BOX]["size"] and images[BOX]["unique_size"] == 0
    assert images[SOLO]["shared_size"] == 0 and images[SOLO]["size"] >= 2 * MiB  # blob + unpacked
    assert (images[BOX]["containers"], images[BOX2]["containers"], images[SOLO]["containers"]) == (2, 0, 0)
    # BOX2 holds nothing BOX does not: only SOLO's bytes are reclaimable
    assert s["Images"] == {"type": "Images", "total": 3, "active": 1, "size": expected[BOX] + expected[SOLO],
                           "reclaimable": expected[SOLO]}

    containers = {c["name"]: c for c in out["containers"]}
    assert 3 * MiB <= containers["writer"]["size"] <= 3 * MiB + SLACK, containers["writer"]
    assert containers["sleeper"]["size"] <= SLACK
    assert containers["writer"]["local_volumes"] == 1 and containers["sleeper"]["local_volumes"] == 0
    assert containers["writer"]["status"].startswith("Exited (0)") and containers["sleeper"]["status"].startswith("Up")
    assert not containers["writer"]["active"] and containers["sleeper"]["active"]
    assert s["Containers"]["total"] == 2 and s["Containers"]["active"] == 1
    assert s["Containers"]["size"] == containers["writer"]["size"] + containers["sleeper"]["size"]
    assert s["Containers"]["reclaimable"] == containers["writer"]["size"]

    volumes = {v["name"]: v for v in out["volumes"]}
    assert volumes["data"]["links"] == 1 and volumes["idle"]["links"] == 0
    assert 2 * MiB <= volumes["data"]["size"] <= 2 * MiB + SLACK
    assert volumes["idle"]["size"] <= SLACK
    assert (s["Local Volumes"]["total"], s["Local Volumes"]["active"]) == (2, 1)
    assert s["Local Volumes"]["size"] == volumes["data"]["size"] + volumes["idle"]["size"]
    assert s["Local Volumes"]["reclaimable"] == volumes["idle"]["size"]

    # the table says the same as the JSON, with Docker's percentages
    rows = table(ns)
    assert rows["Images"][:2] == ["3", "1"] and rows["Containers"][:2] == ["2", "1"]
    assert rows["Local Volumes"][:2] == ["2", "1"]
    percent = s["Containers"]["reclaimable"] * 100 // s["Containers"]["size"]
    assert rows["Containers"][3].endswith(f"({percent}%)"), rows
    assert rows["Build Cache"] == ["0", "0", "0 B", "0 B"]

    text = ns.ok("system", "df", "-v")
    assert text.index("Images space usage:") < text.index("dfsolo") < text.index("Containers space usage:")
    for word in ("dfbox", "dfsolo", "writer", "sleeper", "data", "idle", '"sh -c dd if=/dev/ze…"'):
        assert word in text, text
    # the summary without -v agrees with what -v says
    assert summary(ns) == s


def test_build_cache_records_are_listed(ns: NsCLI, tmp_path: Path) -> None:
    import_images(ns, tmp_path)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {BOX}\nRUN dd if=/dev/zero of=/cached bs=1M count=1\nLABEL x=y\n")
    ns.ok("build", "--progress", "plain", "--network", "none", "-t", "dfbuilt:1", str(context), timeout=300)
    out = ns.json("system", "df", "-v")
    cache = out["build_cache"]
    assert cache and all(r["type"] == "regular" for r in cache), cache
    layered = [r for r in cache if r["size"] > 0]
    assert layered and all(r["shared"] for r in layered)  # the RUN layer is the built image's too
    s = {x["type"]: x for x in out["summary"]}["Build Cache"]
    assert s["total"] == len(cache) and s["size"] == 0  # nothing only the cache holds yet
    ns.ok("images", "rm", "--sync", "docker.io/library/dfbuilt:1")
    s = summary(ns)["Build Cache"]
    assert s["size"] == s["reclaimable"] == sum(r["size"] for r in layered) > 0
    assert "Build cache usage:" in ns.ok("system", "df", "-v")
