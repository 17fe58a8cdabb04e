"""`--format` Go templates as Docker users script them, against a real dockyardd: ps, images,
inspect, volumes, version, info, stats, system df, history, events; `table TEMPLATE` headers
aligned as Docker's tabwriter; bad templates as one `dock: template: ...` line; `--format json`
and `table` unchanged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.daemon import REPO
from tests.dockcli import DockCLI
from tests.waiting import wait_until

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="containers need root")]


@pytest.fixture
def two(dock_cli: DockCLI, tmp_path: Path) -> DockCLI:
    """A running container with a label and a bind mount, and a created one."""
    src = tmp_path / "share"
    src.mkdir()
    dock_cli.ok("run", "-d", "--name", "tpl-web", "--label", "app=web", "-v", f"{src}:/mnt:ro", "busybox",
                "sleep", "600")
    dock_cli.ok("create", "--name", "tpl-made", "busybox", "true")
    return dock_cli


def test_ps_plain_template_one_line_per_container_no_header(two: DockCLI) -> None:
    out = two.ok("ps", "--format", r"{{.Names}}\t{{.State}}")
    assert out == "tpl-web\trunning\n"
    out = two.ok("ps", "-a", "--format", '{{.Names}} [{{.Label "app"}}] {{.Status}}')
    lines = sorted(out.splitlines())
    assert lines[0] == "tpl-made [] Created"
    assert lines[1].startswith("tpl-web [web] Up ")


def test_ps_global_format_and_the_fields(two: DockCLI) -> None:
    full = {r["id"]: r for r in two.json("ps", "-a")}
    out = two.ok("--format", "{{.ID}}|{{.Image}}|{{.Command}}|{{.RunningFor}}|{{.Labels}}|{{.Mounts}}|{{.Size}}",
                 "ps")
    [line] = out.splitlines()
    cid, image, command, running_for, labels, mounts, size = line.split("|")
    assert cid == "tpl-web" and image == "busybox:latest" and command == '"sleep 600"'
    assert running_for.endswith(" ago") and "app=web" in labels.split(",") and size == "0B"
    assert mounts.startswith("/") and full["tpl-web"]["state"] == "running"
    created_at = two.ok("ps", "--format", "{{.CreatedAt}}").strip()
    assert len(created_at.split()) == 4 and created_at.split()[0].count("-") == 2  # 2024-05-01 10:00:00 +0000 UTC


def test_ps_control_flow_and_json(two: DockCLI) -> None:
    out = two.ok("ps", "-a", "--format", '{{if eq .State "running"}}{{.Names}} is up{{else}}{{.Names}}: '
                                        '{{lower .Status}}{{end}}')
    assert sorted(out.splitlines()) == ["tpl-made: created", "tpl-web is up"]
    rows = [json.loads(line) for line in two.ok("ps", "-a", "--format", "{{json .}}").splitlines()]
    assert {r["Names"] for r in rows} == {"tpl-web", "tpl-made"}
    assert "Label" not in rows[0] and rows[0]["ID"]


def same_moment(cli: DockCLI, first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, str]:
    """`first`'s and `second`'s output from a moment when no relative time ("Up 1 second",
    "2 seconds ago") changed: `second` is taken before and after `first` until both agree. The
    texts only move forward, so a `first` between two equal `second`s saw the same times."""
    for _ in range(10):
        before = cli.ok(*second)
        out = cli.ok(*first)
        if cli.ok(*second) == before:
            return out, before
    raise AssertionError(f"{' '.join(second)} never held still for one call")


def test_ps_table_template_header_and_alignment(two: DockCLI) -> None:
    out = two.ok("ps", "-a", "--format", r"table {{.ID}}\t{{.Names}}\t{{.State}}")
    # Docker's tabwriter: a column is its widest cell + 3, at least 10; the last one is not padded
    assert sorted(out.splitlines()) == ["CONTAINER ID   NAMES      STATE",
                                        "tpl-made       tpl-made   created",
                                        "tpl-web        tpl-web    running"]
    names = two.ok("ps", "--format", "table {{.Names}}").splitlines()
    assert names == ["NAMES", "tpl-web"]
    # `table` alone, and json, are what they were
    table, plain = same_moment(two, ("ps", "--format", "table"), ("ps",))
    assert table == plain
    assert isinstance(two.json("ps", "-a"), list)


def test_inspect_template_docker_paths_and_ours(two: DockCLI, tmp_path: Path) -> None:
    out = two.ok("inspect", "--format", '{{.State.Status}} {{.Name}} {{.Id}} {{index .Config.Labels "app"}} '
                                        "{{.state.status}} {{.State.Running}} {{.State.Pid | printf \"%T\"}}",
                 "tpl-web")
    status, name, cid, app, ours, running, _ = out.split(" ", 6)
    assert (status, name, cid, app, ours, running) == ("running", "/tpl-web", "tpl-web", "web", "running", "true")
    out = two.ok("inspect", "--format", "{{range .Mounts}}{{.Source}}:{{.Destination}}:{{.RW}} "
                 "{{end}}", "tpl-web")
    assert out == f"{tmp_path / 'share'}:/mnt:false \n"
    assert two.ok("inspect", "-f", "{{.Name}}", "tpl-web") == "/tpl-web\n"  # Docker's -f
    out = two.ok("inspect", "--format", "{{.Name}} {{.State.Status}}", "tpl-web", "tpl-made")
    assert out == "/tpl-web running\n/tpl-made created\n"
    res = two.dock("inspect", "--format", "{{.Name}}", "tpl-web", "nope")
    assert res.returncode == 1 and res.stdout == "/tpl-web\n" and "nope" in res.stderr


def test_images_template(dock_cli: DockCLI) -> None:
    out = dock_cli.ok("images", "ls", "--format", "{{.Repository}}:{{.Tag}}")
    assert "busybox:latest" in out.splitlines()
    out = dock_cli.ok("image", "ls", "--format", r"table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.Size}}")
    lines = out.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "SIZE"]
    row = next(line for line in lines if line.startswith("busybox "))
    _repo, tag, short_id, size = row.split()
    assert tag == "latest" and len(short_id) == 12 and size[-1] == "B"
    assert lines[0].index("TAG") == row.index("latest")


def test_volumes_version_info_network(dock_cli: DockCLI) -> None:
    dock_cli.ok("volume", "create", "--label", "team=a", "tplvol")
    try:
        assert "tplvol a" in dock_cli.ok("volume", "ls", "--format", '{{.Name}} {{.Label "team"}}').splitlines()
        assert dock_cli.ok("volume", "inspect", "--format", "{{.Name}} {{.Labels.team}} {{.Driver}}", "tplvol") == \
            "tplvol a local\n"
    finally:
        dock_cli.ok("volume", "rm", "tplvol")
    server = dock_cli.json("version")["server"]
    assert dock_cli.ok("version", "--format", "{{.Server.Version}}") == f"{server['version']}\n"
    info = dock_cli.json("info")
    assert dock_cli.ok("info", "--format", "{{.DockerRootDir}} {{.root}}") == f"{info['root']} {info['root']}\n"
    dock_cli.ok("network", "ls", "--format", "{{.Name}} {{.Driver}}")


@pytest.mark.parametrize(("args", "words"), [
    (["ps", "--format", "{{.Names"], "dock: template: 1:1: unclosed action"),
    (["ps", "--format", "{{nofunc .Names}}"], "function 'nofunc' not defined"),
    (["--format", "{{if .Names}}x", "ps"], "unexpected EOF"),
    (["inspect", "--format", "{{.State.Status", "x"], "unclosed action"),
    (["--format", "{{.Name}}", "namespaces", "ls"], "takes --format table or json, not a template"),
    (["--format", "yaml", "ps"], "want table, json, or a Go template"),
])
def test_bad_templates_one_line_exit_1(dock_cli: DockCLI, args: list[str], words: str) -> None:
    dock_cli.fails(*args, words=words)


def test_execution_errors_are_one_line(two: DockCLI) -> None:
    two.fails("ps", "--format", "{{.Names.Nope}}", words="can't evaluate field Nope in type string")
    two.fails("inspect", "--format", "{{index .Args 99}}", "tpl-web", words="index out of range")


# -- stats, system df, history, events: Docker's fields ----------------------------------------------


def test_stats_no_stream_template_and_table(two: DockCLI) -> None:
    out = two.ok("stats", "--no-stream", "--format", "{{.Container}}|{{.Name}}|{{.ID}}|{{.CPUPerc}}|{{.MemUsage}}|"
                 "{{.MemPerc}}|{{.NetIO}}|{{.BlockIO}}|{{.PIDs}}")
    [line] = out.splitlines()  # the running one only
    container, name, cid, cpu, mem, mem_perc, net, block, pids = line.split("|")
    assert (container, name, cid) == ("tpl-web", "tpl-web", "tpl-web")
    assert cpu.endswith("%") and mem_perc.endswith("%") and pids == "1"
    used, limit = mem.split(" / ")
    assert used.endswith("B") and limit.endswith("iB")  # Docker's BytesSize: binary units
    assert (net == "--" or net.count(" / ") == 1) and block.count(" / ") == 1  # "--": no network of its own
    # named as typed (an id prefix stays a prefix in .Container), and a table with Docker's headers
    out = two.ok("stats", "--no-stream", "--format", r"table {{.Container}}\t{{.Name}}\t{{.PIDs}}", "tpl-w")
    assert out.splitlines() == ["CONTAINER   NAME      PIDS", "tpl-w       tpl-web   1"]
    assert two.ok("--format", "{{.Name}}", "stats", "--no-stream") == "tpl-web\n"  # the global --format too
    assert isinstance(json.loads(two.ok("stats", "--no-stream", "--format", "json").splitlines()[0]), dict)


def test_stats_streams_a_template(two: DockCLI) -> None:
    """Streaming with a template, as Docker: a block per interval (into a pipe, one after another)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": two.address}
    env.pop("DOCK_DEBUG", None)
    with subprocess.Popen([sys.executable, "-m", "dock.cli", "stats", "--interval", "0.2", "--format",
                           "{{.Name}} {{.PIDs}}", "tpl-web"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, cwd=REPO) as proc:
        try:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]  # three blocks of the one container
        finally:
            proc.kill()  # by PID
            proc.wait(30)
    assert lines == ["tpl-web 1\n"] * 3, lines


