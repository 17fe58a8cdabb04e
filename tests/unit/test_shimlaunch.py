"""dockyard_common.shimlaunch: the shim's launch contract, both ends of the zygote protocol in one
process (the client as `start` and the daemon use it, the server half as shim.zygote uses it)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dockyard_common import shimlaunch
from dockyard_common.errors import InvalidArgument
from dockyard_common.shimlaunch import BadRequest, Launch, NoAnswer
from dockyard_common.ttrpc.sockets import parse_address
from dockyard_common.unixsock import MAX_PATH


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temp dir short enough for socket paths below it (pytest's tmp_path is not)."""
    d = Path(tempfile.mkdtemp(prefix="sl-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _zygote(path: Path, serve: object) -> tuple[socket.socket, threading.Thread]:
    """A one-request server speaking the zygote's side with `serve(conn)`."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(str(path))
    srv.listen(1)

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            serve(conn)  # type: ignore[operator]

    t = threading.Thread(target=run)
    t.start()
    return srv, t


def test_a_request_crosses_with_its_socket(short_dir: Path) -> None:
    launch = shimlaunch.launch_for("ns", "c1", str(short_dir / "ns" / "c1"), "unix:///run/x.sock", debug=True)
    got: list[tuple[Launch, int]] = []

    def serve(conn: socket.socket) -> None:
        launch_in, fd = shimlaunch.receive_request(conn)
        got.append((launch_in, os.fstat(fd).st_ino))
        os.close(fd)
        shimlaunch.answer(conn, pid=4242)

    srv, t = _zygote(short_dir / "z.sock", serve)
    r, w = os.pipe()
    try:
        assert shimlaunch.request_shim(launch, r, str(short_dir / "z.sock")) == 4242
        t.join()
        assert got == [(launch, os.fstat(r).st_ino)]  # the very descriptor, and the Launch as sent
    finally:
        srv.close()
        os.close(r)
        os.close(w)


def test_an_error_answer_is_no_answer_and_a_request_without_socket_is_refused(short_dir: Path) -> None:
    launch = shimlaunch.launch_for("ns", "c1", str(short_dir), "")
    def fail(conn: socket.socket) -> None:
        os.close(shimlaunch.receive_request(conn)[1])
        shimlaunch.answer(conn, error="out of pids")

    srv, t = _zygote(short_dir / "z.sock", fail)
    r, w = os.pipe()
    try:
        with pytest.raises(NoAnswer, match="out of pids"):
            shimlaunch.request_shim(launch, r, str(short_dir / "z.sock"))
        t.join()
    finally:
        srv.close()
        os.close(r)
        os.close(w)

    refused: list[BaseException] = []

    def serve(conn: socket.socket) -> None:
        with pytest.raises(BadRequest) as info:
            shimlaunch.receive_request(conn)
        refused.append(info.value)

    (short_dir / "z.sock").unlink()
    srv, t = _zygote(short_dir / "z.sock", serve)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with client:
            client.connect(str(short_dir / "z.sock"))
            assert client.recv(64) == shimlaunch.HELLO
            client.send(b"{}")  # no socket attached
            assert b"no listening socket" in client.recv(4096)
        t.join()
        assert len(refused) == 1
    finally:
        srv.close()


def test_without_a_zygote_the_daemon_runs_start_and_leaves_no_socket(short_dir: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = short_dir / "tasks" / "ns" / "c1"
    bundle.mkdir(parents=True)
    launch = shimlaunch.launch_for("ns", "c1", str(bundle), "")
    zpath = shimlaunch.zygote_socket_path(launch)
    assert zpath is not None and zpath.startswith(f"{short_dir}/tasks/{shimlaunch.ZYGOTE_DIR}/")
    assert shimlaunch.start_via_zygote(launch) is None
    assert not os.path.lexists(launch["socket"])
    monkeypatch.setenv(shimlaunch.SWITCH, "0")
    assert shimlaunch.start_via_zygote(launch) is None
    # A bundle laid out as no daemon's has no zygote to ask.
    other = shimlaunch.launch_for("ns", "c1", str(short_dir), "")
    monkeypatch.delenv(shimlaunch.SWITCH)
    assert shimlaunch.zygote_socket_path(other) is None and shimlaunch.start_via_zygote(other) is None


def test_a_served_socket_is_answered_with_its_address(short_dir: Path) -> None:
    bundle = short_dir / "tasks" / "ns" / "c1"
    bundle.mkdir(parents=True)
    launch = shimlaunch.launch_for("ns", "c1", str(bundle), "")
    live = shimlaunch.listen_for(launch)
    assert live is not None
    with live:
        assert shimlaunch.listen_for(launch) is None
        assert shimlaunch.start_via_zygote(launch) == f"unix://{bundle}/shim.sock"


def test_one_socket_path_limit_for_shims_zygotes_and_ttrpc(tmp_path: Path) -> None:
    deep = str(tmp_path / ("d" * 120))
    path = shimlaunch.socket_path(deep)
    assert path.startswith(shimlaunch.FALLBACK_DIR + "/") and len(path.encode()) <= MAX_PATH
    parse_address(path)
    fits = "/" + "x" * (MAX_PATH - 1)
    assert parse_address(fits) == fits
    with pytest.raises(InvalidArgument, match="longer than"):
        parse_address(fits + "x")


def test_the_command_line_and_environment() -> None:
    argv = shimlaunch.command_line(("/usr/bin/python3", *shimlaunch.RUN_MODULE), namespace="ns",
                                   address="/run/d.sock", publish_binary="/bin/d", cid="c1", action="start")
    assert argv == ["/usr/bin/python3", "-m", "shim", "-namespace", "ns", "-address", "/run/d.sock",
                    "-publish-binary", "/bin/d", "-id", "c1", "start"]
    assert shimlaunch.command_line(("shim",), namespace="n", address="a", publish_binary="b", cid="i",
                                   action="delete", debug=True)[-2:] == ["-debug", "delete"]
    assert shimlaunch.environment("unix:///e.sock", {"PATH": "/bin"}) == {"PATH": "/bin",
                                                                          "TTRPC_ADDRESS": "unix:///e.sock"}


def _bundle(root: Path, ns: str, cid: str, annotations: dict[str, str] | None) -> str:
    import json

    bundle = root / ns / cid
    bundle.mkdir(parents=True)
    spec: dict[str, object] = {"ociVersion": "1.1.0"}
    if annotations is not None:
        spec["annotations"] = annotations
    (bundle / "config.json").write_text(json.dumps(spec))
    return str(bundle)


def test_a_pods_bundles_share_one_group_socket_in_the_state_dir(short_dir: Path) -> None:
    sandbox = _bundle(short_dir, "k8s.io", "pod1", {"io.kubernetes.cri.sandbox-id": "pod1"})
    member = _bundle(short_dir, "k8s.io", "c1", {"io.kubernetes.cri.sandbox-id": "pod1"})
    runc_group = _bundle(short_dir, "k8s.io", "c2", {"io.containerd.runc.v2.group": "pod1"})
    other_pod = _bundle(short_dir, "k8s.io", "c3", {"io.kubernetes.cri.sandbox-id": "pod2"})
    other_ns = _bundle(short_dir, "other", "c4", {"io.kubernetes.cri.sandbox-id": "pod1"})
    alone = _bundle(short_dir, "k8s.io", "c5", None)
    launches = {b: shimlaunch.launch_for(Path(b).parent.name, Path(b).name, b, "") for b in
                (sandbox, member, runc_group, other_pod, other_ns, alone)}
    grouped = launches[sandbox]["socket"]
    assert Path(grouped).parent == short_dir / ".dockyard-shim" and Path(grouped).name.startswith("group-")
    assert launches[member]["socket"] == launches[runc_group]["socket"] == grouped
    assert launches[member]["group"] == "pod1"
    assert len({launches[b]["socket"] for b in (sandbox, other_pod, other_ns)}) == 3  # per pod, per namespace
    assert launches[alone]["socket"] == os.path.join(alone, "shim.sock") and launches[alone]["group"] == ""


def test_no_group_from_an_unreadable_spec_or_a_bundle_laid_out_as_no_daemons(short_dir: Path) -> None:
    broken = short_dir / "k8s.io" / "bad"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    assert shimlaunch.group_of(str(broken)) == ""
    (broken / "config.json").write_text('{"annotations": ["not", "a", "map"]}')
    assert shimlaunch.group_of(str(broken)) == ""
    stray = _bundle(short_dir, "ns", "x", {"io.kubernetes.cri.sandbox-id": "p"})
    launch = shimlaunch.launch_for("ns", "another-id", stray, "")  # -id does not match the bundle's dir
    assert launch["group"] == "" and launch["socket"] == os.path.join(stray, "shim.sock")


def test_a_long_state_dir_puts_the_group_socket_in_the_fallback_dir(tmp_path: Path) -> None:
    root = tmp_path / ("d" * 100)
    bundle = _bundle(root, "k8s.io", "c1", {"io.kubernetes.cri.sandbox-id": "pod1"})
    path = shimlaunch.launch_for("k8s.io", "c1", bundle, "")["socket"]
    assert path.startswith(shimlaunch.FALLBACK_DIR + "/group-") and len(path.encode()) <= MAX_PATH


def test_concurrent_starts_of_a_group_make_one_socket(short_dir: Path) -> None:
    """Containers of one pod started at once: exactly one start makes the group's socket, the
    others find it served (a shim per pod even then). 20 pods of 8, all released together."""
    from concurrent.futures import ThreadPoolExecutor

    gate = threading.Barrier(8)  # passed once per pod: it resets itself

    def start(launch: Launch) -> socket.socket | None:
        gate.wait()
        return shimlaunch.listen_for(launch)

    for pod in range(20):
        launches = [shimlaunch.launch_for("k8s.io", f"p{pod}c{i}", _bundle(
            short_dir, "k8s.io", f"p{pod}c{i}", {"io.kubernetes.cri.sandbox-id": f"pod{pod}"}), "") for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            made = [s for s in pool.map(start, launches) if s is not None]
        try:
            assert len(made) == 1, f"pod {pod}: {len(made)} sockets made"
            assert shimlaunch.listen_for(launches[0]) is None  # still served
        finally:
            for s in made:
                s.close()
