"""The CRI streaming server (Exec, Attach, PortForward URLs) driven by the real `crictl`, which
speaks SPDY/3.1 to it: `exec -i` with input, `exec -it` through a pseudo-terminal (its size
reaches the process), `attach` to a container's own stdin/stdout, and `port-forward` to busybox
httpd in a pod. Tokens are single-use, unknown ones 404, and an exec whose client dies is killed.

crictl runs inside the daemon's network namespace: the streaming server listens on its
127.0.0.1, as containerd's does, and the forwarded port opens there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import random
import secrets
import select
import signal
import struct
import subprocess
import tempfile
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.cri.runtime.v1 import api_pb2, api_pb2_grpc
from tests.cri_mirror import cri_mirror
from tests.daemon import in_netns, pinned_netns, processes_mentioning, remove_base, start_daemon
from tests.images import build_image, tar_tree
from tests.integration.test_cri_containers import BUSYBOX, CriRig, container, cri_rig, pod
from tests.integration.test_cri_sandbox import CRICTL
from tests.integration.test_critest import CRITEST
from tests.waiting import wait_until

pytestmark = pytest.mark.root


class NetnsRig(CriRig):
    def command(self, *args: str) -> list[str]:
        config = self.tmp / "crictl.yaml"  # our own (empty): never the machine's /etc/crictl.yaml
        config.touch()
        endpoint = f"unix://{self.d.address}"
        return ["nsenter", f"--net={self.netns}", str(CRICTL), "--config", str(config), "--runtime-endpoint",
                endpoint, "--image-endpoint", endpoint, "--timeout", "60s", *args]

    def crictl(self, *args: str, timeout: float = 90, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, input=input)


def streaming_rig() -> contextlib.AbstractContextManager[NetnsRig]:
    """A daemon in its own network namespace with the pause look-alike and busybox in k8s.io."""
    return cri_rig(NetnsRig, "dy-cristream-", lambda root: [build_image(BUSYBOX, [tar_tree(root)])])


@pytest.fixture(scope="module")
def rig() -> Iterator[NetnsRig]:
    with streaming_rig() as r:
        yield r


@pytest.fixture
def clean(rig: NetnsRig) -> Iterator[NetnsRig]:
    yield rig
    rig.remove_pods()
    exec_dir = rig.d.state / "cri" / "exec"
    assert not exec_dir.exists() or list(exec_dir.iterdir()) == [], "exec FIFOs left behind"
    log = rig.d.log()
    assert "Traceback" not in log and "was never retrieved" not in log, log[-4000:]


@pytest.fixture(params=["spdy", "websocket"])
def transport(request: pytest.FixtureRequest) -> str:
    """crictl's --transport: SPDY/3.1 (its default) or WebSocket (channel.k8s.io; SPDY tunnelled for port-forward)."""
    return str(request.param)


def running(rig: NetnsRig, tmp: Path, name: str, **more: Any) -> tuple[str, str]:
    cfg = pod(name, tmp)
    pod_id = rig.runp(cfg)
    cid = rig.run(pod_id, cfg, container(name, command=["sleep", "3600"], **more))
    return pod_id, cid


def test_exec_with_input_and_exit_code(clean: NetnsRig, tmp_path: Path, transport: str) -> None:
    rig = clean
    _, cid = running(rig, tmp_path, "exec-i")
    res = rig.crictl("exec", "-r", transport, "-i", cid, "sh", "-c", "cat; echo done; echo to-err >&2",
                     input="hello\nworld\n")
    assert res.returncode == 0, res
    assert res.stdout == "hello\nworld\ndone\n" and res.stderr.strip() == "to-err", res
    res = rig.crictl("exec", "-r", transport, cid, "sh", "-c", "echo partial; exit 3")
    # crictl exits 1 and names the code it got in the final status (NonZeroExitCode)
    assert res.returncode == 1 and res.stdout == "partial\n", res
    assert "command terminated with exit code 3" in res.stderr, res
    res = rig.crictl("exec", "-r", transport, cid, "no-such-command")
    assert res.returncode != 0 and "Traceback" not in res.stderr, res
    # more than a pipe's and a frame's worth
    res = rig.crictl("exec", "-r", transport, "-i", cid, "wc", "-c", input="x" * 300_000)
    assert res.returncode == 0 and res.stdout.strip() == "300000", res


