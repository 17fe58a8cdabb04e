"""`dock volume prune` as Docker 23+ (issue 15): unused anonymous volumes by default, named ones too
with `-a/--all`, narrowed by `--filter label=KEY[=VALUE]` / `label!=KEY[=VALUE]`; volumes in use
(by a running or a stopped container) never go; a question first unless `-f`.

A real daemon (`--default-network none`), our shim, busybox.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from tests.compat.runtimes import IMAGE, uid
from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI
from tests.integration.conftest import emptied

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]


@pytest.fixture
def d(busybox_daemon: DaemonProcess) -> Iterator[DaemonProcess]:
    yield busybox_daemon
    emptied(busybox_daemon)


def cli(d: DaemonProcess) -> DockCLI:
    return DockCLI(d.address)


def volumes(d: DaemonProcess) -> set[str]:
    return set(cli(d).ok("volume", "ls", "-q").split())


def anonymous_of(d: DaemonProcess, cid: str) -> str:
    [name] = cli(d).ok("volume", "ls", "-q", "--filter", f'labels."dockyard.volume/container"=="{cid}"').split()
    return name


def prune(d: DaemonProcess, *args: str) -> Any:
    return cli(d).json("volume", "prune", "-f", *args)


def test_anonymous_by_default_named_with_all_and_never_one_in_use(d: DaemonProcess) -> None:
    named = uid("named")
    cli(d).ok("volume", "create", named)
    gone = uid("gone")  # its container removed without -v: its anonymous volume is unused
    cli(d).ok("run", "--net", "none", "-v", "/scratch", "--name", gone, IMAGE, "true")
    unused_anon = anonymous_of(d, gone)
    cli(d).ok("rm", gone)
    stopped, running = uid("stopped"), uid("running")  # containers that keep theirs in use
    held_named, live_named = uid("held"), uid("live")
    cli(d).ok("run", "--net", "none", "-v", f"{held_named}:/h", "-v", "/anon", "--name", stopped, IMAGE, "true")
    cli(d).ok("run", "-d", "--net", "none", "-v", f"{live_named}:/l", "-v", "/anon", "--name", running, IMAGE,
              "sleep", "100000")
    in_use = {held_named, live_named, anonymous_of(d, stopped), anonymous_of(d, running)}
    assert volumes(d) == in_use | {named, unused_anon}

    out = prune(d)
    assert out["removed"] == [unused_anon], out  # the named one stays without --all
    assert volumes(d) == in_use | {named}
    out = prune(d, "--all")
    assert out["removed"] == [named], out
    assert volumes(d) == in_use
    assert prune(d, "-a")["removed"] == []  # nothing in use ever goes


def test_label_filters_narrow_it(d: DaemonProcess) -> None:
    a, b, c, plain = uid("a"), uid("b"), uid("c"), uid("plain")
    cli(d).ok("volume", "create", "--label", "team=x", "--label", "env=prod", a)
    cli(d).ok("volume", "create", "--label", "team=x", b)
    cli(d).ok("volume", "create", "--label", "team=y", c)
    cli(d).ok("volume", "create", plain)
    assert prune(d, "--filter", "label=team")["removed"] == []  # named: only with --all
    # label= all must hold; label!= any one keeps it
    assert prune(d, "-a", "--filter", "label=team=x", "--filter", "label!=env=prod")["removed"] == [b]
    assert prune(d, "-a", "--filter", "label!=team")["removed"] == [plain]
    assert sorted(prune(d, "-a", "--filter", "label=team", "--filter", "label!=env")["removed"]) == [c]
    assert volumes(d) == {a}
    # An anonymous volume by its container's label, without --all.
    cid = uid("owner")
    cli(d).ok("run", "--net", "none", "-v", "/scratch", "--name", cid, IMAGE, "true")
    anon = anonymous_of(d, cid)
    cli(d).ok("rm", cid)
    assert prune(d, "--filter", "label=dockyard.volume/container=nobody")["removed"] == []
    assert prune(d, "--filter", f"label=dockyard.volume/container={cid}")["removed"] == [anon]
    assert volumes(d) == {a}


def test_it_asks_first_unless_forced(d: DaemonProcess) -> None:
    named = uid("asked")
    cli(d).ok("volume", "create", named)
    for answer in ("", "n\n", "no\n"):
        res = cli(d).dock("volume", "prune", "--all", input=answer)
        assert res.returncode == 0 and res.stdout == "", res
        assert "WARNING! This will remove all local volumes not used by at least one container." in res.stderr
        assert named in volumes(d)
    res = cli(d).dock("volume", "prune", input="y\n")
    assert "remove anonymous local volumes" in res.stderr and named in volumes(d)
    res = cli(d).dock("volume", "prune", "-a", input="y\n")
    assert res.returncode == 0 and f"Deleted Volumes:\n{named}\n" in res.stdout, res
    assert named not in volumes(d)


def test_bad_filters_are_refused_in_words_and_remove_nothing(d: DaemonProcess) -> None:
    named = uid("kept")
    cli(d).ok("volume", "create", named)
    for bad in ("until=24h", "label", "label=", "label!==x", "labels.team==x"):
        cli(d).fails("volume", "prune", "-af", "--filter", bad, words="invalid filter")

    async def sdk(**kwargs: Any) -> None:
        async with d.client() as c:
            await c.volumes.prune(all=True, **kwargs)

    for kwargs in ({"labels": ["=x"]}, {"labels_not": [""]}, {"filters": ['name=="a" ,x']}):
        with pytest.raises(InvalidArgument):
            asyncio.run(sdk(**kwargs))
    assert named in volumes(d)
