"""Image configs with fields of the wrong JSON type are InvalidArgument naming the field.

containerd decodes a config into Go structs, which refuse such a config wherever it is read;
Dockyard refuses it with the same verdict at every reader (`parse_config`: import, pull,
inspect, unpack, `dock run`), instead of failing later where the value is used.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import parse_config

DIFF = "sha256:" + "d" * 64


def config(**over: Any) -> bytes:
    doc: dict[str, Any] = {"architecture": "amd64", "os": "linux",
                           "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
                           "rootfs": {"type": "layers", "diff_ids": [DIFF]},
                           "history": [{"created_by": "x", "empty_layer": False}]}
    run = over.pop("run", None)
    if run is not None:
        doc["config"].update(run)
    doc.update(over)
    return json.dumps(doc).encode()


BAD: list[tuple[dict[str, Any], str]] = [
    ({"run": {"Env": "x"}}, "'config.Env' must be an array of strings, not a string"),
    ({"run": {"Env": ["A=1", 5]}}, "'config.Env' must be an array of strings"),
    ({"run": {"Cmd": 5}}, "'config.Cmd' must be an array of strings, not a number"),
    ({"run": {"Entrypoint": {"a": 1}}}, "'config.Entrypoint' must be an array of strings, not an object"),
    ({"run": {"User": 0}}, "'config.User' must be a string, not a number"),
    ({"run": {"WorkingDir": ["/"]}}, "'config.WorkingDir' must be a string, not an array"),
    ({"run": {"ExposedPorts": ["80/tcp"]}}, "'config.ExposedPorts' must be an object of objects, not an array"),
    ({"run": {"ExposedPorts": {"80/tcp": "yes"}}}, "'config.ExposedPorts' must be an object of objects"),
    ({"run": {"Volumes": "/data"}}, "'config.Volumes' must be an object of objects, not a string"),
    ({"run": {"Labels": "s"}}, "'config.Labels' must be an object of strings, not a string"),
    ({"run": {"Labels": {"a": 1}}}, "'config.Labels' must be an object of strings"),
    ({"run": {"StopSignal": 15}}, "'config.StopSignal' must be a string, not a number"),
    ({"run": {"ArgsEscaped": "true"}}, "'config.ArgsEscaped' must be a boolean, not a string"),
    ({"run": {"Healthcheck": []}}, "'config.Healthcheck' must be an object, not an array"),
    ({"config": []}, "config: expected a JSON object, found an array"),
    ({"config": "x"}, "config: expected a JSON object, found a string"),
    ({"history": ["step"]}, "history[0]: expected a JSON object, found a string"),
    ({"history": {"a": 1}}, "field 'history' must be an array, not an object"),
    ({"history": [{"created_by": 5}]}, "'history[0].created_by' must be a string, not a number"),
    ({"history": [{"empty_layer": "no"}]}, "'history[0].empty_layer' must be a boolean, not a string"),
    ({"rootfs": {"type": "layers", "diff_ids": DIFF}}, "field 'diff_ids' must be an array, not a string"),
    ({"rootfs": {"type": "layers", "diff_ids": [5]}}, "rootfs.diff_ids[0] must be a string, not a number"),
    ({"rootfs": []}, "rootfs: expected a JSON object, found an array"),
    ({"created": 5}, "field 'created' must be a string, not a number"),
    ({"author": ["me"]}, "field 'author' must be a string, not an array"),
    ({"os.features": "sse4"}, "field 'os.features' must be an array of strings, not a string"),
    ({"os": 5}, "field 'os' must be a string, not a number"),
    ({"architecture": True}, "field 'architecture' must be a string, not a boolean"),
    ({"variant": 8}, "field 'variant' must be a string, not a number"),
]


@pytest.mark.parametrize(("over", "words"), BAD)
def test_wrong_types_are_invalid_argument_naming_the_field(over: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_config(config(**over), "image config sha256:abc")
    message = str(info.value)
    assert message.startswith("image config sha256:abc") and words in message, message


def test_null_is_unset_for_every_field_as_in_go() -> None:
    nulls = {k: None for k in ("User", "Env", "Cmd", "Entrypoint", "ExposedPorts", "Volumes", "Labels",
                               "WorkingDir", "StopSignal", "ArgsEscaped", "Healthcheck", "Shell", "OnBuild")}
    parsed = parse_config(config(run=nulls, created=None, author=None, history=None))
    assert parsed.config["Env"] is None


def test_what_docker_and_buildkit_write_is_accepted() -> None:
    run = {"User": "1000:1000", "ExposedPorts": {"80/tcp": {}, "53/udp": None}, "Volumes": {"/data": {}},
           "Labels": {"org.opencontainers.image.title": "x"}, "StopSignal": "SIGTERM", "ArgsEscaped": True,
           "Healthcheck": {"Test": ["CMD", "true"], "Interval": 1000}, "Shell": ["/bin/sh", "-c"],
           "OnBuild": [], "StopTimeout": 10, "Hostname": "", "AttachStdin": False, "Image": "sha256:x"}
    parsed = parse_config(config(run=run, created="2024-01-01T00:00:00Z", author="me",
                                 **{"os.features": ["win32k"], "container_config": {"Cmd": "anything"}}))
    assert parsed.config["ExposedPorts"] == {"80/tcp": {}, "53/udp": None}
