"""Update masks as containerd's metadata stores apply them."""

from __future__ import annotations

import pytest

from dockyard_common.errors import InvalidArgument
from supervisor.fieldpaths import apply_label_paths, split_paths

GC = "containerd.io/gc.ref.content.l.0"
CURRENT = {"a": "1", "b": "2", GC: "sha256:old", "x.y/z": "3"}


@pytest.mark.parametrize(("new", "paths", "expected"), [
    # No label paths: nothing changes.
    ({"a": "9"}, [], CURRENT),
    ({"a": "9"}, ["image", "spec"], CURRENT),
    # "labels" replaces them all.
    ({"n": "1"}, ["labels"], {"n": "1"}),
    ({}, ["labels"], {}),
    # "labels.<key>" sets one...
    ({"a": "9", "b": "9"}, ["labels.a"], {**CURRENT, "a": "9"}),
    ({"new": "v"}, ["labels.new"], {**CURRENT, "new": "v"}),
    # ...split on the first dot only: keys keep their dots and slashes.
    ({GC: "sha256:new"}, [f"labels.{GC}"], {**CURRENT, GC: "sha256:new"}),
    ({"x.y/z": "4"}, ["labels.x.y/z"], {**CURRENT, "x.y/z": "4"}),
    # ...or deletes it when the new object lacks it, or has it empty.
    ({}, ["labels.a"], {"b": "2", GC: "sha256:old", "x.y/z": "3"}),
    ({"a": ""}, ["labels.a"], {"b": "2", GC: "sha256:old", "x.y/z": "3"}),
    ({}, [f"labels.{GC}"], {"a": "1", "b": "2", "x.y/z": "3"}),
    ({}, ["labels.missing"], CURRENT),
    # Several paths, in order; a later "labels" wins over an earlier per-key path.
    ({"a": "9", "c": "3"}, ["labels.a", "labels.c", "labels.b"],
     {"a": "9", "c": "3", GC: "sha256:old", "x.y/z": "3"}),
    ({"z": "1"}, ["labels.a", "labels"], {"z": "1"}),
    ({"z": "1", "a": "5"}, ["labels", "labels.a"], {"z": "1", "a": "5"}),
    # Empty values never survive, even through "labels".
    ({"z": "1", "e": ""}, ["labels"], {"z": "1"}),
    # "labelsx" is not a label path.
    ({"a": "9"}, ["labelsx", "labelsx.a"], CURRENT),
    # An empty key is addressed like any other.
    ({"": "v"}, ["labels."], {**CURRENT, "": "v"}),
])
def test_apply_label_paths(new: dict[str, str], paths: list[str], expected: dict[str, str]) -> None:
    before_current, before_new = dict(CURRENT), dict(new)
    assert apply_label_paths(CURRENT, new, paths) == expected
    assert CURRENT == before_current and new == before_new  # inputs untouched


def test_apply_other_map_fields() -> None:
    current = {"org.opencontainers.image.title": "x", "keep": "1"}
    new = {"org.opencontainers.image.title": "y"}
    paths = ["annotations.org.opencontainers.image.title", "labels.keep"]
    assert apply_label_paths(current, new, paths, field="annotations") == {
        "org.opencontainers.image.title": "y", "keep": "1"}


IMAGE_FIELDS = {"labels", "target", "annotations"}


@pytest.mark.parametrize(("paths", "fields", "label_paths"), [
    ([], set(), []),
    (["target"], {"target"}, []),
    (["labels"], set(), ["labels"]),
    ([f"labels.{GC}", "target", "labels"], {"target"}, [f"labels.{GC}", "labels"]),
    (["annotations"], {"annotations"}, []),
    (["annotations.a.b"], {"annotations.a.b"}, []),
])
def test_split_paths(paths: list[str], fields: set[str], label_paths: list[str]) -> None:
    assert split_paths(paths, IMAGE_FIELDS, kind="image", name="x",
                       maps=["annotations"]) == (fields, label_paths)


@pytest.mark.parametrize(("path", "allowed", "kind", "name", "message"), [
    ("name", IMAGE_FIELDS, "image", "docker.io/library/busybox:latest",
     'cannot update "name" field on image "docker.io/library/busybox:latest"'),
    ("spec.x", {"labels", "spec"}, "", "c1", 'cannot update "spec.x" field on "c1"'),
    ("labels.a", {"spec"}, "", "c1", 'cannot update "labels.a" field on "c1"'),
    ("labels", {"spec"}, "", "c1", 'cannot update "labels" field on "c1"'),
    ("annotations.a", IMAGE_FIELDS, "image", "x",  # per-key paths only for declared maps
     'cannot update "annotations.a" field on image "x"'),
    ("size", {"labels"}, "content info", "sha256:abc",
     'cannot update "size" field on content info "sha256:abc"'),
    ("name", {"labels"}, "", "", 'cannot update "name" field'),
    ("", {"labels"}, "snapshot", "s", 'cannot update "" field on snapshot "s"'),
    ('we"ird', {"labels"}, "", "", 'cannot update "we\\"ird" field'),
])
def test_split_paths_refuses_unknown(path: str, allowed: set[str], kind: str, name: str,
                                     message: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        split_paths([path], allowed, kind=kind, name=name)
    assert info.value.message == message
    with pytest.raises(InvalidArgument):  # wherever it stands in the mask
        split_paths(["spec", path], allowed | {"spec"}, kind=kind, name=name)


def test_split_then_apply() -> None:
    fields, label_paths = split_paths(["labels.b", "spec"], {"labels", "spec"})
    assert fields == {"spec"}
    assert apply_label_paths({"a": "1", "b": "2"}, {"a": "x"}, label_paths) == {"a": "1"}
