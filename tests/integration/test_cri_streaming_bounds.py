"""The bounds of the CRI streaming server in the real daemon (uvloop, its own network namespace),
with the real crictl as the honest client: a flood of connections that never upgrade leaves
`crictl exec` (SPDY and WebSocket) and `crictl port-forward` working and is told 503 oldest first;
a request sent a byte at a time is closed with 408; a control frame announcing 16 MiB gets GOAWAY
from its header; 16 connections trickling 16 MiB DATA frames into execs' stdin grow the daemon
(its RSS) by no more than their input budgets, not by what they sent.
tests/unit/test_cri_streaming_bounds.py has the same cases in-process, measured with the server's
own counters and tracemalloc.

Hostile connections are made from a thread that entered the daemon's network namespace (the
server listens on its 127.0.0.1); the socket stays there when the thread is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from dockyard_common.linux import CLONE_NEWNET, setns
from supervisor.cri.streaming.backpressure import MAX_QUEUED
from tests.daemon import in_netns
from tests.integration.test_cri_containers import container, pod
from tests.integration.test_cri_streaming import NetnsRig, streaming_rig
from tests.spdy_raw import ANNOUNCED, PROTOCOL_ERROR, SpdyClient, goaway_status
from tests.waiting import wait_until

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def rig() -> Iterator[NetnsRig]:
    with streaming_rig() as r:
        yield r


@pytest.fixture
def clean(rig: NetnsRig) -> Iterator[NetnsRig]:
    yield rig
    rig.remove_pods()
    log = rig.d.log()
    assert "Traceback" not in log and "was never retrieved" not in log, log[-4000:]


def connect(rig: NetnsRig, url: str) -> socket.socket:
    """A TCP connection to `url`'s server, made inside the daemon's network namespace."""
    parts = urlsplit(url)
    made: list[socket.socket | BaseException] = []

    def enter() -> None:
        try:
            fd = os.open(rig.netns, os.O_RDONLY)
            try:
                setns(fd, CLONE_NEWNET)  # this thread only
            finally:
                os.close(fd)
            made.append(socket.create_connection((parts.hostname, parts.port), timeout=20))
        except BaseException as exc:
            made.append(exc)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    if isinstance(made[0], BaseException):
        raise made[0]
    return made[0]


def exec_url(rig: NetnsRig, cid: str, cmd: list[str], stdin: bool = False) -> str:
    async def call() -> str:
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            reply = await api_pb2_grpc.RuntimeServiceStub(ch).Exec(
                api_pb2.ExecRequest(container_id=cid, cmd=cmd, stdin=stdin, stdout=True, stderr=True))
            return str(reply.url)
    return asyncio.run(call())


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    return 0


def unread(rig: NetnsRig, server_port: int, socks: list[socket.socket]) -> int:
    """Bytes sent on `socks` the daemon has not read yet: the kernel's queues of both ends, from
    /proc/<daemon>/net/tcp (its namespace's sockets)."""
    queues = {}
    for line in Path(f"/proc/{rig.d.proc.pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        queues[(local, remote)] = tuple(int(x, 16) for x in fields[4].split(":"))
    total = 0
    for s in socks:
        mine = s.getsockname()[1]
        total += queues.get((mine, server_port), (0, 0))[0] + queues.get((server_port, mine), (0, 0))[1]
    return total


def running(rig: NetnsRig, tmp: Path, name: str) -> tuple[str, str]:
    cfg = pod(name, tmp)
    pod_id = rig.runp(cfg)
    cid = rig.run(pod_id, cfg, container(name, command=["sh", "-c", "mkdir -p /www && echo from-the-pod > "
                                                        "/www/index.html && exec httpd -f -p 8080 -h /www"]))
    return pod_id, cid


def read_all(sock: socket.socket) -> bytes:
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            got += chunk
    return got


def test_a_flood_of_idle_connections_leaves_crictl_working(clean: NetnsRig, tmp_path: Path) -> None:
    rig = clean
    pod_id, cid = running(rig, tmp_path, "flood")
    url = exec_url(rig, cid, ["true"])
    idle = [connect(rig, url) for _ in range(200)]  # more than the 128 handshakes the server keeps
    try:
        for transport in ("spdy", "websocket"):
            res = rig.crictl("exec", "-r", transport, "-i", cid, "cat", input="hello\n")
            assert (res.returncode, res.stdout) == (0, "hello\n"), res
        local = random.randrange(20000, 40000)
        with subprocess.Popen(rig.command("port-forward", pod_id, f"{local}:8080"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) as proc:
            try:
                assert proc.stdout is not None and "Forwarding from" in proc.stdout.readline()
                fetch = ("import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                         f"'http://127.0.0.1:{local}/', timeout=20).read().decode())")
                assert in_netns(rig.netns, "python3", "-c", fetch).stdout == "from-the-pod\n"
            finally:
                proc.send_signal(signal.SIGINT)
                proc.communicate(timeout=30)
        # the oldest idle connections made room, each told why
        for s in idle[:200 - 128]:
            assert read_all(s).startswith(b"HTTP/1.1 503 Service Unavailable")
    finally:
        for s in idle:
            s.close()
    assert "connections in their handshake at once (at most 128): the oldest" in rig.d.log()


def test_slow_handshakes_and_oversized_frames_are_refused(clean: NetnsRig, tmp_path: Path) -> None:
    rig = clean
    _, cid = running(rig, tmp_path, "hostile")
    # Request headers a byte at a time: closed with 408 once the handshake timeout (10 s) passed.
    slow = connect(rig, exec_url(rig, cid, ["true"]))
    slow.settimeout(0.05)
    got, deadline = b"", time.monotonic() + 30
    try:
        for byte in b"GET /exec/x HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"y" * 100_000:
            slow.sendall(bytes([byte]))
            with contextlib.suppress(TimeoutError):
                got = slow.recv(65536)
                break  # an answer, or the end
            if time.monotonic() > deadline:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        slow.close()
    assert got.startswith(b"HTTP/1.1 408"), got
    assert "did not upgrade within 10 s of its accept" in rig.d.log()

    # A control frame announcing 16 MiB: GOAWAY PROTOCOL_ERROR from its header.
    url = exec_url(rig, cid, ["sleep", "4141"], stdin=True)
    c = SpdyClient(url, "v4.channel.k8s.io", connect(rig, url))
    try:
        assert c.upgrade().startswith(b"HTTP/1.1 101")
        c.syn(1, {"streamType": "error"})
        with contextlib.suppress(OSError):
            c.sock.sendall(struct.pack(">HHI", 0x8003, 1, ANNOUNCED) + bytes(64 << 10))
        assert goaway_status(c.until_end()) == PROTOCOL_ERROR
    finally:
        c.close()
    assert "a control frame (type 1) of 16777215 bytes" in rig.d.log()

    # 16 execs whose stdin gets 8 MiB of a DATA frame announcing 16 MiB each: the bytes go on to
    # the processes as they come, the daemon keeps at most each session's input budget of them
    # (plus a read) while the process is slower than the client (it kept all 128 MiB before).
    n, trickle, piece = 16, 8 << 20, 64 << 10
    chunk = memoryview(os.urandom(piece))
    clients = []
    try:
        for _ in range(n):
            url = exec_url(rig, cid, ["sh", "-c", "cat >/dev/null"], stdin=True)
            c = SpdyClient(url, "v4.channel.k8s.io", connect(rig, url))
            clients.append(c)
            assert c.upgrade().startswith(b"HTTP/1.1 101")
            for sid, kind in ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")):
                c.syn(sid, {"streamType": kind})
        before = rss(rig.d.proc.pid)
        threads = []
        for c in clients:
            def send(c: SpdyClient = c) -> None:
                c.sock.sendall(struct.pack(">II", 3, ANNOUNCED))
                for _ in range(trickle // piece):
                    c.sock.sendall(chunk)
            threads.append(threading.Thread(target=send))
            threads[-1].start()
        for t in threads:
            t.join(120)
        port = urlsplit(url).port or 0
        wait_until(lambda: unread(rig, port, [c.sock for c in clients]) == 0, timeout=60,
                   what="the daemon to read what the clients sent")
        grown = rss(rig.d.proc.pid) - before
        bound = n * (MAX_QUEUED + (256 << 10)) + (16 << 20)  # 16 MiB for the rest of the daemon's life
        assert grown < bound, f"the daemon grew {grown >> 20} MiB for {(n * trickle) >> 20} MiB sent " \
                              f"(bound {bound >> 20} MiB)"
    finally:
        for c in clients:
            c.close()
    # the clients gone, their execs go too
    wait_until(lambda: "cat >/dev/null" not in rig.crictl("exec", cid, "ps").stdout, timeout=60,
               what="the execs of the closed sessions to go")