def test_exec_tty_through_a_pty(clean: NetnsRig, tmp_path: Path, transport: str) -> None:
    rig = clean
    _, cid = running(rig, tmp_path, "exec-t")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 33, 101, 0, 0))
    try:
        # crictl sends the window size and the input from goroutines of their own (in one WebSocket
        # they may go in either order): the process waits until the size has reached its terminal,
        # and says so, before the test types anything.
        script = ('until [ "$(stty size)" = "33 101" ]; do sleep 0.02; done; echo sized; '
                  'read x; stty size; tty; echo got-$x')
        proc = subprocess.Popen(rig.command("exec", "-r", transport, "-it", cid, "sh", "-c", script),
                                stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        out = bytearray()

        def seen(text: bytes) -> bool:
            try:
                out.extend(os.read(master, 65536))
            except OSError:
                pass
            return text in out

        wait_until(lambda: seen(b"sized"), timeout=30, what="the client's window size to reach the process")
        os.write(master, b"typed\r")
        wait_until(lambda: seen(b"got-typed"), timeout=30, what="input through the terminal")
        assert proc.wait(timeout=30) == 0
        assert b"33 101" in out and b"/dev/pts/" in out, out  # the client's window size reached the process
    finally:
        os.close(master)


def _line(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "no output"
    return proc.stdout.readline()


def test_attach_to_the_containers_stdin(clean: NetnsRig, tmp_path: Path, transport: str) -> None:
    rig = clean
    cfg = pod("attach", tmp_path)
    pod_id = rig.runp(cfg)
    cid = rig.run(pod_id, cfg, container("attach", command=["sh"], stdin=True))
    with subprocess.Popen(rig.command("attach", "-r", transport, "-i", cid), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdin is not None
        proc.stdin.write("echo attached-$((40 + 2))\n")
        proc.stdin.flush()
        assert _line(proc) == "attached-42\n"
        proc.stdin.close()  # not stdin_once: the end of input detaches, the shell keeps running
        assert proc.wait(timeout=30) == 0
    assert rig.state(cid) == "CONTAINER_RUNNING"
    with subprocess.Popen(rig.command("attach", "-r", transport, "-i", cid), stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdin is not None
        proc.stdin.write("echo again; exit 7\n")
        proc.stdin.flush()
        assert _line(proc) == "again\n"
        assert proc.wait(timeout=30) == 0  # the session ends with the container, input still open
    wait_until(lambda: rig.state(cid) == "CONTAINER_EXITED", what="the shell to exit")
    assert rig.status(cid)["exitCode"] == 7


def test_attach_stdin_once_closes_the_containers_stdin(clean: NetnsRig, tmp_path: Path, transport: str) -> None:
    rig = clean
    cfg = pod("attach-once", tmp_path)
    pod_id = rig.runp(cfg)
    cid = rig.run(pod_id, cfg, {**container("once", command=["sh", "-c", "cat; echo end-of-input"]),
                                "stdin": True, "stdin_once": True})
    res = rig.crictl("attach", "-r", transport, "-i", cid, input="passed through\n", timeout=60)
    assert res.returncode == 0 and res.stdout == "passed through\nend-of-input\n", res
    wait_until(lambda: rig.state(cid) == "CONTAINER_EXITED", what="the container to exit at its input's end")


def test_port_forward_to_httpd_in_the_pod(clean: NetnsRig, tmp_path: Path, transport: str) -> None:
    rig = clean
    cfg = pod("pf", tmp_path)
    pod_id = rig.runp(cfg)
    rig.run(pod_id, cfg, container("web", command=["sh", "-c", "mkdir -p /www && echo hello-from-the-pod > "
                                                   "/www/index.html && exec httpd -f -p 8080 -h /www"]))
    local = random.randrange(20000, 40000)
    with subprocess.Popen(rig.command("port-forward", "-r", transport, pod_id, f"{local}:8080"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        try:
            assert "Forwarding from" in _line(proc)
            fetch = ("import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("
                     f"'http://127.0.0.1:{local}/', timeout=20).read().decode())")
            for _ in range(3):  # each request is a new forwarded connection
                assert in_netns(rig.netns, "python3", "-c", fetch).stdout == "hello-from-the-pod\n"
        finally:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)


def test_port_forward_to_a_closed_port_reports_it(clean: NetnsRig, tmp_path: Path, transport: str) -> None:
    rig = clean
    pod_id = rig.runp(pod("pf-closed", tmp_path))
    local = random.randrange(20000, 40000)
    with subprocess.Popen(rig.command("port-forward", "-r", transport, pod_id, f"{local}:9"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        assert "Forwarding from" in _line(proc)
        probe = f"import socket; s = socket.create_connection(('127.0.0.1', {local}), timeout=20); print(s.recv(9))"
        assert in_netns(rig.netns, "python3", "-c", probe).stdout.strip() == "b''"  # closed, nothing sent
        # The error reaches the client on the error stream; client-go then ends the session.
        out, _ = proc.communicate(timeout=30)
    assert "error forwarding port 9" in out and "Connection refused" in out, out


def _urls(rig: NetnsRig, cid: str, pod_id: str) -> list[str]:
    async def call() -> list[str]:
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            stub = api_pb2_grpc.RuntimeServiceStub(ch)
            exec_ = await stub.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["true"], stdout=True))
            attach = await stub.Attach(api_pb2.AttachRequest(container_id=cid, stdout=True))
            forward = await stub.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=pod_id))
            return [exec_.url, attach.url, forward.url]
    return asyncio.run(call())


def _status_of(rig: NetnsRig, url: str) -> int:
    probe = ("import urllib.request, urllib.error\n"
             "try:\n"
             f"    print(urllib.request.urlopen(urllib.request.Request({url!r}, method='POST'), timeout=20).status)\n"
             "except urllib.error.HTTPError as e:\n"
             "    print(e.code)\n")
    return int(in_netns(rig.netns, "python3", "-c", probe).stdout)


def test_tokens_are_single_use(clean: NetnsRig, tmp_path: Path) -> None:
    rig = clean
    pod_id, cid = running(rig, tmp_path, "tokens")
    urls = _urls(rig, cid, pod_id)
    for url in urls:
        assert url.startswith("http://127.0.0.1:"), url
        assert _status_of(rig, url) == 400  # not an upgrade: refused, and the token is spent
        assert _status_of(rig, url) == 404
    base = urls[0].rsplit("/", 2)[0]
    assert _status_of(rig, f"{base}/exec/{secrets.token_urlsafe(12)}") == 404
    # A token is for its own kind of session only.
    exec_url = _urls(rig, cid, pod_id)[0]
    assert _status_of(rig, exec_url.replace("/exec/", "/attach/")) == 404


def test_bad_requests_get_clear_errors(clean: NetnsRig, tmp_path: Path) -> None:
    rig = clean
    _, cid = running(rig, tmp_path, "bad")

    async def call(method: str, request: Any) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(f"unix:{rig.d.address}") as ch:
            try:
                await getattr(api_pb2_grpc.RuntimeServiceStub(ch), method)(request)
            except grpc.aio.AioRpcError as exc:
                assert "Traceback" not in (exc.details() or "")
                return exc.code()
            return grpc.StatusCode.OK

    E = api_pb2.ExecRequest
    assert asyncio.run(call("Exec", E(container_id=cid, cmd=[], stdout=True))) == grpc.StatusCode.INVALID_ARGUMENT
    assert asyncio.run(call("Exec", E(container_id=cid, cmd=["true"]))) == grpc.StatusCode.INVALID_ARGUMENT
    assert asyncio.run(call("Exec", E(container_id=cid, cmd=["sh"], tty=True, stdout=True, stderr=True))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert asyncio.run(call("Exec", E(container_id="f" * 64, cmd=["true"], stdout=True))) \
        == grpc.StatusCode.NOT_FOUND
    assert asyncio.run(call("PortForward", api_pb2.PortForwardRequest(pod_sandbox_id="f" * 64))) \
        == grpc.StatusCode.NOT_FOUND
    rig.ok("stop", cid)
    assert asyncio.run(call("Attach", api_pb2.AttachRequest(container_id=cid, stdout=True))) \
        == grpc.StatusCode.FAILED_PRECONDITION


def test_exec_of_a_vanished_client_is_killed(clean: NetnsRig, tmp_path: Path) -> None:
    rig = clean
    _, cid = running(rig, tmp_path, "vanish")
    with subprocess.Popen(rig.command("exec", "-i", cid, "sleep", "4343"), stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            wait_until(lambda: "sleep 4343" in rig.ok("exec", cid, "ps"), timeout=30, what="the exec to run")
        finally:
            proc.kill()  # crictl by its pid: its connection drops mid-session
            proc.wait(timeout=30)
    wait_until(lambda: "sleep 4343" not in rig.ok("exec", cid, "ps"), timeout=30, what="the exec to be killed")
    exec_dir = rig.d.state / "cri" / "exec"
    wait_until(lambda: not exec_dir.exists() or not list(exec_dir.iterdir()), what="its FIFOs to go")


def test_critest_streaming_over_websocket() -> None:
    """critest's Streaming specs (exec with and without a terminal, attach, port-forward in a pod
    and on the host network) with its WebSocket clients; test_critest.py runs them over SPDY."""
    if not CRITEST.exists():
        pytest.fail(f"{CRITEST} is missing (see /work/shared/tools/cri/README.md)", pytrace=False)
    with pinned_netns() as ns:
        base = Path(tempfile.mkdtemp(prefix="dy-"))
        (base / "config.toml").write_text("")
        with cri_mirror(ns, base):
            d = start_daemon(base, netns=ns)
            try:
                endpoint = f"unix://{d.address}"
                done = subprocess.run(
                    ["nsenter", f"--net={ns}", str(CRITEST), "--runtime-endpoint", endpoint, "--image-endpoint",
                     endpoint, "-ginkgo.no-color", "-ginkgo.focus=Streaming", "-websocket-exec", "-websocket-attach",
                     "-websocket-portforward"], capture_output=True, text=True, timeout=600, cwd=base)
                out = done.stdout + done.stderr
                assert done.returncode == 0 and "5 Passed | 0 Failed" in out, out[-6000:]
                assert "Traceback" not in d.log(), d.log()[-6000:]
            finally:
                remove_base(d)


def test_daemon_stop_ends_sessions_and_kills_their_execs(tmp_path: Path) -> None:
    with streaming_rig() as rig:
        _, cid = running(rig, tmp_path, "stop")
        with subprocess.Popen(rig.command("exec", "-i", cid, "sleep", "4545"), stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
            wait_until(lambda: "sleep 4545" in rig.ok("exec", cid, "ps"), timeout=30, what="the exec to run")
            assert rig.d.stop() == 0
            assert proc.wait(timeout=30) != 0  # its session ended with the daemon, and it was told
            assert proc.stderr is not None
            assert "the container runtime is stopping" in proc.stderr.read()
        log = rig.d.log()
        assert "Traceback" not in log, log[-4000:]
        # The daemon killed the exec as its session ended (the container itself keeps running).
        wait_until(lambda: not processes_mentioning("sleep\x004545"), timeout=30, what="the exec to be killed")
