"""Container names (the label `dockyard.name`) kept unique by the daemon (supervisor/metadata/names.py),
against a real dockyardd: claims racing from many clients (gRPC connections in threads, `dock`
processes) end with one holder per name; renames back to the id and after a delete; a daemon
restart; and `ctr`, which knows nothing of the label, refused a duplicate of it too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from dock.lookup import NAME_LABEL
from dockyard_common.errors import AlreadyExists
from dockyard_common.types import Container
from tests.compat.runtimes import IMAGE, busybox_daemon
from tests.ctr import ctr
from tests.daemon import REPO, DaemonProcess, start_daemon
from tests.dockcli import DockCLI
from tests.integration.test_docker_verbs import ps_names

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")]


def holders(cli: DockCLI, name: str) -> list[str]:
    """The containers `dock ps` shows under `name`."""
    return [cid for cid, shown in ps_names(cli).items() if shown == name]


def rename_in_threads(d: DaemonProcess, ids: list[str], name: str) -> list[BaseException | None]:
    """Every container in `ids` renamed to `name` at once, each by a client of its own (its own
    connection, event loop and thread), all released together: what each got."""
    barrier = threading.Barrier(len(ids))
    results: list[BaseException | None] = [None] * len(ids)

    def claim(i: int) -> None:
        async def go() -> None:
            async with d.client() as client:
                await client.containers.get(ids[i])  # connected before the barrier
                barrier.wait(timeout=30)
                patch = Container(id=ids[i], runtime_name="", spec=None, labels={NAME_LABEL: name})
                await client.containers.update(patch, [f"labels.{NAME_LABEL}"])
        try:
            asyncio.run(go())
        except BaseException as exc:  # the result the test reads
            results[i] = exc

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_claims_from_many_clients_leave_one_holder(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    ids = [f"racer{i}" for i in range(8)]
    for cid in ids:
        dock_cli.ok("create", "--name", cid, "busybox", "true")
    # gRPC clients in threads, no check of their own: the daemon alone decides
    for name in ("prize", "prize2"):
        results = rename_in_threads(busybox_daemon, ids, name)
        assert sum(r is None for r in results) == 1, results
        losers = [r for r in results if r is not None]
        assert all(isinstance(r, AlreadyExists) and f'container name "{name}" is already in use' in str(r)
                   for r in losers), losers
        [holder] = holders(dock_cli, name)
        assert results[ids.index(holder)] is None
        dock_cli.ok("rename", name, holder)  # back to its id, for the next round
    # `dock` processes: renames and --name creates of one name at once
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": dock_cli.address}
    argvs = [["rename", cid, "cli-prize"] for cid in ids[:4]]
    argvs += [["create", "--name", "cli-prize", "busybox", "true"]] * 3
    procs = [subprocess.Popen([sys.executable, "-m", "dock.cli", *argv], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in argvs]
    outcomes = [(p.wait(timeout=90), p.communicate()[1]) for p in procs]
    assert [rc for rc, _ in outcomes].count(0) == 1, outcomes
    for rc, err in outcomes:
        assert rc == 0 or (rc == 1 and err.startswith("dock: ") and "already" in err and "Traceback" not in err), err
    assert len(holders(dock_cli, "cli-prize")) == 1


def test_rename_to_its_own_name_back_to_its_id_and_after_a_delete(dock_cli: DockCLI) -> None:
    dock_cli.ok("create", "--name", "first", "busybox", "true")
    dock_cli.ok("create", "--name", "second", "busybox", "true")
    dock_cli.fails("rename", "first", "first", words="same name as its current name")
    dock_cli.ok("rename", "first", "one")
    dock_cli.ok("rename", "one", "first")  # back to its id
    assert ps_names(dock_cli) == {"first": "first", "second": "second"}
    dock_cli.ok("rename", "first", "one")
    # taken while its holder is there: as a name, or as an id that is no longer anybody's name
    dock_cli.fails("rename", "second", "one", words='name "one" is already in use by container "first"')
    dock_cli.fails("rename", "second", "first", words='name "first" is already in use by container "first"')
    dock_cli.fails("create", "--name", "one", "busybox", "true",
                   words='name "one" is already in use by container "first"')
    dock_cli.ok("rm", "first")  # the delete frees both
    dock_cli.ok("rename", "second", "one")
    dock_cli.ok("create", "--name", "first", "busybox", "true")
    assert ps_names(dock_cli) == {"first": "first", "second": "one"}


def test_ctr_writes_of_the_label_are_refused_on_a_duplicate(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    dock_cli.ok("create", "--name", "holder", "busybox", "true")
    res = ctr(busybox_daemon, "containers", "create", "--label", f"{NAME_LABEL}=holder", IMAGE, "copy")
    assert res.returncode != 0 and 'container name "holder" is already in use by container "holder"' in res.stderr, res
    ctr_ok = ctr(busybox_daemon, "containers", "create", "--label", f"{NAME_LABEL}=own", IMAGE, "plain")
    assert ctr_ok.returncode == 0, ctr_ok.stderr
    res = ctr(busybox_daemon, "containers", "label", "plain", f"{NAME_LABEL}=holder")
    assert res.returncode != 0 and "already in use" in res.stderr, res
    assert ps_names(dock_cli) == {"holder": "holder", "plain": "own"}
    # no label, no rule: a containerd client's create of any free id works as with containerd
    dock_cli.ok("rename", "holder", "renamed")
    ctr_ok = ctr(busybox_daemon, "containers", "create", IMAGE, "renamed")
    assert ctr_ok.returncode == 0, ctr_ok.stderr


@pytest.fixture
def own_daemon() -> Iterator[DaemonProcess]:
    with busybox_daemon() as d:
        yield d


def test_the_names_outlive_a_daemon_killed_and_started_again(own_daemon: DaemonProcess) -> None:
    d = own_daemon
    cli = DockCLI(d.address)
    cli.ok("create", "--name", "a", "busybox", "true")
    cli.ok("create", "--name", "b", "busybox", "true")
    cli.ok("rename", "a", "web")
    d.stop(signal.SIGKILL)
    again = start_daemon(base=d.base, extra=["--config", str(d.base / "config.toml")])
    d.proc, d.log_start = again.proc, again.log_start
    cli.fails("rename", "b", "web", words='name "web" is already in use by container "a"')
    cli.fails("create", "--name", "web", "busybox", "true", words='name "web" is already in use by container "a"')
    res = ctr(d, "containers", "label", "b", f"{NAME_LABEL}=web")
    assert res.returncode != 0 and 'in use by container "a"' in res.stderr, res
    cli.ok("rm", "a")
    cli.ok("rename", "b", "web")
    assert ps_names(cli) == {"b": "web"}
