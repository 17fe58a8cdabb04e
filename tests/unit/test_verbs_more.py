"""The parsing and formatting of dock pause|unpause|update|diff|export|history, without a daemon."""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dock.commands import diff, export, history, pause, update
from dock.rootfs import in_tree
from dockyard_common import restartpolicy
from dockyard_common.errors import InvalidArgument
from dockyard_common.types import Container

# -- pause ------------------------------------------------------------------------------------------


def test_pause_and_unpause_refuse_what_docker_refuses() -> None:
    assert pause.refusal("pause", "web", "running") is None
    assert pause.refusal("unpause", "web", "paused") is None
    assert str(pause.refusal("pause", "web", "paused")) == "cannot pause container web: it is already paused: " \
                                                           "failed precondition"
    for state in ("created", "exited", "unknown"):
        assert "it is not running" in str(pause.refusal("pause", "web", state))
    for state in ("created", "running", "exited"):
        assert "cannot unpause container web: it is not paused" in str(pause.refusal("unpause", "web", state))


# -- update -----------------------------------------------------------------------------------------


def _args(**given: object) -> argparse.Namespace:
    base: dict[str, object] = {"memory": None, "memory_swap": None, "cpus": None, "cpu_shares": None,
                               "cpuset_cpus": "", "pids_limit": None, "restart": None}
    return argparse.Namespace(**(base | given))


def test_update_flags_parse_once_and_need_one() -> None:
    changes = update.parse_changes(_args(memory="1g", memory_swap="-1", cpuset_cpus="0-1", restart="on-failure:2"))
    assert (changes.memory, changes.memory_swap, changes.cpuset_cpus) == (1 << 30, -1, "0-1")
    assert changes.restart == restartpolicy.Policy(restartpolicy.Name.ON_FAILURE, 2) and changes.resources
    assert not update.parse_changes(_args(restart="no")).resources
    with pytest.raises(InvalidArgument, match="give at least one of"):
        update.parse_changes(_args())
    for bad, words in (({"memory": "x"}, "invalid size 'x'"), ({"cpuset_cpus": "a"}, "--cpuset-cpus 'a'"),
                       ({"restart": "maybe"}, "invalid restart policy")):
        with pytest.raises(InvalidArgument, match=words):
            update.parse_changes(_args(**bad))


def test_update_sets_the_spec_and_sends_whole_sections() -> None:
    spec = {"linux": {"resources": {"memory": {"limit": 64 << 20, "swap": 256 << 20}, "devices": [{"allow": False}],
                                    "cpu": {"shares": 1024}}}}
    sent = update.apply_resources(spec, update.Changes(memory=128 << 20, cpus=1.5, pids_limit=10))
    assert sent == {"memory": {"limit": 128 << 20, "swap": 256 << 20},  # the swap it must stay under, with it
                    "cpu": {"shares": 1024, "quota": 150000, "period": 100000}, "pids": {"limit": 10}}
    resources = spec["linux"]["resources"]
    assert resources["memory"] == {"limit": 128 << 20, "swap": 256 << 20} and resources["devices"] == [{"allow": False}]
    assert update.apply_resources(spec, update.Changes(cpu_shares=512, cpuset_cpus="1")) == {
        "cpu": {"shares": 512, "quota": 150000, "period": 100000, "cpus": "1"}}
    sent["cpu"]["shares"] = 7  # a copy: the spec is not changed through it
    assert resources["cpu"]["shares"] == 512  # type: ignore[index]


def test_update_refuses_limits_that_do_not_fit() -> None:
    spec = {"linux": {"resources": {"memory": {"limit": 64 << 20, "swap": 128 << 20}}}}
    with pytest.raises(InvalidArgument, match="above the container's memory\\+swap limit"):
        update.apply_resources(spec, update.Changes(memory=256 << 20))
    assert update.apply_resources(spec, update.Changes(memory=256 << 20, memory_swap=-1))["memory"] == {
        "limit": 256 << 20, "swap": -1}
    with pytest.raises(InvalidArgument, match="--memory-swap needs --memory"):
        update.apply_resources({}, update.Changes(memory_swap=1 << 30))
    with pytest.raises(InvalidArgument, match="want 2 to 262144"):
        update.apply_resources({}, update.Changes(cpu_shares=1))
    with pytest.raises(InvalidArgument, match="pids limit 0"):
        update.apply_resources({}, update.Changes(pids_limit=0))


def test_update_restart_labels() -> None:
    c = Container("web", "io.containerd.runc.v2", None, labels={"app": "x", restartpolicy.POLICY_LABEL: "always",
                                                                    restartpolicy.STATUS_LABEL: "running"})
    paths = [f"labels.{restartpolicy.POLICY_LABEL}", f"labels.{restartpolicy.STATUS_LABEL}"]
    assert update.restart_labels(c, "web", restartpolicy.parse("no")) == ({"app": "x"}, paths)
    labels, _ = update.restart_labels(c, "web", restartpolicy.parse("on-failure:3"))
    assert labels == {"app": "x", restartpolicy.POLICY_LABEL: "on-failure:3", restartpolicy.STATUS_LABEL: "running"}
    removed = Container("tmp", "io.containerd.runc.v2", None, labels={"dockyard.auto-remove": "true"})
    with pytest.raises(InvalidArgument, match="removed when it exits"):
        update.restart_labels(removed, "tmp", restartpolicy.parse("always"))
    assert update.restart_labels(removed, "tmp", restartpolicy.parse("no"))[0] == {"dockyard.auto-remove": "true"}


# -- diff -------------------------------------------------------------------------------------------


