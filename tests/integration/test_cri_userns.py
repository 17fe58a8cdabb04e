"""Pods in their own user namespace (the CRI's userns_options, mode POD; Kubernetes' hostUsers:
false): the sandbox makes the namespace with the pod's one uid and one gid range, every container
of the pod joins it, and the image's root-owned layers are ID-mapped so the container's root owns
them without a copy or a chown (dockyard_common/idmap.py).

Driven by the real `crictl` against a daemon in a network namespace of its own (the rig of
test_cri_containers.py; `removed_all` checks nothing is left after each test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon import start_daemon
from tests.integration.test_cri_containers import CriRig, _images, container, cri_rig, exec_sync, pod, removed_all
from tests.integration.test_cri_pod_shim import init_pid
from tests.waiting import wait_until

pytestmark = pytest.mark.root

HOST_ID = 200000
SIZE = 65536


@pytest.fixture(scope="module")
def rig() -> Iterator[CriRig]:
    with cri_rig(CriRig, "dy-criuserns-", _images) as r:
        # The container's root (a host uid with no other rights) walks to its bundle: every
        # directory above the daemon's state must be searchable, as containerd's 0711 ones are.
        for d in (r.d.state, *r.d.state.parents):
            if d == Path("/tmp"):
                break
            os.chmod(d, os.stat(d).st_mode | 0o111)
        yield r


@pytest.fixture
def clean(rig: CriRig) -> Iterator[CriRig]:
    yield rig
    removed_all(rig)


def userns(mode: int = 0, uids: list[dict[str, int]] | None = None,
           gids: list[dict[str, int]] | None = None) -> dict[str, Any]:
    one = [{"container_id": 0, "host_id": HOST_ID, "length": SIZE}]
    return {"security_context": {"namespace_options": {"userns_options": {
        "mode": mode, "uids": one if uids is None else uids, "gids": one if gids is None else gids}}}}


def host_ids(pid: int) -> tuple[int, int]:
    lines = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(lines["Uid"].split()[0]), int(lines["Gid"].split()[0])


def run_in(rig: CriRig, cid: str, *cmd: str) -> str:
    out, err, code = exec_sync(rig, cid, list(cmd))
    assert code == 0, (cmd, out, err)
    return out.decode()


def test_runtime_reports_user_namespaces(clean: CriRig) -> None:
    handlers = clean.json("info")["runtimeHandlers"]
    assert handlers and all(h["features"]["user_namespaces"] for h in handlers), handlers


def test_a_pod_with_its_own_user_namespace(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("userns", rig.tmp, linux=userns())
    p = rig.runp(pcfg)
    c = rig.run(p, pcfg, container("main", command=["sleep", "3600"], linux=userns()))
    pause, init = init_pid(rig, p, sandbox=True), init_pid(rig, c)

    # One namespace for the pod, mapped as asked; its processes run as the mapped ids on the host.
    assert os.stat(f"/proc/{pause}/ns/user").st_ino == os.stat(f"/proc/{init}/ns/user").st_ino
    assert os.stat(f"/proc/{init}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino
    assert run_in(rig, c, "cat", "/proc/self/uid_map").split() == ["0", str(HOST_ID), str(SIZE)]
    assert run_in(rig, c, "cat", "/proc/self/gid_map").split() == ["0", str(HOST_ID), str(SIZE)]
    assert host_ids(init) == (HOST_ID, HOST_ID) and host_ids(pause) == (HOST_ID, HOST_ID)

    # The image's files are root's inside (ID-mapped layers), and root writes anywhere in its
    # rootfs; what it writes is stored under its host ids.
    assert run_in(rig, c, "stat", "-c", "%u:%g", "/bin/busybox", "/etc", "/").split() == ["0:0"] * 3
    run_in(rig, c, "sh", "-c", "echo hi > /made && mkdir -p /etc/more && chown 1000:1000 /etc/more")
    assert run_in(rig, c, "stat", "-c", "%u:%g", "/made", "/etc/more").split() == ["0:0", "1000:1000"]
    made, more = os.stat(f"/proc/{init}/root/made"), os.stat(f"/proc/{init}/root/etc/more")
    assert (made.st_uid, made.st_gid) == (HOST_ID, HOST_ID)
    assert (more.st_uid, more.st_gid) == (HOST_ID + 1000, HOST_ID + 1000)
    # ... and the image itself is untouched: its layers on disk stay the host's root's.
    layers = list((rig.d.root / "snapshots").glob("**/snapshots/*/fs/bin/busybox"))
    assert layers and {os.stat(p).st_uid for p in layers} == {0}

    # A file of the host's (outside the mapping) is nobody's inside, and root cannot write it.
    out, _, code = exec_sync(rig, c, ["sh", "-c", "echo x >> /etc/hosts"])
    assert code != 0, out
    # A working dir the image lacks is made for the container's user, as its pod maps it.
    sec = userns()["security_context"] | {"run_as_user": {"value": 1000}}
    other = rig.run(p, pcfg, container("workdir", command=["sleep", "3600"], working_dir="/made/for/me",
                                       linux={"security_context": sec}))
    assert run_in(rig, other, "sh", "-c", "pwd; id -u; stat -c %u /made/for/me").split() == \
        ["/made/for/me", "1000", "1000"]
    assert os.stat(f"/proc/{init_pid(rig, other)}/root/made/for/me").st_uid == HOST_ID + 1000

    reported = rig.inspect(p)["status"]["linux"]["namespaces"]["options"]["usernsOptions"]
    assert reported["mode"] == "POD"
    assert reported["uids"] == reported["gids"] == [{"containerId": 0, "hostId": HOST_ID, "length": SIZE}]


def test_a_container_prints_its_mapping(clean: CriRig) -> None:
    """critest's spec: a container of the pod that runs `cat /proc/self/uid_map` logs the mapping."""
    rig = clean
    pcfg = pod("userns-log", rig.tmp, linux=userns())
    p = rig.runp(pcfg)
    c = rig.run(p, pcfg, container("cat", command=["cat", "/proc/self/uid_map"], linux=userns()))
    wait_until(lambda: rig.state(c) == "CONTAINER_EXITED", what="the container to exit")
    assert rig.status(c)["exitCode"] == 0
    log = Path(pcfg["log_directory"]) / "cat.log"
    assert log.read_text().split()[-3:] == ["0", str(HOST_ID), str(SIZE)]


