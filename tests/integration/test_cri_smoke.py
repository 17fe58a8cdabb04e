"""The CRI smoke, as a kubelet operator would try it with the real `crictl` against dockyardd:
runp, create, start, logs -f, stats, statsp, a log rotation (kubelet's rename, then
ReopenContainerLog), a `kill -9` of the daemon in the middle, stop, rm, rmp; then bad input
(unknown runtime handler, missing pod, missing image, invalid resources) answered with clear
CRI errors and nothing left behind.

One daemon for the module, in a network namespace it pins, with the images of
test_cri_containers.py (its fixtures are reused: nothing is pulled). Streaming (`exec -it`,
`port-forward`) is the streaming server's suite.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from dockyard_common import containerlog as cl
from tests.ctr import ctr, ok
from tests.daemon import start_daemon
from tests.integration import test_cri_containers as cri
from tests.integration.test_cri_containers import CRI_NS, CRICTL, CriRig, container, pod
from tests.waiting import wait_until

rig, clean = cri.rig, cri.clean  # its fixtures: one daemon for this module, a clean slate per test

pytestmark = pytest.mark.root

# A line every 20 ms, numbered: a gap or a repeat in the log shows.
COUNTER = "i=0; while :; do echo line $i; i=$((i+1)); sleep 0.02; done"
LINE = re.compile(r"^line (\d+)$")


def numbers(text: str) -> list[int]:
    return [int(m.group(1)) for line in text.splitlines() if (m := LINE.match(line))]


def file_numbers(paths: list[Path]) -> list[int]:
    """The counter's lines in the CRI log files given (oldest first), each a whole F record."""
    out = []
    for path in paths:
        for raw in path.read_bytes().splitlines():
            rec = cl.parse_record(raw)
            assert rec is not None and not rec.partial and rec.stream == cl.STDOUT, raw
            out += numbers(rec.content.decode())
    return out


def contiguous(seen: list[int]) -> bool:
    return seen == list(range(seen[0], seen[0] + len(seen))) if seen else False


def follow(r: CriRig, cid: str) -> tuple[subprocess.Popen[str], Path]:
    """`crictl logs -f` writing to a file (read while it runs)."""
    out = r.tmp / f"follow-{secrets.token_hex(3)}.txt"
    with out.open("w") as f:
        endpoint = f"unix://{r.d.address}"
        config = r.tmp / "crictl.yaml"
        config.touch()
        proc = subprocess.Popen([str(CRICTL), "--config", str(config), "--runtime-endpoint", endpoint,
                                 "--image-endpoint", endpoint, "logs", "-f", cid], stdout=f,
                                stderr=subprocess.STDOUT, text=True)
    return proc, out


def call(r: CriRig, method: str, request: Any) -> grpc.StatusCode | None:
    """A RuntimeService call crictl has no command for: None when it succeeded, else its code."""
    async def run() -> grpc.StatusCode | None:
        async with grpc.aio.insecure_channel(f"unix:{r.d.address}") as ch:
            try:
                await getattr(api_pb2_grpc.RuntimeServiceStub(ch), method)(request)
            except grpc.aio.AioRpcError as exc:
                assert not re.search(r"Traceback|\b[A-Z]\w*(Error|Exception)\b", exc.details() or ""), exc
                return exc.code()
            return None
    return asyncio.run(run())


def reopen(r: CriRig, cid: str) -> grpc.StatusCode | None:
    return call(r, "ReopenContainerLog", api_pb2.ReopenContainerLogRequest(container_id=cid))


def pod_stats(r: CriRig, pod_id: str) -> dict[str, Any]:
    items = r.json("statsp", "--id", pod_id)["stats"]
    assert [s["attributes"]["id"] for s in items] == [pod_id], items
    return dict(items[0])


def active_snapshots(r: CriRig) -> list[str]:
    """The CRI namespace's writable snapshots (a container's or a sandbox's; image layers are committed)."""
    lines = ok(ctr(r.d, "snapshots", "ls", namespace=CRI_NS)).splitlines()[1:]
    return sorted(line.split()[0] for line in lines if line.split()[-1] == "Active")


