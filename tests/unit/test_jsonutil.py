"""`dockyard_common.jsonutil`: untrusted JSON decoded, or refused in words naming what it was.

The case that slipped through before: input nested deeper than the parser's recursion limit
raises RecursionError (not a ValueError), whose text is Python's. Each decode of untrusted JSON
in the daemon, the shim and dock goes through the helper, so each is checked here with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dock.commands.containers import describe
from dock.commands.tasks import _spec as dock_spec
from dock.containers import SPEC_TYPE_URL
from dock.transfer import _config_document
from dockyard_common.credentials import _read as read_credentials
from dockyard_common.errors import FailedPrecondition, Internal, InvalidArgument
from dockyard_common.jsonutil import JsonError, json_object, json_value
from dockyard_common.seccomp import ProfileError
from dockyard_common.seccomp import load as load_profile
from dockyard_common.types import AnyValue, Container
from shim.container import parse_resources
from shim.init.spec import parse_spec as shim_parse_spec
from supervisor.network.cni import _plugin_error
from supervisor.network.networks import load as load_network
from supervisor.remote.client import _error_detail
from supervisor.runtime.bundle import parse_spec
from supervisor.runtime.cgroups import read_cgroup_rel

DEPTH = 100_000
DEEP = b"[" * DEPTH + b"]" * DEPTH
DEEP_OBJECT = b'{"a": ' + DEEP + b"}"
PYTHON_WORDS = ("recursion", "Error", "Traceback", "codec", "Python")


def _plain(message: str, *words: str) -> None:
    for w in words:
        assert w in message, message
    for w in PYTHON_WORDS:
        assert w not in message, message


@pytest.mark.parametrize("data", [DEEP, DEEP_OBJECT, DEEP.decode()], ids=["array", "in-object", "str"])
def test_nested_too_deeply(data: bytes | str) -> None:
    with pytest.raises(JsonError) as info:
        json_object(data, "the thing")
    _plain(str(info.value), "the thing is not valid JSON: nested too deeply")
    with pytest.raises(JsonError):
        json_value(data, "the thing")


@pytest.mark.parametrize(("data", "words"), [
    (b"{not json", "the thing is not valid JSON: Expecting property name"),
    (b"", "the thing is not valid JSON"),
    (b"\xff\xfe\xfd", "the thing is not valid JSON: not UTF-8 text"),
    (b'"\xc3"', "the thing is not valid JSON: not UTF-8 text"),
    (b"[1, 2]", "the thing must be a JSON object"),
    (b"null", "the thing must be a JSON object"),
    (b'"s"', "the thing must be a JSON object"),
])
def test_refused_in_words(data: bytes, words: str) -> None:
    with pytest.raises(JsonError) as info:
        json_object(data, "the thing")
    _plain(str(info.value), words)
    assert isinstance(info.value, ValueError)


def test_values_and_objects_decode() -> None:
    assert json_object(b'{"a": [1, {"b": null}]}', "x") == {"a": [1, {"b": None}]}
    assert json_object('{"é": 1}', "x") == {"é": 1}
    assert json_value(b"[1, 2]", "x") == [1, 2]
    assert json_value(b"[" * 100 + b"]" * 100, "x") == json_value("[" * 100 + "]" * 100, "x")


def test_the_callers_error_kind_is_raised() -> None:
    with pytest.raises(InvalidArgument, match="spec is not valid JSON: nested too deeply"):
        json_object(DEEP, "spec", InvalidArgument)
    with pytest.raises(FailedPrecondition, match="spec must be a JSON object"):
        json_object(b"[]", "spec", FailedPrecondition)


# -- each caller ------------------------------------------------------------------------------------


def test_daemon_container_spec() -> None:
    for data in (DEEP, DEEP_OBJECT):
        with pytest.raises(InvalidArgument) as info:
            parse_spec(data)
        _plain(info.value.message, "container spec is not valid JSON: nested too deeply")
    with pytest.raises(InvalidArgument, match="container spec must be a JSON object"):
        parse_spec(b"[1]")
    assert parse_spec(b'{"ociVersion": "1.0.2"}') == {"ociVersion": "1.0.2"}


def test_daemon_cgroup_rel_of_an_unreadable_config(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes(DEEP)
    assert read_cgroup_rel(str(config), "ns", "c", foreign=False) is None
    config.write_bytes(b"[1]")  # not an object: the default path, as before
    assert read_cgroup_rel(str(config), "ns", "c", foreign=False) == "ns/c"
    config.write_bytes(b'{"linux": {"cgroupsPath": "/x/y"}}')
    assert read_cgroup_rel(str(config), "ns", "c", foreign=False) == "x/y"


def test_shim_spec_and_resources() -> None:
    with pytest.raises(InvalidArgument) as info:
        shim_parse_spec(DEEP_OBJECT)
    _plain(info.value.message, "spec is not valid JSON: nested too deeply")
    with pytest.raises(InvalidArgument) as info:
        parse_resources(DEEP)
    _plain(info.value.message, "resources is not valid JSON: nested too deeply")
    with pytest.raises(InvalidArgument, match="resources must be a JSON object"):
        parse_resources(b"[]")
    assert parse_resources(b"") == {} and parse_resources(b'{"pids": {"limit": 5}}') == {"pids": {"limit": 5}}


def test_registry_answers_and_credentials(tmp_path: Path) -> None:
    # A registry's error body nested too deeply: shown as its text's start, not decoded.
    assert _error_detail(b"[" * 5000).startswith("[[[")
    config = tmp_path / "config.json"
    config.write_bytes(DEEP_OBJECT)
    with pytest.raises(InvalidArgument) as info:
        read_credentials(config)
    _plain(info.value.message, str(config), "not valid JSON: nested too deeply")


def test_network_config_and_seccomp_profile(tmp_path: Path) -> None:
    conf = tmp_path / "deep.conflist"
    conf.write_bytes(DEEP_OBJECT)
    with pytest.raises(InvalidArgument) as info:
        load_network(conf)
    assert info.value.message.startswith(str(conf))
    _plain(info.value.message, "not valid JSON: nested too deeply")
    profile = tmp_path / "deep.json"
    profile.write_bytes(DEEP_OBJECT)
    with pytest.raises(ProfileError) as perr:
        load_profile(profile)
    _plain(str(perr.value), f"seccomp profile {profile} is not valid JSON: nested too deeply")
    # A CNI plugin's failure output nested too deeply: reported as text, not decoded.
    failed = _plugin_error("plugin bridge", "bridge", "ADD", 1, DEEP_OBJECT, b"")
    assert "recursion" not in str(failed) and "plugin bridge" in str(failed)
    toml = tmp_path / "deep.toml"
    toml.write_text("a = " + "[" * DEPTH + "]" * DEPTH + "\n")
    with pytest.raises(ProfileError) as perr:
        load_profile(toml)
    _plain(str(perr.value), f"seccomp profile {toml}: not valid TOML")


def test_dock_reads_records_and_answers_in_words() -> None:
    with pytest.raises(FailedPrecondition) as info:
        dock_spec("c1", DEEP)
    _plain(info.value.message, "container c1: its spec is not valid JSON: nested too deeply")
    with pytest.raises(FailedPrecondition, match="container c1: its spec must be a JSON object"):
        dock_spec("c1", b"[]")
    with pytest.raises(Internal) as ierr:
        _config_document("img:1", DEEP_OBJECT)
    _plain(ierr.value.message, "image img:1: the daemon sent an image config; it is not valid JSON: nested too deeply")
    assert _config_document("img:1", b"") == {}
    shown = describe(Container("c1", "io.containerd.runc.v2", AnyValue(SPEC_TYPE_URL, DEEP)))
    assert shown["spec"] == {"type_url": SPEC_TYPE_URL, "bytes": len(DEEP)}  # shown as what it is
    assert describe(Container("c1", "r", AnyValue(SPEC_TYPE_URL, b'{"a": 1}')))["spec"] == {"a": 1}
