"""The build cache's pruning (issue 13): `dock builder prune` (dangling only, -a, --filter
until=, --keep-storage) over the dockyard.build.v1 Prune RPC, the cache's records holding its
layers against `dock gc` until pruned, and the daemon's `[build] cache_max_size` evicting the
least recently used records after a build.

Each build's RUN writes 64 KiB of random bytes (incompressible), so a layer's size is known;
"cached" events of `dock build --progress json` tell whether a RUN step was reused.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.buildcli import BuildCLI
from tests.daemon import DaemonProcess, remove_base, start_daemon, stopping_new_zygotes
from tests.images import busybox_oci_archive

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")]

LAYER = 64 * 1024


def context(base: Path, name: str) -> Path:
    ctx = Path(tempfile.mkdtemp(prefix=f"ctx-{name}-", dir=base))
    (ctx / "Dockerfile").write_text(f"FROM busybox\nENV WHICH={name}\n"
                                    f"RUN dd if=/dev/urandom of=/data-{name} bs=1024 count={LAYER // 1024}\n")
    return ctx


def build(cli: BuildCLI, ctx: Path, tag: str) -> tuple[bool, str]:
    """Build; (whether the RUN step came from the cache, the RUN layer's digest)."""
    built = cli.build(ctx, "-t", tag)
    manifest = json.loads(cli.blob(built.manifest_digest))
    return built.cached("RUN"), manifest["layers"][-1]["digest"]


def prune(cli: BuildCLI, *args: str) -> dict[str, Any]:
    return json.loads(cli.ok("--format", "json", "builder", "prune", "-f", *args))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def archive() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="dy-prune-img-") as tmp:
        path = Path(tmp) / "busybox.tar"
        path.write_bytes(busybox_oci_archive())
        yield path


@pytest.fixture
def daemon(archive: Path, request: pytest.FixtureRequest) -> Iterator[tuple[DaemonProcess, BuildCLI]]:
    """A daemon of its own per test (an indirect parameter: its config file's text)."""
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    (base / "config.toml").write_text(getattr(request, "param", ""))
    with stopping_new_zygotes():
        d = start_daemon(base)
        try:
            cli = BuildCLI(d.address)
            cli.ok("images", "import", "--unpack", str(archive))
            yield d, cli
        finally:
            remove_base(d)


def test_records_hold_layers_until_pruned(daemon: tuple[DaemonProcess, BuildCLI]) -> None:
    d, cli = daemon
    kept_ctx, gone_ctx = context(d.base, "kept"), context(d.base, "gone")
    assert build(cli, kept_ctx, "kept:1")[0] is False
    _, gone_layer = build(cli, gone_ctx, "gone:1")
    cli.ok("images", "rm", "gone:1")
    cli.ok("gc")
    assert cli.has_blob(gone_layer), "the cache's record no longer holds its layer"

    # Not confirmed: nothing goes.
    res = cli.run("builder", "prune", stdin=b"n\n")
    assert b"Are you sure" in res.stderr and b"Deleted" not in res.stdout
    assert build(cli, gone_ctx, "gone:1")[0] is True
    cli.ok("images", "rm", "gone:1")

    # Dangling only: the layer no image uses goes, the image's stays cached.
    report = prune(cli)
    assert report["removed"] and LAYER <= report["reclaimed_bytes"] < 2 * LAYER, report
    cli.ok("gc")
    assert not cli.has_blob(gone_layer)
    assert build(cli, kept_ctx, "kept:1")[0] is True
    cached, gone_layer = build(cli, gone_ctx, "gone:1")
    assert cached is False

    # --filter until: everything was just used, nothing goes.
    assert prune(cli, "-a", "--filter", "until=1h") == {"removed": [], "reclaimed_bytes": 0}

    # -a: all of it; the images keep their layers, so nothing is reclaimed until they go too.
    report = prune(cli, "-a")
    assert report["removed"] and report["reclaimed_bytes"] == 0, report
    assert build(cli, kept_ctx, "kept:1")[0] is False
    out = cli.ok("builder", "prune", "-af")
    assert out.startswith("Deleted build cache objects:\nsha256:") and "Total reclaimed space: 0 B" in out, out
    cli.ok("images", "rm", "gone:1")
    cli.ok("gc")
    assert not cli.has_blob(gone_layer)


def test_keep_storage_removes_least_recently_used(daemon: tuple[DaemonProcess, BuildCLI]) -> None:
    d, cli = daemon
    ctxs = [context(d.base, name) for name in ("old", "new")]
    for ctx in ctxs:
        build(cli, ctx, "x:1")
    cli.ok("images", "rm", "x:1")
    report = prune(cli, "-a", "--keep-storage", "100k")
    assert LAYER <= report["reclaimed_bytes"] < 2 * LAYER, report
    assert build(cli, ctxs[1], "x:1")[0] is True
    assert build(cli, ctxs[0], "x:1")[0] is False


def test_bad_prune_options_are_clear_errors(daemon: tuple[DaemonProcess, BuildCLI]) -> None:
    _, cli = daemon
    for args, message in ((["--filter", "type=regular"], "only until=DURATION"),
                          (["--filter", "until=soon"], "invalid duration"),
                          (["--keep-storage", "lots"], "invalid size")):
        assert message in cli.fails("builder", "prune", "-f", *args)


@pytest.mark.parametrize("daemon", ['[build]\ncache_max_size = "100k"\n'], indirect=True)
def test_cache_max_size_evicts_least_recently_used(daemon: tuple[DaemonProcess, BuildCLI]) -> None:
    d, cli = daemon
    ctxs = {name: context(d.base, name) for name in ("a", "b", "c")}
    for name, ctx in ctxs.items():
        build(cli, ctx, f"{name}:1")
        if name != "c":
            cli.ok("images", "rm", f"{name}:1")
    # After c's build the cache alone held a's and b's layers (128 KiB > 100 KiB): a's went.
    assert build(cli, ctxs["b"], "b:1")[0] is True
    assert build(cli, ctxs["c"], "c:1")[0] is True
    assert build(cli, ctxs["a"], "a:1")[0] is False


def test_bad_cache_max_size_stops_the_daemon(tmp_path: Path) -> None:
    from supervisor.config import ConfigError, load

    path = tmp_path / "config.toml"
    path.write_text('[build]\ncache_max_size = "huge"\n')
    with pytest.raises(ConfigError, match=r"build\.cache_max_size"):
        load(path, {})
