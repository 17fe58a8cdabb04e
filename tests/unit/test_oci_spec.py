"""dock/oci.py: the spec containerd's client would build, from defaults, image config and options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dock import oci
from dock.oci import ImageConfig, RootFS, SpecOptions
from dockyard_common.errors import InvalidArgument, NotFound

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
broken line
app:x:1000:1001:App:/home/app:/bin/sh
"""
GROUP = """root:x:0:
wheel:x:10:root,app
staff:x:50:app
appgrp:x:1001:app
audio:x:29:
"""


@pytest.fixture
def root(tmp_path: Path) -> RootFS:
    etc = tmp_path / "rootfs" / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    return RootFS(tmp_path / "rootfs")


@pytest.fixture
def empty_root(tmp_path: Path) -> RootFS:
    (tmp_path / "empty").mkdir()
    return RootFS(tmp_path / "empty")


def test_default_spec_matches_containerd() -> None:
    spec = oci.default_spec("ns1", "web")
    assert spec["ociVersion"] == "1.0.2-dev"
    assert spec["root"] == {"path": "rootfs"}
    assert spec["linux"]["cgroupsPath"] == "/ns1/web"
    assert [n["type"] for n in spec["linux"]["namespaces"]] == ["pid", "ipc", "uts", "mount", "network"]
    proc = spec["process"]
    assert proc["cwd"] == "/" and proc["noNewPrivileges"] is True and proc["user"] == {"uid": 0, "gid": 0}
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    caps = proc["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"] == oci.DEFAULT_CAPABILITIES
    assert len(oci.DEFAULT_CAPABILITIES) == 14 and "CAP_SYS_ADMIN" not in oci.DEFAULT_CAPABILITIES
    assert [m["destination"] for m in spec["mounts"]] == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
                                                          "/sys", "/run"]
    assert "ro" in spec["mounts"][5]["options"]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"] and "/proc/sys" in spec["linux"]["readonlyPaths"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    json.dumps(spec)  # plain JSON all the way down


def test_default_specs_do_not_share_lists() -> None:
    a, b = oci.default_spec("n", "a"), oci.default_spec("n", "b")
    a["mounts"][0]["options"].append("x")
    a["process"]["capabilities"]["bounding"].pop()
    assert "x" not in b["mounts"][0]["options"] and len(b["process"]["capabilities"]["bounding"]) == 14
    assert "x" not in oci.DEFAULT_MOUNTS[0]["options"]


def test_default_unix_devices() -> None:
    spec = oci.default_spec("n", "a")
    oci.with_default_unix_devices(spec)
    devices = spec["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"} in devices
    assert {"allow": True, "type": "c", "major": 136, "access": "rwm"} in devices  # every pty
    assert len(devices) == 10


@pytest.mark.parametrize(("defaults", "overrides", "want"), [
    (["A=1", "B=2"], ["B=3", "C=4"], ["A=1", "B=3", "C=4"]),
    (["A=1", "B=2"], ["A"], ["B=2"]),                    # no '=': unset
    (["A=1"], ["Z"], ["A=1"]),                           # unsetting what is not there
    ([], ["X=a=b"], ["X=a=b"]),                          # only the first '=' splits
    (["A=1"], ["A=", "A=2"], ["A=2"]),                   # the last override wins
])
def test_replace_or_append_env(defaults: list[str], overrides: list[str], want: list[str]) -> None:
    assert oci.replace_or_append_env(defaults, overrides) == want


def test_image_config_env_args_cwd(empty_root: RootFS) -> None:
    spec = oci.default_spec("n", "a")
    oci.with_env(spec, ["FOO=user", "EXTRA=1"])
    cfg = ImageConfig(env=["PATH=/img/bin", "FOO=image"], entrypoint=["/entry"], cmd=["--serve"],
                      working_dir="/srv")
    oci.with_image_config(spec, cfg, empty_root)
    proc = spec["process"]
    assert proc["env"] == ["PATH=/img/bin", "FOO=user", "EXTRA=1"]  # the user's env wins over the image's
    assert proc["args"] == ["/entry", "--serve"]
    assert proc["cwd"] == "/srv"
    oci.with_image_config(spec, cfg, empty_root, ["--debug"])
    assert spec["process"]["args"] == ["/entry", "--debug"]  # args replace Cmd, after the Entrypoint


def test_image_without_env_gets_the_default_path(empty_root: RootFS) -> None:
    spec = oci.default_spec("n", "a")
    oci.with_image_config(spec, ImageConfig(cmd=["sh"]), empty_root)
    assert spec["process"]["env"] == oci.DEFAULT_ENV and spec["process"]["cwd"] == "/"
    assert spec["process"]["args"] == ["sh"]


