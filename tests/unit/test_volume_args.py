"""`dock run -v/--tmpfs/--read-only` parsed into OCI mounts and named volumes, the volume label, and
the CLI's wording of bad input."""

from __future__ import annotations

import pytest

from dock.commands.run import request_from_args
from dock.oci import (
    ImageConfig,
    SpecOptions,
    VolumeRequest,
    build_spec,
    parse_tmpfs,
    parse_volume,
    volume_options,
)
from dock.parser import build_parser
from dockyard_common import volumelabels
from dockyard_common.errors import InvalidArgument


def test_named_volume() -> None:
    assert parse_volume("data:/var/lib/db") == VolumeRequest("data", "/var/lib/db")
    assert parse_volume("data:/x:ro") == VolumeRequest("data", "/x", readonly=True)
    assert parse_volume("d.b-1_x:/x:rw,nocopy") == VolumeRequest("d.b-1_x", "/x", readonly=False, copy=False)


def test_anonymous_volume() -> None:
    assert parse_volume("/data") == VolumeRequest("", "/data")


def test_bind_mount() -> None:
    assert parse_volume("/srv/a:/a") == {"type": "bind", "source": "/srv/a", "destination": "/a",
                                         "options": ["rbind"]}
    assert parse_volume("/srv/a:/a:ro,rslave") == {"type": "bind", "source": "/srv/a", "destination": "/a",
                                                   "options": ["rbind", "ro", "rslave"]}


@pytest.mark.parametrize(("text", "words"), [
    ("data", "want /path"),
    ("/", "cannot be a mount point"),
    ("data:rel", "not an absolute path"),
    ("data:/", "cannot be a mount point"),
    ("a:/b:/c:ro", "want SOURCE:DESTINATION"),
    ("data:/x:rx", "unknown option 'rx'"),
    ("data:/x:ro,rw", "give ro or rw once"),
    ("data:/x:rslave", "unknown option 'rslave'"),  # propagation is for binds
    ("/h:/x:nocopy", "unknown option 'nocopy'"),  # nocopy is for volumes
    ("data:/x:", "empty options"),
    (":/x", "no volume name or host path"),
    ("-bad:/x", "volume name '-bad'"),
    ("x:/y", "volume name 'x'"),  # one character: Docker wants two
    ("../etc:/y", "volume name '../etc'"),
    ("a/b:/y", "volume name 'a/b'"),
    (f"{'v' * 129}:/y", "2 to 128 characters"),
])
def test_bad_volumes(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words.replace("(", r"\(")):
        parse_volume(text)


def test_tmpfs() -> None:
    assert parse_tmpfs("/run") == {"type": "tmpfs", "source": "tmpfs", "destination": "/run",
                                   "options": ["nosuid", "nodev", "noexec"]}
    assert parse_tmpfs("/t:size=64m,mode=1777,exec")["options"] == [
        "nosuid", "nodev", "noexec", "size=64m", "mode=1777", "exec"]  # the user's come last and win
    for bad, words in [("rel", "not an absolute path"), ("/t:size=lots", "size 'lots'"),
                       ("/t:mode=999", "mode '999'"), ("/t:size", "size ''")]:
        with pytest.raises(InvalidArgument, match=words):
            parse_tmpfs(bad)


def test_volume_options_sort_and_check() -> None:
    mounts, named = volume_options(["v1:/a", "/h:/b:ro"], ["/c:size=1m"], exists=lambda p: p == "/h")
    assert [m["destination"] for m in mounts] == ["/b", "/c"]
    assert named == [VolumeRequest("v1", "/a")]
    with pytest.raises(InvalidArgument, match="host path /nope does not exist"):
        volume_options(["/nope:/b"], [], exists=lambda p: False)
    with pytest.raises(InvalidArgument, match="duplicate mount point: /a"):
        volume_options(["v1:/a", "/h:/a/"], [], exists=lambda p: True)
    with pytest.raises(InvalidArgument, match="duplicate mount point"):
        volume_options(["v1:/a"], ["/a"], exists=lambda p: True)
    with pytest.raises(InvalidArgument, match="duplicate mount point"):
        volume_options(["v1:/a"], [], [{"type": "bind", "source": "/x", "destination": "/a", "options": []}])


def test_spec_binds_volumes_and_read_only_root() -> None:
    opts = SpecOptions(args=["true"], volumes=[VolumeRequest("v1", "/a", readonly=True), VolumeRequest("v2", "/b")],
                       volume_paths={"v1": "/var/lib/dy/volumes/default/v1/_data",
                                     "v2": "/var/lib/dy/volumes/default/v2/_data"},
                       readonly_root=True)
    spec = build_spec("default", "c1", ImageConfig(), opts, None)
    assert spec["root"]["readonly"] is True
    mine = [m for m in spec["mounts"] if m["destination"] in ("/a", "/b")]
    assert mine == [
        {"type": "bind", "source": "/var/lib/dy/volumes/default/v1/_data", "destination": "/a",
         "options": ["rbind", "ro"]},
        {"type": "bind", "source": "/var/lib/dy/volumes/default/v2/_data", "destination": "/b",
         "options": ["rbind", "rw"]}]
    assert build_spec("default", "c1", ImageConfig(), SpecOptions(args=["true"]), None)["root"].get("readonly") \
        in (None, False)
    with pytest.raises(InvalidArgument, match="has not said where it lives"):
        build_spec("default", "c1", ImageConfig(), SpecOptions(args=["true"], volumes=[VolumeRequest("v", "/a")]),
                   None)


def test_label_round_trip_and_strictness() -> None:
    mounts = [volumelabels.VolumeMount("data", "/d"), volumelabels.VolumeMount("logs", "/l", copy=False)]
    text = volumelabels.encode(mounts)
    assert volumelabels.decode(text) == mounts
    assert volumelabels.names_in({volumelabels.MOUNTS: text}) == {"data", "logs"}
    assert volumelabels.names_in({}) == set()
    assert volumelabels.names_in({volumelabels.MOUNTS: "[[[["}) == set()
    for bad in ['{"name": "x"}', '[{"name": 1, "destination": "/d"}]', '[{"name": "a/b", "destination": "/d"}]',
                "[" * 100000 + "]" * 100000]:
        with pytest.raises(InvalidArgument):
            volumelabels.decode(bad)


def _request(*argv: str):  # type: ignore[no-untyped-def]
    args = build_parser(["run", *argv]).parse_args(["run", *argv])
    return request_from_args(args)


def test_cli_maps_the_options(tmp_path: object) -> None:
    req = _request("--net", "none", "--name", "c1", "-v", "data:/d:ro", "-v", f"{tmp_path}:/h",
                   "--tmpfs", "/t:size=64m", "--read-only", "busybox", "true")
    assert req.spec.volumes == [VolumeRequest("data", "/d", readonly=True)]
    assert req.spec.readonly_root
    assert [(m["type"], m["destination"]) for m in req.spec.mounts] == [("bind", "/h"), ("tmpfs", "/t")]


def test_cli_refuses_bad_input_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _request("--name", "c1", "-v", "/surely/not/here/dy:/x", "busybox", "true")
    assert str(exc.value) == "dock: -v /surely/not/here/dy:/x: host path /surely/not/here/dy does not exist " \
                             "(create it first): invalid argument"