def test_diff_entries_and_their_order() -> None:
    assert diff.entry_change("etc/", True) == diff.Change("/etc", "C")
    assert diff.entry_change("./new", False) == diff.Change("/new", "A")
    assert diff.entry_change("etc/.wh.group", False) == diff.Change("/etc/group", "D")
    assert diff.entry_change(".wh.home", False) == diff.Change("/home", "D")
    assert diff.entry_change("tmp/.wh..wh..opq", False) is None
    changes = [diff.Change(p, "A") for p in ("/etc/x", "/etc-old", "/etc", "/a")]
    assert [c.path for c in diff.sort_changes(changes)] == ["/a", "/etc", "/etc-old", "/etc/x"]  # bytewise, as Go


def test_diff_hides_the_runtimes_mount_points() -> None:
    spec = {"mounts": [{"destination": "/run"}, {"destination": "/srv/x/y"}, {"destination": "//dev"}, {"x": 1}, 7]}
    assert diff.mount_points(spec) == {"/run", "/srv/x/y", "/srv/x", "/srv", "/dev"}
    assert diff.mount_points(None) == set() and diff.mount_points({"mounts": "no"}) == set()


def _layer(*entries: tuple[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def test_diff_of_a_layer_without_an_image_adds_everything() -> None:
    layer = _layer(("run/", b""), ("srv/", b""), ("srv/file", b"x"), ("etc/", b""), ("etc/.wh.motd", b""))
    assert diff.layer_changes(layer, [], {"/run", "/srv"}) == [
        diff.Change("/etc", "A"), diff.Change("/etc/motd", "D"), diff.Change("/srv/file", "A")]


def test_diff_memory_grows_with_the_changes_not_the_tar_entries() -> None:
    """tarfile keeps every entry it has read (~370 bytes each): for a container that made a
    million files, `dock diff` held 370 MB of them besides its list of changes."""
    count = 20_000
    layer = _layer(("srv/", b""), *((f"srv/f{i}", b"") for i in range(count)))
    tracemalloc.start()
    try:
        changes = diff.layer_changes(layer, [])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(changes) == count + 1
    assert peak / count < 400, f"{peak / count:.0f} bytes an entry"  # ~220 now, ~600 when kept


def test_in_tree_follows_no_symlink(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root")
    (tmp_path / "bin").symlink_to("/usr/bin")  # a symlink on the way: the name past it is not in the tree
    assert in_tree(tmp_path, "etc/passwd") and in_tree(tmp_path, "etc/") and in_tree(tmp_path, "./bin")
    assert not in_tree(tmp_path, "bin/env") and not in_tree(tmp_path, "etc/passwd/x")
    assert not in_tree(tmp_path, "etc/../etc/passwd") and not in_tree(tmp_path, "nope") and not in_tree(tmp_path, "")


# -- export -----------------------------------------------------------------------------------------


def test_export_writes_names_modes_owners_and_links(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "conf").write_text("a=1\n")
    os.chmod(root / "etc" / "conf", 0o640)
    os.link(root / "etc" / "conf", root / "hard")
    (root / "soft").symlink_to("etc/conf")
    out = io.BytesIO()
    export.write_tree(root, out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["etc", "etc/conf", "hard", "soft"]
    conf, hard, soft = members[1], members[2], members[3]
    assert conf.mode == 0o640 and conf.uid == os.getuid() and conf.uname == "" and conf.mtime == int(conf.mtime)
    assert hard.islnk() and hard.linkname == "etc/conf"
    assert soft.issym() and soft.linkname == "etc/conf"


# -- history ----------------------------------------------------------------------------------------


def test_history_newest_first_with_the_layers_sizes() -> None:
    config = {"history": [
        {"created": "2024-01-02T03:04:05.123456789Z", "created_by": "ADD rootfs.tar /"},
        {"created": "2024-01-03T00:00:00Z", "created_by": "CMD [\"sh\"]", "empty_layer": True},
        {"created": "not a time", "created_by": "RUN\tapk add x", "comment": "buildkit"},
        "junk"]}
    entries = history.history_entries(config, "sha256:" + "ab" * 32, [100, 200])
    assert [e.created_by for e in entries] == ["", "RUN\tapk add x", "CMD [\"sh\"]", "ADD rootfs.tar /"]
    assert [e.size for e in entries] == [0, 200, 0, 100]
    assert [e.id for e in entries] == ["sha256:" + "ab" * 32, "<missing>", "<missing>", "<missing>"]
    assert entries[3].created == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert entries[1].created is None and entries[1].comment == "buildkit" and entries[2].empty_layer
    assert history.history_entries({}, "sha256:x", [5]) == []


def test_history_text() -> None:
    long = "/bin/sh -c apt-get update && apt-get install -y curl ca-certificates"
    assert history.created_by_text(long, truncate=True) == long[:44] + "…"
    assert history.created_by_text(long, truncate=False) == long
    assert history.created_by_text("RUN\ta\nb", truncate=True) == "RUN a b"
    assert history.short_image_id("sha256:" + "0123456789abcdef" * 4) == "0123456789ab"
    assert history.short_image_id("<missing>") == "<missing>"


def test_prune_label_filters() -> None:
    from dock.commands.prune import label_matcher

    match = label_matcher(["label=team", "label!=keep=yes"])
    assert match({"team": "a"}) and match({"team": "a", "keep": "no"})
    assert not match({}) and not match({"team": "a", "keep": "yes"})
    assert label_matcher([])({})
    with pytest.raises(InvalidArgument, match="invalid filter"):
        label_matcher(["until=1h"])