def test_crictl_smoke_with_a_daemon_kill(clean: CriRig) -> None:
    rig = clean
    parent = f"/dy-kubepods-{secrets.token_hex(3)}/besteffort/pod{secrets.token_hex(4)}"
    pcfg = pod("smoke", rig.tmp, labels={"app": "smoke"}, linux={"cgroup_parent": parent})
    p = rig.runp(pcfg)
    cid = rig.create(p, pcfg, container("counter", command=["sh", "-c", COUNTER], labels={"role": "count"}))
    assert rig.state(cid) == "CONTAINER_CREATED"
    assert reopen(rig, cid) == grpc.StatusCode.FAILED_PRECONDITION  # not running: nothing writes its log
    rig.ok("start", cid)
    log_path = Path(rig.status(cid)["logPath"])
    assert log_path == Path(pcfg["log_directory"]) / "counter.log"

    # logs -f: lines as they come, until the follower is stopped
    follower, followed = follow(rig, cid)
    try:
        wait_until(lambda: len(numbers(followed.read_text())) >= 20, what="crictl logs -f to show 20 lines")
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(10)
    seen = numbers(followed.read_text())
    assert seen[0] == 0 and contiguous(seen), seen

    # stats of the container; statsp of the pod: cpu, memory, processes, network, the container inside
    wait_until(lambda: int(rig.json("stats", "--id", cid)["stats"][0]["cpu"]["usageCoreNanoSeconds"]["value"]) > 0,
               what="the container to use CPU time")
    stats = pod_stats(rig, p)
    assert stats["attributes"]["labels"] == {"app": "smoke"} and stats["attributes"]["metadata"]["name"] == "smoke"
    linux = stats["linux"]
    assert int(linux["cpu"]["usageCoreNanoSeconds"]["value"]) > 0
    assert int(linux["memory"]["workingSetBytes"]["value"]) > 0
    assert int(linux["process"]["processCount"]["value"]) >= 3  # pause, sh, (sleep)
    assert linux["network"]["defaultInterface"]["name"] == "eth0"
    assert [c["attributes"]["id"] for c in linux["containers"]] == [cid]
    assert [s["attributes"]["id"] for s in rig.json("statsp", "--label", "app=smoke")["stats"]] == [p]
    assert rig.json("statsp", "--label", "app=other")["stats"] == []

    # kill -9 in the middle: the shims keep the pod and the container (and its log) going
    pid = int(rig.json("inspect", cid)["info"]["pid"])
    assert rig.d.stop(signal.SIGKILL) == -signal.SIGKILL
    rig.d = start_daemon(rig.d.base, netns=rig.netns)
    assert rig.listed() == {p: "SANDBOX_READY"}
    assert {c["id"]: c["state"] for c in rig.json("ps", "-a")["containers"]} == {cid: "CONTAINER_RUNNING"}
    assert int(rig.json("inspect", cid)["info"]["pid"]) == pid
    before = numbers(rig.ok("logs", cid))
    assert before[0] == 0 and contiguous(before), before[:5]
    wait_until(lambda: len(numbers(rig.ok("logs", cid))) > len(before) + 10, what="the log to go on")
    assert [c["attributes"]["id"] for c in pod_stats(rig, p)["linux"]["containers"]] == [cid]

    # kubelet's rotation: rename, then ReopenContainerLog; the shim starts a new file, losing no line
    follower, followed = follow(rig, cid)
    try:
        wait_until(lambda: numbers(followed.read_text()), what="crictl logs -f to start")
        rotated = log_path.with_name(f"{log_path.name}.{secrets.token_hex(3)}")
        log_path.rename(rotated)
        assert reopen(rig, cid) is None
        assert log_path.exists()
        wait_until(lambda: len(file_numbers([log_path])) >= 10, what="lines in the new log file")
        mark = max(file_numbers([log_path]))
        # the follower goes on in the new file (kubelet's reader sees it recreated)
        wait_until(lambda: mark in numbers(followed.read_text()), what="crictl logs -f to follow the new file")
        rig.ok("stop", "--timeout", "0", cid)
        follower.wait(60)  # the container stopped: the follower ends by itself
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, followed.read_text()[-2000:]
    whole = file_numbers([rotated, log_path])
    assert whole[0] == 0 and contiguous(whole), [n for a, n in itertools.pairwise(whole) if n != a + 1]
    assert numbers(rig.ok("logs", cid)) == file_numbers([log_path])  # kubelet reads the current file
    assert rig.state(cid) == "CONTAINER_EXITED"
    assert reopen(rig, cid) == grpc.StatusCode.FAILED_PRECONDITION  # exited: its log is complete
    assert reopen(rig, secrets.token_hex(32)) == grpc.StatusCode.NOT_FOUND

    # stop, rm, rmp: nothing stays
    rig.ok("rm", cid)
    assert rig.ps() == []
    ok(rig.crictl("stopp", p))
    assert rig.listed() == {p: "SANDBOX_NOTREADY"}
    ok(rig.crictl("rmp", p))
    rig.pods.remove(p)
    assert rig.listed() == {}
    assert active_snapshots(rig) == []


