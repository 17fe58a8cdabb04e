"""dock container prune, image prune and system prune (dock/commands/prune.py) against a real daemon:
what is removed, what is left (running, restarting, in use), the question, and the filters.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from tests.compat.runtimes import IMAGE
from tests.dockcli import DockCLI
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]


def name(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def ids(cli: DockCLI) -> set[str]:
    return set(cli.ok("ps", "-a", "-q", "--no-trunc").split())


def test_container_prune_takes_the_stopped_and_leaves_the_rest(dock_cli: DockCLI) -> None:
    cli = dock_cli
    running = cli.ok("run", "-d", "--net", "none", "--name", name("up"), IMAGE, "sleep", "600").strip()
    exited = cli.ok("run", "-d", "--net", "none", "--name", name("ex"), "--label", "keep=no", IMAGE, "true").strip()
    kept = cli.ok("run", "-d", "--net", "none", "--name", name("kx"), "--label", "keep=yes", IMAGE, "true").strip()
    created = cli.ok("containers", "create", "--net", "none", "--name", name("cr"), IMAGE, "true").strip()
    done = cli.ok("run", "-d", "--net", "none", "--name", name("of"), "--restart", "on-failure:2", IMAGE,
                  "true").strip()  # exited 0: on-failure will not bring it back
    again = cli.ok("run", "-d", "--net", "none", "--name", name("al"), "--restart", "always", IMAGE,
                   "sh", "-c", "sleep 0.2").strip()  # comes back each time: never "stopped"
    for cid in (exited, kept, done):
        assert cli.ok("wait", cid) == "0\n"

    # no answer (stdin empty) is no: nothing removed
    res = cli.dock("container", "prune")
    assert res.returncode == 0 and "Are you sure" in res.stderr and res.stdout == ""
    assert {exited, kept, created, done} <= ids(cli)

    out = cli.ok("container", "prune", "-f", "--filter", "label!=keep=yes")
    assert out.splitlines()[0] == "Deleted Containers:"
    assert set(out.split()[2:]) == {exited, created, done}
    assert ids(cli) == {running, kept, again}
    assert cli.json("container", "prune", "-f") == {"containers_deleted": [kept]}
    assert ids(cli) == {running, again}
    assert cli.json("inspect", running)[0]["state"]["status"] == "running"
    wait_until(lambda: cli.json("inspect", again)[0]["labels"].get("containerd.io/restart.count", "0") != "0",
               what="the always-restarting container to restart once")
    assert again in ids(cli)


def test_image_prune_keeps_images_in_use(dock_cli: DockCLI, tmp_path: Path) -> None:
    cli = dock_cli
    cid = cli.ok("run", "-d", "--net", "none", "--name", name("c"), IMAGE, "sleep", "600").strip()
    spare = f"docker.io/library/spare:{secrets.token_hex(3)}"
    cli.ok("tag", IMAGE, spare)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {IMAGE}\nLABEL made-for=prune\n")
    cli.ok("build", "--progress", "plain", str(context), timeout=300)  # no -t: a dangling image
    names = {i["name"] for i in cli.json("images", "ls")}
    [dangling_name] = [n for n in names if n.startswith("dockyard-dangling@")]

    out = cli.ok("image", "prune", "-f")
    assert out.split() == ["Deleted", "Images:", dangling_name]
    names = {i["name"] for i in cli.json("images", "ls")}
    assert spare in names and IMAGE in names and dangling_name not in names

    assert cli.json("image", "prune", "-a", "-f") == {"images_deleted": [spare]}  # IMAGE: the container's
    assert {i["name"] for i in cli.json("images", "ls")} == {IMAGE}
    cli.ok("rm", "-f", cid)


def test_rmi_refuses_an_image_a_container_uses(dock_cli: DockCLI) -> None:
    cli = dock_cli
    spare = f"docker.io/library/spare:{secrets.token_hex(3)}"
    cli.ok("tag", IMAGE, spare)
    cid = cli.ok("containers", "create", "--net", "none", "--name", name("u"), spare, "true").strip()
    cli.fails("rmi", spare, words=f"container {cid} uses it")
    assert cli.ok("rmi", "-f", spare) == f"{spare}\n"
    assert cli.json("containers", "ls")[0]["image"] == spare  # the container stays, its snapshot too
    cli.ok("rm", cid)


def test_bad_filters_fail_before_the_question(dock_cli: DockCLI) -> None:
    for argv in (["container", "prune"], ["image", "prune"]):
        dock_cli.fails(*argv, "--filter", "until=1h", words="invalid filter 'until=1h'")


def test_system_prune_last(dock_cli: DockCLI) -> None:
    """Last in the module: it removes the module's image too."""
    cli = dock_cli
    gone = cli.ok("run", "-d", "--net", "none", "--name", name("g"), "-v", "/scratch", IMAGE, "true").strip()
    assert cli.ok("wait", gone) == "0\n"
    [volume] = cli.ok("volume", "ls", "-q").split()
    spare = f"docker.io/library/spare:{secrets.token_hex(3)}"
    cli.ok("tag", IMAGE, spare)
    res = cli.dock("system", "prune", "-a", "--volumes")
    assert res.returncode == 0 and "all stopped containers" in res.stderr and "anonymous volumes" in res.stderr
    assert gone in ids(cli)  # not confirmed
    out = cli.ok("system", "prune", "-a", "--volumes", "-f")
    assert f"Deleted Containers:\n{gone}\n" in out and f"Deleted Volumes:\n{volume}\n" in out
    assert "Deleted Images:" in out and spare in out and "Total reclaimed space:" in out
    assert ids(cli) == set() and cli.ok("volume", "ls", "-q") == ""
    assert cli.json("images", "ls") == []  # no container left to use IMAGE either
