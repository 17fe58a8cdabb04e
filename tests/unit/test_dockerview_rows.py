"""dock/dockerview.py's rows for stats, system df, history and events: Docker's field names and
value formats (go-units sizes, fmt's %.2f%%, events.Message mapped from containerd's topics)."""

from __future__ import annotations

from datetime import UTC, datetime

from dock.dfview import Summary
from dock.dockerview import df_row, event_view, history_row, stats_row
from dock.events import Envelope
from dock.formatting import docker_bytes, docker_size, go_rfc3339

FIGURES = {"cpu_percent": 12.345, "memory_usage": 1572864, "memory_limit": 8 * 1024**3, "memory_percent": 0.0183,
           "net_rx": 1030, "net_tx": 0, "pids": 3, "block_read": 4_270_000, "block_write": 0}


def test_go_units_sizes_and_rfc3339() -> None:
    assert (docker_size(4_270_000), docker_size(1_234_567, 4), docker_size(0)) == ("4.27MB", "1.235MB", "0B")
    assert (docker_bytes(1572864), docker_bytes(8 * 1024**3), docker_bytes(512)) == ("1.5MiB", "8GiB", "512B")
    assert go_rfc3339(None) == ""
    text = go_rfc3339(datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC))
    assert text[:4] == "2024" and "." not in text and (text.endswith("Z") or text[-6] in "+-")


def test_stats_row() -> None:
    row = stats_row("a" * 64, "web", "we", FIGURES)
    assert row == {"Container": "we", "Name": "web", "ID": "a" * 12, "CPUPerc": "12.35%",
                   "MemUsage": "1.5MiB / 8GiB", "MemPerc": "0.02%", "NetIO": "1.03kB / 0B", "BlockIO": "4.27MB / 0B",
                   "PIDs": "3"}
    assert stats_row("a" * 64, "", "x", FIGURES, no_trunc=True)["ID"] == "a" * 64
    assert stats_row("a" * 64, "", "x", FIGURES)["Name"] == "--"
    assert stats_row("c", "c", "c", {**FIGURES, "cpu_percent": None, "net_rx": None})["CPUPerc"] == "--"
    none = stats_row("c", "c", "c", None)
    assert (none["CPUPerc"], none["MemUsage"], none["PIDs"]) == ("--", "-- / --", "--")


def test_df_row() -> None:
    assert df_row(Summary("Images", 3, 1, 5_000_000, 2_000_000)) == {
        "Type": "Images", "TotalCount": "3", "Active": "1", "Size": "5MB", "Reclaimable": "2MB (40%)"}
    assert df_row(Summary("Build Cache", 2, 0, 1500, 1500, percent=False))["Reclaimable"] == "1.5kB"
    assert df_row(Summary("Local Volumes", 0, 0, 0, 0))["Reclaimable"] == "0B"


def test_history_row() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    row = history_row("abc", datetime(2024, 4, 30, tzinfo=UTC), "CMD [\"sh\"]", 0, "", now)
    assert row["CreatedSince"].endswith(" ago") and row["Size"] == "0B" and row["ID"] == "abc"
    assert history_row("<missing>", None, "", 4_300_000, "c", now)["CreatedSince"] == "-"


def _env(topic: str, event: dict[str, object]) -> Envelope:
    return Envelope(datetime(2024, 5, 1, 10, 0, 0, 500, tzinfo=UTC), "default", topic, "", event)


def test_event_view_docker_words() -> None:
    view = event_view(_env("/tasks/exit", {"container_id": "web", "id": "web", "pid": 9, "exit_status": 3}))
    assert (view["Type"], view["Action"], view["Actor"]["ID"], view["Status"], view["ID"]) == (
        "container", "die", "web", "die", "web")
    assert view["Actor"]["Attributes"]["exitCode"] == "3" and view["Actor"]["Attributes"]["namespace"] == "default"
    assert (view["Time"], view["TimeNano"], view["Scope"]) == (1714557600, 1714557600000500000, "local")
    ex = event_view(_env("/tasks/exit", {"container_id": "web", "id": "e1", "exit_status": 0}))
    assert ex["Action"] == "exec_die" and ex["Actor"]["Attributes"]["execID"] == "e1"
    made = event_view(_env("/containers/create", {"id": "web", "image": "busybox:latest"}))
    assert (made["Action"], made["From"]) == ("create", "busybox:latest")
    health = event_view(_env("/containers/health_status", {"container_id": "web", "status": "healthy"}))
    assert health["Action"] == "health_status: healthy"
    img = event_view(_env("/images/create", {"name": "busybox:latest", "labels": {"a": "b"}}))
    assert (img["Type"], img["Action"], img["Actor"]["ID"], img["Actor"]["Attributes"]["a"]) == (
        "image", "create", "busybox:latest", "b")
    task = event_view(_env("/tasks/create", {"container_id": "web", "pid": 7}))
    assert (task["Type"], task["Action"], task["Status"], task["From"]) == ("task", "create", "", "")
    net = event_view(_env("/network/attach", {"container_id": "web",
                                              "attachment": {"interfaces": [{"network": "dockyard"}]}}))
    assert (net["Type"], net["Action"], net["Actor"]["ID"], net["Actor"]["Attributes"]["container"]) == (
        "network", "connect", "dockyard", "web")
    snap = event_view(_env("/snapshot/prepare", {"key": "k1", "parent": "p"}))
    assert (snap["Type"], snap["Action"], snap["Actor"]["ID"]) == ("snapshot", "prepare", "k1")


def test_event_json_is_dockers_message() -> None:
    """`dock events --format '{{json .}}'` writes Docker's events.Message: fields in its declared
    order under their JSON tags, the deprecated and time fields left out when empty (omitempty),
    the attributes (a map) with sorted keys."""
    from dock.gotemplate import render

    died = event_view(_env("/tasks/exit", {"container_id": "web", "id": "web", "exit_status": 3}))
    assert render("{{json .}}", died) == (
        '{"status":"die","id":"web","Type":"container","Action":"die","Actor":{"ID":"web","Attributes":'
        '{"container_id":"web","exitCode":"3","exit_status":"3","id":"web","namespace":"default"}},'
        '"scope":"local","time":1714557600,"timeNano":1714557600000500000}')
    task = event_view(_env("/tasks/create", {"container_id": "web"}))
    assert render("{{json .}}", task).startswith('{"Type":"task","Action":"create","Actor":')
    assert render("{{.Status}}|{{.Actor.ID}}", died) == "die|web"  # templates see the Go names
