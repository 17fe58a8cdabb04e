"""The code under test, driven inside a test's own "host" network namespace.

`HostNamespace` pins a fresh network namespace in a temp dir (so the machine's links and firewall
are never touched) and starts `python3 -m tests.integration.netcni_driver <base>` in it with
`nsenter --net` (not `ip netns exec`, which remounts /sys). That child holds a NetworkManager
over <base>/{state,root,net.d} and answers one JSON command per line on stdin; errors come back as
{"error": kind, "message": str(exc)}. The test runs pings and clients with nsenter too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from dockyard_common.errors import DockyardError
from supervisor.network import netns
from supervisor.network.attachments import NetworkManager, PortMapping, cni_container_id
from supervisor.network.cni import CNIRunner
from supervisor.network.networks import NetworkStore

BUSYBOX = "/bin/busybox"
REPO = Path(__file__).resolve().parents[2]


def manager_for(base: Path, plugin_dirs: list[str] | None = None, timeout: float = 60.0) -> NetworkManager:
    store = NetworkStore(base / "net.d", base / "root" / "networks" / "ipam")
    runner = CNIRunner([Path(d) for d in plugin_dirs] if plugin_dirs else [Path("/usr/lib/cni")], timeout=timeout)
    return NetworkManager(state=base / "state", root=base / "root", store=store, runner=runner)


async def _serve(base: Path) -> None:
    mgr = manager_for(base)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd = json.loads(line)
        op = cmd.pop("op")
        try:
            reply = await _do(mgr, base, op, cmd)
        except DockyardError as exc:
            reply = {"error": exc.kind, "message": str(exc), "type": type(exc).__name__}
        sys.stdout.write(json.dumps(reply, default=str) + "\n")
        sys.stdout.flush()


async def _do(mgr: NetworkManager, base: Path, op: str, a: dict[str, Any]) -> dict[str, Any]:
    if op == "config":  # a new manager (another plugin path or timeout), as a restarted daemon has
        mgr.__dict__.update(manager_for(base, a.get("plugin_dirs"), a.get("timeout", 60.0)).__dict__)
        return {}
    if op == "attach":
        ports = [PortMapping(**p) for p in a.pop("ports", [])]
        att = await mgr.attach(a.pop("ns"), a.pop("id"), a.pop("networks", None), ports, **a)
        return {"netns": str(att.netns_path), "resolv_conf": str(att.resolv_conf), "hosts": str(att.hosts),
                "interfaces": [vars(i) for i in att.interfaces], "ports": [vars(p) for p in att.ports]}
    if op == "attach_then_crash":  # the record and the plugins' state stay; the process vanishes
        await _do(mgr, base, "attach", a)
        os._exit(0)
    if op == "crash_during_add":  # die at the second network's ADD (eth1; after the first network's)
        real_add = mgr.runner.add

        async def add(*args: Any, **kw: Any) -> dict[str, Any]:
            if args[3] == "eth1":  # (conflist, container id, netns, ifname)
                os._exit(0)
            return await real_add(*args, **kw)

        mgr.runner.add = add  # type: ignore[method-assign]
        await _do(mgr, base, "attach", a)
        return {}
    if op == "attach_many":  # concurrently, as parallel `dock run`s would
        atts = await asyncio.gather(*(_do(mgr, base, "attach", {"ns": a["ns"], "id": cid, **a.get("args", {})})
                                      for cid in a["ids"]))
        return {"attachments": list(atts)}
    if op == "detach_many":
        await asyncio.gather(*(mgr.detach(a["ns"], cid) for cid in a["ids"]))
        return {}
    if op == "detach":
        await mgr.detach(a["ns"], a["id"])
        return {}
    if op == "check":
        await mgr.check(a["ns"], a["id"])
        return {}
    if op == "reconcile":
        report = await mgr.reconcile([tuple(x) for x in a.get("live", [])])
        return vars(report)
    if op == "create":
        net = await mgr.create_network(a.pop("name"), **a)
        return {"name": net.name, "subnets": [str(s) for s in net.subnets], "gateway": net.gateway,
                "bridge": net.bridge, "internal": net.internal, "labels": net.labels}
    if op == "ls":
        nets, problems = await mgr.list_networks()
        return {"networks": [n.name for n in nets], "problems": [p.message for p in problems]}
    if op == "inspect":
        net, users = await mgr.inspect_network(a["name"])
        return {"name": net.name, "subnets": [str(s) for s in net.subnets], "users": users}
    if op == "rm":
        await mgr.remove_network(a["name"])
        return {}
    if op == "prune":
        return {"removed": await mgr.prune_networks()}
    if op == "counters":
        from supervisor.network.counters import read_counters
        got = await asyncio.to_thread(read_counters, Path(a["netns"]), pid=a.get("pid"))
        return {k: vars(v) for k, v in got.items()}
    if op == "lock_race":
        return await _lock_race(mgr, a["ns"], a["id"])
    raise ValueError(f"unknown op {op}")


async def _lock_race(mgr: NetworkManager, ns: str, cid: str) -> dict[str, Any]:
    """attach; detach B, held inside its DEL while attach C queues; during C's first ADD a new
    detach D arrives. D must wait for C: it used to get a fresh lock once B had dropped the
    record (and its lock), and tore the netns down under C's ADD. Reports what the plugins saw."""
    key = cni_container_id(ns, cid)
    real_add, real_delete = mgr.runner.add, mgr.runner.delete
    busy = 0
    seen: dict[str, Any] = {"overlap": False, "adds": [], "order": []}
    b_in_del, b_go, d_in_del = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks: dict[str, asyncio.Task[Any]] = {}

    async def tracked(fn: Any, *args: Any, **kw: Any) -> Any:
        nonlocal busy
        busy += 1
        seen["overlap"] = seen["overlap"] or busy > 1  # two operations of one container at once
        try:
            return await fn(*args, **kw)
        finally:
            busy -= 1

    async def add(conflist: dict[str, Any], cni_id: str, netns_arg: str, ifname: str, **kw: Any) -> Any:
        seen["adds"].append(ifname)
        if "C" in tasks and "D" not in tasks:  # C's first ADD: D arrives now
            tasks["D"] = asyncio.create_task(run("D", mgr.detach(ns, cid)))
            # D must not reach its DEL while C is in its ADD; if it can, it does so at once
            await asyncio.wait([tasks["D"], asyncio.create_task(d_in_del.wait())], timeout=1.0,
                               return_when=asyncio.FIRST_COMPLETED)
        return await tracked(real_add, conflist, cni_id, netns_arg, ifname, **kw)

    async def delete(*args: Any, **kw: Any) -> Any:
        if "D" in tasks:
            d_in_del.set()
            seen["overlap"] = seen["overlap"] or not tasks["C"].done()  # D tearing down under C
        elif not b_in_del.is_set():
            b_in_del.set()
            await b_go.wait()
        return await tracked(real_delete, *args, **kw)

    async def run(name: str, coro: Any) -> Any:
        try:
            return await coro
        finally:
            seen["order"].append(name)

    await mgr.attach(ns, cid)
    mgr.runner.add, mgr.runner.delete = add, delete  # type: ignore[method-assign,assignment]
    try:
        tasks["B"] = asyncio.create_task(run("B", mgr.detach(ns, cid)))
        await b_in_del.wait()
        tasks["C"] = asyncio.create_task(run("C", mgr.attach(ns, cid)))
        await asyncio.sleep(0)  # C's first step: it queues on the container's lock
        b_go.set()
        results = list(await asyncio.gather(tasks["B"], tasks["C"], return_exceptions=True))
        if "D" in tasks:
            results.append((await asyncio.gather(tasks["D"], return_exceptions=True))[0])
    finally:
        mgr.runner.add, mgr.runner.delete = real_add, real_delete  # type: ignore[method-assign]
    seen["errors"] = [repr(r) for r in results if isinstance(r, BaseException)]
    seen["attached"] = key in mgr._records
    seen["locks_left"] = len(mgr._ctr_locks)
    return seen