def test_bad_input_gets_clear_errors_and_leaves_nothing(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("careful", rig.tmp)
    p = rig.runp(pcfg)
    made = (sorted(ok(ctr(rig.d, "containers", "ls", "-q", namespace=CRI_NS)).split()), active_snapshots(rig))
    assert made == ([p], [p])

    # a runtime handler nobody configured
    message = rig.fails("runp", "--runtime", "nosuch", rig.config_file(pod("other", rig.tmp)))
    assert "InvalidArgument" in message and "runtime handler 'nosuch' is not configured" in message, message
    # a pod that does not exist
    missing = secrets.token_hex(32)
    message = rig.fails("create", "--no-pull", missing, rig.config_file(container("c")), rig.config_file(pcfg))
    assert "NotFound" in message and missing in message, message
    # an image that does not exist (not pulled: --no-pull; pulling it fails as clearly)
    message = rig.fails("create", "--no-pull", p, rig.config_file(container("c", image="example.org/no/such:1")),
                        rig.config_file(pcfg))
    assert "NotFound" in message and "example.org/no/such:1" in message, message
    message = rig.fails("create", p, rig.config_file(container("c", image="example.org/no/such:1")),
                        rig.config_file(pcfg))
    assert "example.org/no/such" in message, message
    # resources the kernel would refuse or that cannot run anything
    for resources, words in (({"cpu_shares": -2}, "cpu_shares must not be negative"),
                             ({"cpu_shares": 1}, "cpu_shares 1 must be within 2..262144"),
                             ({"memory_limit_in_bytes": 4096}, "below the minimum of 6 MiB"),
                             ({"cpu_period": 100000, "cpu_quota": 10}, "cpu_quota 10 must be at least 1000")):
        config = container("c", linux={"resources": resources})
        message = rig.fails("create", "--no-pull", p, rig.config_file(config), rig.config_file(pcfg))
        assert "InvalidArgument" in message and words in message, message
    assert rig.json("stats", "--id", missing)["stats"] == [] and rig.json("statsp", "--id", missing)["stats"] == []
    assert call(rig, "ContainerStats", api_pb2.ContainerStatsRequest(container_id=missing)) == \
        grpc.StatusCode.NOT_FOUND
    assert call(rig, "PodSandboxStats", api_pb2.PodSandboxStatsRequest(pod_sandbox_id=missing)) == \
        grpc.StatusCode.NOT_FOUND
    for message in (rig.fails("logs", missing), rig.fails("inspect", missing)):
        assert "Traceback" not in message, message

    # nothing was made: the pod alone, as before
    assert rig.ps() == [] and rig.listed() == {p: "SANDBOX_READY"}
    assert (sorted(ok(ctr(rig.d, "containers", "ls", "-q", namespace=CRI_NS)).split()), active_snapshots(rig)) == made
    assert len(rig.leftovers()["netns"]) == 1  # the pod's own

    # a stopped pod has no stats to give, a stopped container none to reopen
    cid = rig.run(p, pcfg, container("brief", command=["true"]))
    wait_until(lambda: rig.state(cid) == "CONTAINER_EXITED", what="the container to exit")
    assert reopen(rig, cid) == grpc.StatusCode.FAILED_PRECONDITION
    ok(rig.crictl("stopp", p))
    assert call(rig, "PodSandboxStats", api_pb2.PodSandboxStatsRequest(pod_sandbox_id=p)) == \
        grpc.StatusCode.FAILED_PRECONDITION
    assert rig.json("statsp")["stats"] == []  # only ready pods are listed
