"""What Docker's verbs keep on the container, against a real dockyardd: create's (and run's) -a and
Docker's StdinOnce, honoured by `dock start -a[i]` and `dock attach`; `--net container:REF` taking
any reference; renames (and creates) racing for one name, of which at most one wins.

Labels are the record: dockyard.attach (AttachStdin/Stdout/Stderr as -a chose them) and
dockyard.stdin-once (Docker's StdinOnce), dock/attachflags.py; the name claim is dock/lookup.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys

import pytest

from dock.lookup import NAME_LABEL, claim_name
from dock.runner import RunRequest, create_container
from dockyard_common.errors import AlreadyExists
from dockyard_common.types import Container
from tests.compat.runtimes import import_busybox
from tests.daemon import REPO, DaemonProcess, remove_base, start_daemon
from tests.dockcli import DockCLI
from tests.integration.test_docker_verbs import ps_names, state
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")]

ATTACH = "dockyard.attach"
STDIN_ONCE = "dockyard.stdin-once"
NET_CONTAINER = "dockyard.network/container"


def labels(cli: DockCLI, ref: str) -> dict[str, str]:
    return cli.json("inspect", ref)[0]["labels"]  # type: ignore[no-any-return]


def attach_process(cli: DockCLI, *args: str) -> subprocess.Popen[bytes]:
    """`dock ARGS` with a pipe for its stdin (the test decides when it ends)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": cli.address}
    env.pop("DOCK_DEBUG", None)
    if cli.tmp is not None:
        env["TMPDIR"] = str(cli.tmp)
    return subprocess.Popen([sys.executable, "-m", "dock.cli", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO)


def task_state(cli: DockCLI, ref: str) -> str:
    return cli.json("inspect", ref)[0]["state"]["status"]  # type: ignore[no-any-return]


# -- StdinOnce ---------------------------------------------------------------------------------------


def test_create_i_then_start_ai_ends_with_our_input(dock_cli: DockCLI) -> None:
    dock_cli.ok("create", "-i", "--name", "c", "busybox", "cat")
    assert labels(dock_cli, "c")[STDIN_ONCE] == "true"
    # cat reads EOF once our input ends: it prints what it read and the container exits
    first = dock_cli.dock("start", "-ai", "c", input="hi\n", timeout=60)
    assert (first.returncode, first.stdout, first.stderr) == (0, "hi\n", "")
    assert task_state(dock_cli, "c") == "exited"
    # kept on the record: the next start does the same
    again = dock_cli.dock("start", "-ai", "c", input="again\n", timeout=60)
    assert (again.returncode, again.stdout) == (0, "again\n")
    # a foreground `run -i` is StdinOnce too; `run -d -i` is not (Docker's rules)
    ran = dock_cli.dock("run", "-i", "--name", "fg", "busybox", "cat", input="ran\n", timeout=60)
    assert (ran.returncode, ran.stdout) == (0, "ran\n")
    assert labels(dock_cli, "fg")[STDIN_ONCE] == "true"
    assert dock_cli.dock("start", "-ai", "fg", input="fg again\n", timeout=60).stdout == "fg again\n"
    dock_cli.ok("run", "-d", "-i", "--name", "bg", "busybox", "cat")
    assert STDIN_ONCE not in labels(dock_cli, "bg") and ATTACH not in labels(dock_cli, "bg")
    dock_cli.ok("create", "--name", "plain", "busybox", "true")
    assert STDIN_ONCE not in labels(dock_cli, "plain")


def test_the_choice_outlives_a_daemon_restart() -> None:
    d = start_daemon()
    try:
        import_busybox(d)
        cli = DockCLI(d.address)
        cli.ok("create", "-i", "-a", "stdout", "--name", "kept", "busybox", "sh", "-c", "cat; echo err >&2")
        d.stop()
        d = start_daemon(base=d.base)
        res = cli.dock("start", "-ai", "kept", input="after restart\n", timeout=60)
        assert (res.returncode, res.stdout, res.stderr) == (0, "after restart\n", "")
        cli.ok("rm", "kept")
    finally:
        remove_base(d)


def test_attach_closes_stdin_at_eof_only_for_stdin_once(dock_cli: DockCLI) -> None:
    # StdinOnce: our EOF is the container's; it exits and so does the attach, with its status
    dock_cli.ok("create", "-i", "--name", "once", "busybox", "sh", "-c", "cat; exit 4")
    dock_cli.ok("start", "once")
    wait_until(lambda: task_state(dock_cli, "once") == "running", what="once running")
    attached = dock_cli.dock("attach", "once", input="to once\n", timeout=60)
    assert (attached.returncode, attached.stdout) == (4, "to once\n"), attached.stderr

    # not StdinOnce (`run -d -i`): our EOF leaves its stdin open, so attach after attach goes on
    dock_cli.ok("run", "-d", "-i", "--name", "open", "busybox", "cat")
    for line, echoed in (("one\n", "one\n"), ("two\n", "one\ntwo\n")):
        proc = attach_process(dock_cli, "attach", "--sig-proxy=false", "open")
        try:
            assert proc.stdin is not None
            proc.stdin.write(line.encode())
            proc.stdin.close()  # our EOF

            def logged(echoed: str = echoed) -> bool:
                return dock_cli.ok("logs", "open") == echoed

            wait_until(logged, what=f"cat to echo {line!r}")
            assert task_state(dock_cli, "open") == "running" and proc.poll() is None
        finally:
            proc.terminate()  # our signals are not the container's (--sig-proxy=false)
            proc.wait(timeout=30)
            assert proc.stderr is not None
            err = proc.stderr.read()
            proc.stderr.close()
        assert proc.returncode == 128 + 15 and b"Traceback" not in err, err
    assert task_state(dock_cli, "open") == "running"
    dock_cli.ok("rm", "-f", "open")


# -- create -a kept for start -a ---------------------------------------------------------------------


def test_start_a_attaches_what_create_a_chose(dock_cli: DockCLI) -> None:
    both = ["busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]
    dock_cli.ok("create", "-a", "STDOUT", "--name", "so", *both)
    dock_cli.ok("create", "--attach", "stderr", "--name", "se", *both)
    dock_cli.ok("create", "-a", "stdout", "-a", "stderr", "--name", "named", *both)
    dock_cli.ok("create", "--name", "default", *both)
    assert labels(dock_cli, "so")[ATTACH] == "stdout" and labels(dock_cli, "se")[ATTACH] == "stderr"
    assert ATTACH not in labels(dock_cli, "default")
    for ref, out, err in (("so", "out\n", ""), ("se", "", "err\n"), ("named", "out\n", "err\n"),
                          ("default", "out\n", "err\n")):
        res = dock_cli.dock("start", "-a", ref)
        assert (res.returncode, res.stdout, res.stderr) == (3, out, err), ref
    # -i attaches stdin whatever -a says: kept as Docker's AttachStdin, and StdinOnce
    dock_cli.ok("create", "-i", "-a", "stdout", "--name", "in-out", "busybox", "sh", "-c", "cat; echo err >&2")
    assert labels(dock_cli, "in-out")[ATTACH] == "stdin,stdout"
    assert labels(dock_cli, "in-out")[STDIN_ONCE] == "true"
    res = dock_cli.dock("start", "-ai", "in-out", input="piped\n", timeout=60)
    assert (res.returncode, res.stdout, res.stderr) == (0, "piped\n", "")
    # `run -a` keeps its choice as well, for a later start -a
    ran = dock_cli.dock("run", "-a", "stderr", "--name", "ran", *both)
    assert (ran.returncode, ran.stdout, ran.stderr) == (3, "", "err\n")
    again = dock_cli.dock("start", "-a", "ran")
    assert (again.returncode, again.stdout, again.stderr) == (3, "", "err\n")


# -- --net container:REF -----------------------------------------------------------------------------


def test_net_container_takes_any_reference(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    dock_cli.ok("run", "-d", "--name", "netsrc", "busybox", "sleep", "600")
    dock_cli.ok("rename", "netsrc", "renamed-src")
    netns = dock_cli.ok("exec", "netsrc", "readlink", "/proc/self/ns/net")
    assert netns.startswith("net:[")
    generated = dock_cli.ok("run", "-d", "busybox", "sleep", "600").strip()
    other_ns = dock_cli.ok("exec", generated, "readlink", "/proc/self/ns/net")
    for flag, ref, want in (("--net", "renamed-src", netns), ("--network", "netsrc", netns),
                            ("--net", generated[:12], other_ns)):
        out = dock_cli.ok("run", "--rm", flag, f"container:{ref}", "busybox", "readlink", "/proc/self/ns/net")
        assert out == want, (flag, ref)
    # the label the daemon reads holds the id, whatever named it
    dock_cli.ok("create", "--name", "joiner", "--net", "container:renamed-src", "busybox", "true")
    assert labels(dock_cli, "joiner")[NET_CONTAINER] == '"netsrc"'
    dock_cli.ok("create", "--name", "joiner2", "--network", f"container:{generated[:10]}", "busybox", "true")
    assert labels(dock_cli, "joiner2")[NET_CONTAINER] == f'"{generated}"'
    before = state(busybox_daemon)
    dock_cli.fails("run", "--rm", "--net", "container:nosuch", "busybox", "true", words="nosuch")
    dock_cli.fails("create", "--name", "j3", "--net", "container:nosuch", "busybox", "true", words="nosuch")
    assert state(busybox_daemon) == before


# -- names: concurrent claims ------------------------------------------------------------------------


def test_concurrent_renames_to_one_name_leave_one_holder(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    ids = [f"racer{i}" for i in range(6)]
    for cid in ids:
        dock_cli.ok("create", "--name", cid, "busybox", "true")

    async def race(name: str) -> list[BaseException | None]:
        async with busybox_daemon.client() as client:
            racers = [await client.containers.get(cid) for cid in ids]
            # every racer's first check runs before any writes: the check alone would let all through
            return await asyncio.gather(*(claim_name(client, c, name) for c in racers), return_exceptions=True)

    for name in ("prize", "prize2", "prize3"):
        results = asyncio.run(race(name))
        assert sum(r is None for r in results) == 1, results
        assert all(isinstance(r, AlreadyExists) for r in results if r is not None), results
        holders = [cid for cid, shown in ps_names(dock_cli).items() if shown == name]
        assert len(holders) == 1 and results[ids.index(holders[0])] is None
        dock_cli.ok("rename", name, holders[0])  # back to its id, for the next round

    # the CLI: several dock rename processes at once, one wins, the others say why
    procs = [subprocess.Popen([sys.executable, "-m", "dock.cli", "rename", cid, "cli-prize"], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": dock_cli.address},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cid in ids[:4]]
    outcomes = [(p.wait(timeout=90), p.communicate()[1]) for p in procs]
    assert [rc for rc, _ in outcomes].count(0) == 1, outcomes
    for rc, err in outcomes:
        assert rc == 0 or (rc == 1 and err.startswith("dock: ") and 'name "cli-prize" is already in use' in err
                           and "Traceback" not in err), err
    assert list(ps_names(dock_cli).values()).count("cli-prize") == 1


def test_a_create_loses_to_a_rename_that_claimed_its_name(dock_cli: DockCLI, busybox_daemon: DaemonProcess) -> None:
    dock_cli.ok("create", "--name", "holder", "busybox", "true")

    async def scene() -> BaseException | None:
        async with busybox_daemon.client() as client:
            # a rename's write lands between a create's first check and its Containers/Create
            await client.containers.update(Container(id="holder", runtime_name="", spec=None,
                                                     labels={NAME_LABEL: "wanted"}), [f"labels.{NAME_LABEL}"])
            async with contextlib.AsyncExitStack() as undo:
                try:
                    await create_container(client, RunRequest("busybox", "wanted", named=True), undo)
                except AlreadyExists as exc:
                    return exc
                undo.pop_all()
            return None

    before = state(busybox_daemon)
    error = asyncio.run(scene())
    assert error is not None and 'in use by container "holder"' in str(error)
    assert state(busybox_daemon) == before  # no container "wanted", no snapshot, no lease
    assert ps_names(dock_cli) == {"holder": "wanted"}
    dock_cli.fails("create", "--name", "wanted", "busybox", "true", words='in use by container "holder"')