def network_state(netns_file: Path, base: Path) -> dict[str, Any]:
    """What attach/detach may change in the "host" namespace at `netns_file`, for a manager (or
    a daemon) over <base>/{root,state}: links, rules per table, IPAM files, netns files, records,
    generated files."""

    def sh(*argv: str) -> str:
        return subprocess.run(["nsenter", f"--net={netns_file}", *argv], capture_output=True, text=True,
                              check=True, timeout=60).stdout

    links = sorted(x["ifname"] for x in json.loads(sh("ip", "-j", "link")))
    rules: dict[str, list[str]] = {}
    table = ""
    for line in sh("iptables-save").splitlines():
        if line.startswith("*"):
            table = line[1:]
            rules[table] = []
        elif line.startswith(("-A", ":")):
            rules[table].append(line.split(" [")[0])
    for t in rules:
        rules[t].sort()

    def files(d: Path) -> list[str]:
        return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()) if d.exists() else []

    ipam = [f for f in files(base / "root" / "networks" / "ipam")
            if not f.endswith(("/lock", "last_reserved_ip.0"))]
    return {"links": links, "rules": rules, "ipam": ipam, "netns": files(base / "state" / "netns"),
            "records": files(base / "root" / "networks" / "attachments"),
            "files": files(base / "state" / "network")}


class HostNamespace:
    """A pinned network namespace standing in for the host, and the driver process inside it."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="dockyard-net-"))
        self.file = netns.create(self.base / "hostns")
        self.sh("ip", "link", "set", "lo", "up")
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={self.file}", sys.executable, "-m", "tests.integration.netcni_driver",
             str(self.base)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:  # the driver exited (a crash scenario): the next call gets a new one
            self.proc.wait()
            self.proc.stdin.close()
            self.proc.stdout.close()
            self.proc = None
            self.start()
            return {"exited": True}
        return dict(json.loads(line))

    def ok(self, op: str, **args: Any) -> dict[str, Any]:
        reply = self.call(op, **args)
        assert "error" not in reply, reply
        return reply

    def sh(self, *argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a command in the host namespace."""
        return subprocess.run(["nsenter", f"--net={self.file}", *argv], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def in_container(self, ns_path: str, *argv: str, check: bool = False,
                     timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", f"--net={ns_path}", *argv], capture_output=True, text=True,
                              check=check, timeout=timeout)

    def ping(self, ns_path: str, ip: str) -> bool:
        r = self.in_container(ns_path, BUSYBOX, "ping", "-c", "1", "-W", "2", ip)
        return r.returncode == 0

    def snapshot(self) -> dict[str, Any]:
        return network_state(self.file, self.base)

    def close(self) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
        for path in netns.listing(self.base / "state" / "netns"):
            netns.remove(path)
        netns.remove(self.file)
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def server_in(ns_path: str, code: str) -> Any:
    """A Python server started inside a container namespace; ended by its pid."""
    proc = subprocess.Popen(["nsenter", f"--net={ns_path}", sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    asyncio.run(_serve(Path(sys.argv[1])))
