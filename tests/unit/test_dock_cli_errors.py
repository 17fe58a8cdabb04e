"""`dock` never prints a traceback: an unexpected error is one line and a non-zero exit code,
with the traceback only when DOCK_DEBUG asks for it; broken daemon answers are errors in words."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

import dock.cli as cli
from dock.commands.image_transfer import print_inspection
from dock.images import Descriptor
from dock.transfer import ImageInspection, LayerInfo, _config_document
from dockyard_common.errors import Internal


def _failing(exc: BaseException) -> Any:
    async def run(_args: argparse.Namespace) -> int:
        raise exc
    return run


@pytest.mark.parametrize("exc", [AttributeError("'str' object has no attribute 'items'"), KeyError("Env"),
                                 TypeError("x"), ValueError(""), RuntimeError("boom")])
def test_unexpected_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                        exc: Exception) -> None:
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(cli, "_run", _failing(exc))
    assert cli.main(["version"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dock: unexpected error: "), err
    assert "Traceback" not in err and type(exc).__name__ not in err
    assert cli.DEBUG_ENV in err


def test_a_local_file_error_is_said_as_it_is(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """An OSError is the command's own file or device (the daemon's answers are DockyardErrors): not a bug."""
    monkeypatch.setattr(cli, "_run", _failing(FileNotFoundError(2, "No such file or directory", "/nope")))
    assert cli.main(["version"]) == 1
    assert capsys.readouterr().err == "dock: /nope: No such file or directory\n"


def test_debug_env_shows_the_traceback(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    monkeypatch.setattr(cli, "_run", _failing(AttributeError("nope")))
    assert cli.main(["version"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "AttributeError: nope" in err
    assert err.strip().splitlines()[-1].startswith("dock: unexpected error: nope")


def test_domain_errors_stay_as_they_were(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "_run", _failing(Internal("image x: broken")))
    assert cli.main(["version"]) == 1
    assert capsys.readouterr().err == "dock: image x: broken: internal\n"


@pytest.mark.parametrize("data", [b"[]", b'"x"', b"5", b"{not json", b"\xff\xfe", b"[" * 100_000])
def test_a_config_the_daemon_sends_that_is_no_object_is_an_error(data: bytes) -> None:
    with pytest.raises(Internal, match="image n: the daemon sent an image config"):
        _config_document("n", data)


def _inspection(config: Any) -> ImageInspection:
    d = Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "1" * 64, 1)
    layer = LayerInfo(d, "sha256:" + "2" * 64, "sha256:" + "2" * 64)
    return ImageInspection("n", d, d, d, config, [layer, layer], 1, "linux/amd64", ["linux/amd64"])


@pytest.mark.parametrize("config", [
    {"config": {"Env": "x", "Cmd": 5, "Labels": "s", "ExposedPorts": ["80"], "Volumes": 3, "User": 0}},
    {"config": []}, {"config": "x"}, {"created": 5}, [], "x", None, {"config": {"Labels": {"a": 1, "b": None}}},
])
def test_inspection_printing_survives_any_shape(config: Any, capfd: pytest.CaptureFixture[str]) -> None:
    print_inspection(_inspection(config))
    out = capfd.readouterr().out
    assert "Name" in out and out.endswith("Layers\n")  # the layer table goes through emit_table


@pytest.mark.parametrize("argv", [["images", "inspect", "ab\udcff"], ["events", "\udcff"]])
def test_an_argument_that_is_not_utf8_is_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    # argv's undecodable bytes arrive as surrogates; protobuf refuses them when the request is made
    assert cli.main(["--address", "/nonexistent/dockyard.sock", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dock: '") and "\\xff' is not UTF-8 text" in err and err.count("\n") == 1, err