def test_system_df_template_and_table(dock_cli: DockCLI) -> None:
    out = dock_cli.ok("system", "df", "--format", "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}|{{.Reclaimable}}")
    rows = {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines()}
    assert list(rows) == ["Images", "Containers", "Local Volumes", "Build Cache"]
    summary = {s["type"]: s for s in dock_cli.json("system", "df")["summary"]}
    for kind, (total, active, size, reclaimable) in rows.items():
        assert (int(total), int(active)) == (summary[kind]["total"], summary[kind]["active"])
        assert size.endswith("B") and reclaimable.split(" ")[0].endswith("B")
    assert "%" in rows["Images"][3] and "%" not in rows["Build Cache"][3]  # Docker's share, none for the cache
    lines = dock_cli.ok("system", "df", "--format", r"table {{.Type}}\t{{.TotalCount}}\t{{.Reclaimable}}").splitlines()
    assert lines[0].split() == ["TYPE", "TOTAL", "RECLAIMABLE"] and lines[1].startswith("Images  ")
    assert lines[0].index("TOTAL") == lines[1].index(rows["Images"][0])



def test_system_df_verbose_template(two: DockCLI) -> None:
    dock_cli = two
    """With -v, as Docker's: the template runs once on the four lists, IDs whole unless a table."""
    ours = dock_cli.json("system", "df", "-v")
    out = dock_cli.ok("system", "df", "-v", "--format",
                      "{{range .Images}}I {{.Repository}}:{{.Tag}} {{.ID}} {{.Containers}} {{.UniqueSize}}\n{{end}}"
                      "{{range .Containers}}C {{.ID}} {{.Names}}\n{{end}}"
                      "{{range .Volumes}}V {{.Name}} {{.Links}}\n{{end}}"
                      "{{len .BuildCache}}")
    lines = out.splitlines()
    images = [line.split() for line in lines if line.startswith("I ")]
    assert [(i[1], i[2], int(i[3])) for i in images] == [
        (f"{r['repository']}:{r['tag']}", r["id"], r["containers"]) for r in ours["images"]]
    assert images and all(i[4].endswith("B") for i in images) and any(i[3] != "0" for i in images)
    assert len([line for line in lines if line.startswith("C ")]) == 2
    assert [line.split()[1:] for line in lines if line.startswith("C ")] == [
        [c["id"], c["name"]] for c in ours["containers"]]
    assert [line.split()[1:] for line in lines if line.startswith("V ")] == [
        [v["name"], str(v["links"])] for v in ours["volumes"]]
    assert lines[-1] == str(len(ours["build_cache"]))
    whole = json.loads(dock_cli.ok("system", "df", "-v", "--format", "{{json .}}"))
    assert set(whole) == {"Images", "Containers", "Volumes", "BuildCache"}
    assert whole["Images"][0]["ID"].startswith("sha256:")
    cut = dock_cli.ok("system", "df", "-v", "--format", "table {{range .Images}}{{.ID}} {{end}}").split()
    assert cut == [r["id"].removeprefix("sha256:")[:12] for r in ours["images"]]