@pytest.mark.parametrize("linux, message", [
    (userns(mode=1), "CONTAINER is not supported"),
    (userns(mode=3), "TARGET is not supported"),
    (userns(uids=[{"container_id": 0, "host_id": HOST_ID, "length": SIZE},
                  {"container_id": 0, "host_id": 2 * HOST_ID, "length": SIZE}]), "want exactly one mapping"),
    (userns(uids=[{"container_id": 1, "host_id": HOST_ID, "length": SIZE}]), "must start at container id 0"),
    (userns(gids=[{"container_id": 0, "host_id": 4294967000, "length": SIZE}]), "within 32-bit ids"),
    (userns(gids=[]), "want exactly one mapping, got 0"),
    ({**userns(), "security_context": {"namespace_options": {
        "network": 2, **userns()["security_context"]["namespace_options"]}}}, "cannot use the host's"),
])
def test_what_cannot_be_a_pod_user_namespace_is_refused(clean: CriRig, linux: dict[str, Any], message: str) -> None:
    err = clean.fails("runp", clean.config_file(pod("bad-userns", clean.tmp, linux=linux)))
    assert message in err and "InvalidArgument" in err, err
    assert clean.json("pods")["items"] == []


def test_a_container_must_share_its_pods_user_namespace(clean: CriRig) -> None:
    rig = clean
    pcfg = pod("host-users", rig.tmp)
    p = rig.runp(pcfg)
    res = rig.crictl("create", p, rig.config_file(container("own", command=["sleep", "60"], linux=userns())),
                     rig.config_file(pcfg))
    assert res.returncode != 0 and "must be the pod's" in res.stderr, res.stderr
    assert rig.json("ps", "-a")["containers"] == []


def test_a_user_namespace_pod_outlives_a_daemon_kill(clean: CriRig) -> None:
    """kill -9 of the daemon: the pod keeps its namespace; the new daemon reports it, execs in
    it, and a container created after the restart joins it with ID-mapped layers."""
    rig = clean
    pcfg = pod("userns-survivor", rig.tmp, linux=userns())
    p = rig.runp(pcfg)
    first = rig.run(p, pcfg, container("first", command=["sleep", "3600"], linux=userns()))
    assert rig.d.stop(9) in (0, -9)
    rig.d = start_daemon(rig.d.base, netns=rig.netns)
    assert rig.inspect(p)["status"]["linux"]["namespaces"]["options"]["usernsOptions"]["mode"] == "POD"
    assert run_in(rig, first, "cat", "/proc/self/uid_map").split() == ["0", str(HOST_ID), str(SIZE)]
    late = rig.run(p, pcfg, container("late", command=["sleep", "3600"], linux=userns()))
    assert os.stat(f"/proc/{init_pid(rig, late)}/ns/user").st_ino == \
        os.stat(f"/proc/{init_pid(rig, first)}/ns/user").st_ino
    assert run_in(rig, late, "stat", "-c", "%u", "/bin/busybox").strip() == "0"
    assert host_ids(init_pid(rig, late)) == (HOST_ID, HOST_ID)