def test_image_config_from_json() -> None:
    cfg = ImageConfig.from_json({"User": "app", "Env": ["A=1"], "Entrypoint": None, "Cmd": ["sh"],
                                 "WorkingDir": "/w", "StopSignal": "SIGQUIT", "Labels": {"k": "v"}})
    assert cfg == ImageConfig("app", ["A=1"], [], ["sh"], "/w", "SIGQUIT", {"k": "v"})
    with pytest.raises(InvalidArgument, match="Cmd"):
        ImageConfig.from_json({"Cmd": "sh"})


def test_root_user_gets_groups_listing_root(root: RootFS) -> None:
    spec = oci.default_spec("n", "a")
    oci.with_image_config(spec, ImageConfig(cmd=["sh"]), root)
    assert spec["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0, 10]}


def test_without_etc_files_root_gets_gid_zero(empty_root: RootFS) -> None:
    spec = oci.default_spec("n", "a")
    oci.with_image_config(spec, ImageConfig(cmd=["sh"]), empty_root)
    assert spec["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}  # what ctr sends for busybox


@pytest.mark.parametrize(("userstr", "uid", "gid", "extra"), [
    ("app", 1000, 1001, [10, 50, 1001]),        # name -> passwd entry; the groups listing app, in file order
    ("1000", 1000, 1001, [10, 50, 1001]),       # listed uid -> its passwd gid
    ("4242", 4242, 0, [0]),                     # unlisted uid: gid 0, no groups
    ("1000:50", 1000, 50, [10, 50, 1001]),      # numbers are taken as they are
    ("app:audio", 1000, 29, [29, 10, 50, 1001]),  # the primary group goes first when not listed
    ("daemon:staff", 1, 50, [50]),
    ("7:wheel", 7, 10, [10]),
])
def test_users(root: RootFS, userstr: str, uid: int, gid: int, extra: list[int]) -> None:
    spec = oci.default_spec("n", "a")
    oci.with_image_config(spec, ImageConfig(cmd=["sh"], user=userstr), root)
    user = spec["process"]["user"]
    assert (user["uid"], user["gid"]) == (uid, gid)
    assert user["additionalGids"] == extra


def test_user_option_overrides_image_user(root: RootFS) -> None:
    spec = oci.build_spec("n", "a", ImageConfig(cmd=["sh"], user="app"), SpecOptions(user="daemon"), root)
    assert spec["process"]["user"] == {"uid": 1, "gid": 1, "additionalGids": [1]}


@pytest.mark.parametrize(("userstr", "error", "match"), [
    ("nobody", NotFound, "user 'nobody'"),
    ("app:nogroup", NotFound, "group 'nogroup'"),
    ("a:b:c", InvalidArgument, "invalid USER"),
    (":5", InvalidArgument, "invalid USER"),
])
def test_bad_users(root: RootFS, userstr: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        oci.with_user(oci.default_spec("n", "a"), userstr, root)


def test_user_names_need_an_etc_passwd(empty_root: RootFS) -> None:
    with pytest.raises(NotFound, match="no /etc/passwd"):
        oci.with_user(oci.default_spec("n", "a"), "app", empty_root)
    with pytest.raises(NotFound, match="no /etc/passwd"):
        oci.with_user(oci.default_spec("n", "a"), "app", None)
    spec = oci.default_spec("n", "a")
    oci.with_user(spec, "5:6", None)  # numbers need no files
    assert spec["process"]["user"] == {"uid": 5, "gid": 6, "additionalGids": [6]}


def test_lookups_stay_inside_the_root(tmp_path: Path) -> None:
    """An image's /etc/passwd that is a symlink to an absolute path reads the image's file there."""
    rootdir = tmp_path / "r"
    (rootdir / "etc").mkdir(parents=True)
    (rootdir / "data").mkdir()
    (rootdir / "data" / "passwd").write_text("inside:x:77:77::/:/bin/sh\n")
    (rootdir / "etc" / "passwd").symlink_to("/data/passwd")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "group").write_text("host:x:5:\n")
    (rootdir / "etc" / "group").symlink_to("../../../../outside/group")  # climbs no higher than the root
    r = RootFS(rootdir)
    assert r.read_text("/etc/passwd") == "inside:x:77:77::/:/bin/sh\n"
    assert r.groups() is None  # not the file outside the root
    spec = oci.default_spec("n", "a")
    oci.with_user(spec, "inside", r)
    assert spec["process"]["user"]["uid"] == 77


def test_symlink_loops_are_refused(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").symlink_to("passwd")
    with pytest.raises(InvalidArgument, match="too many levels"):
        RootFS(tmp_path).users()


@pytest.mark.parametrize(("text", "want"), [
    ("type=bind,src=/a,dst=/b,options=rbind:ro",
     {"type": "bind", "source": "/a", "destination": "/b", "options": ["rbind", "ro"]}),
    ("src=/a,dst=/b,options=ro", {"type": "bind", "source": "/a", "destination": "/b", "options": ["rbind", "ro"]}),
    ("type=tmpfs,destination=/t,options=size=1m",
     {"type": "tmpfs", "source": "tmpfs", "destination": "/t", "options": ["size=1m"]}),
    ('"src=/with,comma",dst=/x', {"type": "bind", "source": "/with,comma", "destination": "/x", "options": ["rbind"]}),
])
def test_parse_mount(text: str, want: dict[str, object]) -> None:
    assert oci.parse_mount(text) == want


@pytest.mark.parametrize("text", ["src=/a", "src=a,dst=/b", "src=/a,dst=b", "src=/a,dst=/b,color=red", "junk"])
def test_parse_mount_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument):
        oci.parse_mount(text)


@pytest.mark.parametrize(("text", "want"), [
    ("1024", 1024), ("1k", 1024), ("512m", 512 << 20), ("1g", 1 << 30), ("1G", 1 << 30), ("1.5g", 3 << 29),
    ("64KiB", 64 << 10), ("2mb", 2 << 20), ("1t", 1 << 40),
])
def test_parse_bytes(text: str, want: int) -> None:
    assert oci.parse_bytes(text) == want


@pytest.mark.parametrize("text", ["", "g", "-1", "0", "1x", "1.2.3m", "ten"])
def test_parse_bytes_refuses(text: str) -> None:
    with pytest.raises(InvalidArgument):
        oci.parse_bytes(text)


def test_build_spec_with_every_option(root: RootFS) -> None:
    opts = SpecOptions(args=["echo", "hi"], env=["A=1"], cwd="/tmp", hostname="box", tty=True, net="host",
                       memory=1 << 30, cpus=0.5, pids_limit=64,
                       mounts=[oci.parse_mount("src=/srv,dst=/data,options=ro")], annotations={"team": "red"})
    spec = oci.build_spec("ns", "web", ImageConfig(entrypoint=["/e"], cmd=["x"], env=["B=2"]), opts, root,
                          host_hostname="hosty")
    proc = spec["process"]
    assert proc["args"] == ["/e", "echo", "hi"]
    assert proc["env"] == ["B=2", "A=1", "TERM=xterm", "HOSTNAME=hosty"]
    assert proc["cwd"] == "/tmp" and proc["terminal"] is True
    assert spec["hostname"] == "box"
    assert "network" not in [n["type"] for n in spec["linux"]["namespaces"]]
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests[-3:] == ["/data", "/etc/hosts", "/etc/resolv.conf"]
    res = spec["linux"]["resources"]
    assert res["memory"] == {"limit": 1 << 30}
    assert res["cpu"] == {"quota": 50000, "period": 100000}
    assert res["pids"] == {"limit": 64}
    assert spec["annotations"] == {"team": "red"}


def test_build_spec_defaults_keep_a_network_namespace(empty_root: RootFS) -> None:
    spec = oci.build_spec("ns", "web", ImageConfig(cmd=["sh"]), SpecOptions(), empty_root)
    assert "network" in [n["type"] for n in spec["linux"]["namespaces"]]
    assert spec["hostname"] == "web" and "terminal" not in spec["process"]  # the short id, as Docker
    assert "resources" in spec["linux"] and "memory" not in spec["linux"]["resources"]


@pytest.mark.parametrize(("opts", "match"), [
    (SpecOptions(net="bridge"), "network mode"),
    (SpecOptions(cwd="relative"), "absolute"),
    (SpecOptions(memory=0), "memory"),
    (SpecOptions(cpus=0), "cpus"),
    (SpecOptions(pids_limit=0), "pids"),
])
def test_build_spec_refuses_bad_options(empty_root: RootFS, opts: SpecOptions, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        oci.build_spec("ns", "web", ImageConfig(cmd=["sh"]), opts, empty_root)


def test_build_spec_needs_a_command(empty_root: RootFS) -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        oci.build_spec("ns", "web", ImageConfig(), SpecOptions(), empty_root)


def test_exec_process_copies_the_container_process(empty_root: RootFS) -> None:
    spec = oci.build_spec("ns", "web", ImageConfig(cmd=["sh"], env=["A=1"]), SpecOptions(cwd="/srv"), empty_root)
    proc = oci.exec_process(spec, ["ls", "-l"], tty=True, env=["B=2"])
    assert proc["args"] == ["ls", "-l"] and proc["terminal"] is True and proc["cwd"] == "/srv"
    assert proc["env"] == ["A=1", "TERM=xterm", "B=2"]
    assert proc["capabilities"] == spec["process"]["capabilities"] and proc["user"] == spec["process"]["user"]
    assert spec["process"]["args"] == ["sh"]  # the container's own process is untouched
    with pytest.raises(InvalidArgument):
        oci.exec_process(spec, [])