def test_history_template_and_table(dock_cli: DockCLI) -> None:
    ours = dock_cli.json("history", "busybox")
    out = dock_cli.ok("history", "--format", "{{.ID}}|{{.CreatedSince}}|{{.CreatedAt}}|{{.CreatedBy}}|{{.Size}}|"
                      "{{.Comment}}", "busybox")
    lines = out.splitlines()
    assert len(lines) == len(ours)
    top_id, since, at, created_by, size, _comment = lines[0].split("|")
    assert top_id == ours[0]["id"].removeprefix("sha256:")[:12] and created_by == ours[0]["created_by"][:45]
    assert (since, at) == ("-", "") or (since.endswith(" ago") and "T" in at)  # as the table: "-" without a date
    assert size.endswith("B")
    assert all(line.startswith("<missing>|") for line in lines[1:])
    full = dock_cli.ok("history", "--no-trunc", "--format", "{{.ID}}", "busybox").splitlines()[0]
    assert full == ours[0]["id"]
    table = dock_cli.ok("history", "--format", r"table {{.ID}}\t{{.Size}}", "busybox").splitlines()
    assert table[0].split() == ["IMAGE", "SIZE"] and table[1].startswith(top_id + "   ")


def test_events_template_docker_fields(dock_cli: DockCLI) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": dock_cli.address}
    fmt = ("{{.Type}}|{{.Action}}|{{.Actor.ID}}|{{.Actor.Attributes.exitCode}}|{{.Status}}|{{.ID}}|{{.From}}|"
           "{{.Time}}|{{.TimeNano}}|{{.Scope}}")
    proc = subprocess.Popen([sys.executable, "-m", "dock.cli", "events", "--format", fmt, 'topic~="/containers/"',
                             'topic~="/tasks/"'], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    lines: list[list[str]] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n").split("|") for line in proc.stdout or ()),
                              daemon=True)
    reader.start()
    try:
        made: list[str] = []

        def subscribed() -> bool:  # a container made now is seen: the subscription is in place
            if any(line[:3] == ["container", "create", m] for line in lines for m in made):
                return True
            made.append(f"tpl-probe{len(made)}")
            dock_cli.ok("create", "--net", "none", "--name", made[-1], "busybox", "true")
            return False

        wait_until(subscribed, interval=0.2, what="the events subscription")
        ran = dock_cli.dock("run", "--net", "none", "--name", "tpl-ev", "busybox", "sh", "-c", "exit 3")
        assert ran.returncode == 3, ran.stderr

        def died() -> list[str] | None:
            return next((line for line in lines if line[:3] == ["container", "die", "tpl-ev"]), None)

        die = wait_until(died, what="the die event")
        assert die[3:7] == ["3", "die", "tpl-ev", ""] and die[9] == "local"
        assert int(die[8]) // 10**9 == int(die[7]) and abs(int(die[7]) - time.time()) < 300
        create = next(line for line in lines if line[:3] == ["container", "create", "tpl-ev"])
        assert create[4:6] == ["create", "tpl-ev"] and "busybox" in create[6]  # Status, ID, From (the image)
        assert any(line[:3] == ["container", "start", "tpl-ev"] for line in lines)
        assert any(line[:3] == ["task", "create", "tpl-ev"] and line[4:7] == ["", "", ""] for line in lines)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
