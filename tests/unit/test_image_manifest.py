"""Manifests, indexes, configs, platforms and chain IDs (dockyard_common/imagespec.py)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.imagespec import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    Index,
    Manifest,
    Matcher,
    Platform,
    chain_id,
    chain_ids,
    child_gc_labels,
    default_platform,
    encode,
    format_platform,
    normalize,
    parse_config,
    parse_document,
    parse_index,
    parse_manifest,
    parse_platform,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def manifest_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_MANIFEST,
                           "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": D1, "size": 10},
                           "layers": [{"mediaType": LAYER, "digest": D2, "size": 20}]}
    doc.update(over)
    return doc


def index_doc(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": list(entries)}


def entry(digest: str, arch: str | None = "amd64", variant: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": MEDIA_TYPE_OCI_MANIFEST, "digest": digest, "size": 100}
    if arch is not None:
        out["platform"] = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
    return out


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# -- manifests ---------------------------------------------------------------------------------


def test_parse_oci_manifest() -> None:
    m = parse_manifest(raw(manifest_doc()), MEDIA_TYPE_OCI_MANIFEST)
    assert isinstance(m, Manifest)
    assert m.config == Descriptor(MEDIA_TYPE_OCI_CONFIG, D1, 10)
    assert [layer.digest for layer in m.layers] == [D2]


def test_parse_docker_manifest_and_media_type_from_document() -> None:
    doc = manifest_doc(mediaType=MEDIA_TYPE_DOCKER_MANIFEST,
                       config={"mediaType": MEDIA_TYPE_DOCKER_CONFIG, "digest": D1, "size": 10},
                       layers=[{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": D2,
                                "size": 5}])
    m = parse_document(raw(doc))
    assert isinstance(m, Manifest) and m.media_type == MEDIA_TYPE_DOCKER_MANIFEST


def test_oci_manifest_may_omit_media_type() -> None:
    doc = manifest_doc()
    del doc["mediaType"]
    assert parse_document(raw(doc)).media_type == MEDIA_TYPE_OCI_MANIFEST
    idx = index_doc(entry(D1))
    del idx["mediaType"]
    assert isinstance(parse_document(raw(idx)), Index)


@pytest.mark.parametrize(("data", "words"), [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object, found an array"),
    (raw(manifest_doc(config=None)), "missing field 'config'"),
    (raw({k: v for k, v in manifest_doc().items() if k != "schemaVersion"}), "missing field 'schemaVersion'"),
    (raw(manifest_doc(schemaVersion=3)), "unsupported schemaVersion 3"),
    (raw(manifest_doc(config={"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": D1})), "missing field 'size'"),
    (raw(manifest_doc(config={"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": "sha256:abc", "size": 1})),
     "invalid checksum digest length"),
    (raw(manifest_doc(config={"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": D1, "size": -1})), "negative"),
    (raw(manifest_doc(config={"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": D1, "size": "10"})),
     "size must be an integer"),
    (raw(manifest_doc(config={"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": D1, "size": 1.5})),
     "size must be an integer"),
    (raw(manifest_doc(config={"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": D1, "size": 1 << 40})),
     "larger than the limit"),
    (raw(manifest_doc(layers=[{"mediaType": LAYER, "digest": D2, "size": 1 << 50}])), "larger than the limit"),
    (raw(manifest_doc(config={"mediaType": "application/x-weird", "digest": D1, "size": 1})),
     "is not an image config"),
    (raw(manifest_doc(layers=[{"mediaType": "application/x-weird", "digest": D2, "size": 1}])),
     "unrecognised layer media type"),
    (raw(manifest_doc(layers={"a": 1})), "'layers' must be an array"),
    (raw(manifest_doc(manifests=[])), "must not have a 'manifests' field"),
])
def test_bad_manifests(data: bytes, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words) as info:
        parse_manifest(data, MEDIA_TYPE_OCI_MANIFEST, "manifest sha256:x")
    assert "manifest sha256:x" in str(info.value)


def test_schema1_refused_clearly() -> None:
    schema1 = raw({"schemaVersion": 1, "name": "library/busybox", "tag": "latest", "fsLayers": [{"blobSum": D1}]})
    for parse in (parse_document, parse_manifest, parse_index):
        with pytest.raises(InvalidArgument, match="schema 1 manifests are not supported"):
            parse(schema1)
    with pytest.raises(InvalidArgument, match="schema 1"):
        parse_document(raw(manifest_doc()), "application/vnd.docker.distribution.manifest.v1+prettyjws")


def test_declared_and_inner_media_types_must_agree() -> None:
    with pytest.raises(InvalidArgument, match="referred to as"):
        parse_document(raw(manifest_doc()), MEDIA_TYPE_DOCKER_MANIFEST)
    with pytest.raises(InvalidArgument, match="unsupported media type"):
        parse_document(raw({"schemaVersion": 2, "mediaType": "text/plain"}))


# -- indexes -----------------------------------------------------------------------------------


def test_parse_index_with_platforms() -> None:
    idx = parse_index(raw(index_doc(entry(D1, "amd64"), entry(D2, "arm64", "v8"), entry(D3, None))))
    assert [d.platform for d in idx.manifests] == [Platform("linux", "amd64"), Platform("linux", "arm64", "v8"),
                                                   None]
    docker = index_doc(entry(D1))
    docker["mediaType"] = MEDIA_TYPE_DOCKER_MANIFEST_LIST
    assert parse_index(raw(docker)).media_type == MEDIA_TYPE_DOCKER_MANIFEST_LIST


@pytest.mark.parametrize(("doc", "words"), [
    ({"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX}, "missing field 'manifests'"),
    (index_doc({"mediaType": LAYER, "digest": D1, "size": 1}), "is not a manifest or index"),
    (index_doc({**entry(D1), "platform": {"os": "linux"}}), "missing field 'architecture'"),
    (index_doc({**entry(D1), "annotations": {"a": 1}}), "'annotations' must be an object of strings"),
    ({**index_doc(entry(D1)), "layers": []}, "is it a manifest"),
])
def test_bad_indexes(doc: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        parse_index(raw(doc))


def test_document_size_limit() -> None:
    with pytest.raises(InvalidArgument, match="larger than the limit"):
        parse_index(b" " * (9 << 20))


def test_encoded_index_round_trips() -> None:
    idx = parse_index(raw(index_doc(entry(D1, "arm", "v7"))))
    again = parse_index(encode({"schemaVersion": 2, "mediaType": idx.media_type,
                                "manifests": [d.to_json() for d in idx.manifests]}))
    assert again == idx


# -- configs -----------------------------------------------------------------------------------


def config_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                           "rootfs": {"type": "layers", "diff_ids": [D1, D2]}}
    doc.update(over)
    return doc


def test_parse_config() -> None:
    c = parse_config(raw(config_doc(variant="v3")))
    assert c.diff_ids == [D1, D2]
    assert c.config == {"Cmd": ["sh"]}
    assert c.platform == Platform("linux", "amd64", "v3")


@pytest.mark.parametrize(("doc", "words"), [
    (config_doc(rootfs=None), "missing field 'rootfs'"),
    ({k: v for k, v in config_doc().items() if k != "os"}, "missing field 'os'"),
    (config_doc(rootfs={"type": "layers"}), "missing field 'diff_ids'"),
    (config_doc(rootfs={"type": "squash", "diff_ids": []}), "rootfs type 'squash'"),
    (config_doc(rootfs={"type": "layers", "diff_ids": ["md5:x"]}), r"diff_ids\[0\]"),
    (config_doc(rootfs={"type": "layers", "diff_ids": [3]}), "must be a string"),
    (config_doc(config=[1]), "expected a JSON object"),
])
def test_bad_configs(doc: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        parse_config(raw(doc))


# -- platforms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "want"), [
    ("linux/amd64", Platform("linux", "amd64")),
    ("linux/x86_64", Platform("linux", "amd64")),
    ("Linux/X86-64", Platform("linux", "amd64")),
    ("linux/aarch64", Platform("linux", "arm64")),
    ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
    ("linux/arm64", Platform("linux", "arm64")),
    ("linux/armhf", Platform("linux", "arm")),  # arm/v7 is written without its default variant
    ("linux/arm", Platform("linux", "arm")),
    ("linux/arm/7", Platform("linux", "arm", "v7")),
    ("linux/armel", Platform("linux", "arm", "v6")),
    ("linux/i386", Platform("linux", "386")),
    ("arm64", Platform("linux", "arm64")),
    ("windows/amd64", Platform("windows", "amd64")),
    ("macos/arm64", Platform("darwin", "arm64")),
])
def test_parse_platform(spec: str, want: Platform) -> None:
    assert parse_platform(spec) == want


@pytest.mark.parametrize("spec", ["", "linux/amd64/v2/x", "linux/*", "linux/am d64", "plan10"])
def test_parse_platform_refuses(spec: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_platform(spec)


def test_linux_alone_means_the_host_arch() -> None:
    assert parse_platform("linux") == default_platform()


def test_default_platform_is_linux_amd64_here() -> None:
    import platform as host

    if host.machine() in ("x86_64", "amd64"):
        assert default_platform() == Platform("linux", "amd64")
        assert format_platform(default_platform()) == "linux/amd64"


def test_normalize_aliases() -> None:
    assert normalize(Platform("Linux", "x86_64")) == Platform("linux", "amd64")
    assert normalize(Platform("linux", "amd64", "v1")) == Platform("linux", "amd64")
    assert normalize(Platform("linux", "aarch64", "8")) == Platform("linux", "arm64")
    assert normalize(Platform("", "arm")) == Platform("linux", "arm", "v7")


def test_matcher_only_prefers_exact_then_compatible() -> None:
    m = Matcher.only(Platform("linux", "amd64"))
    assert m.match(Platform("linux", "x86_64"))
    assert m.match(Platform("linux", "386"))  # an amd64 CPU runs 386 binaries (containerd's vector)
    assert not m.match(Platform("linux", "arm64"))
    assert not m.match(Platform("windows", "amd64"))
    assert not m.match(None)
    descs = [Descriptor(MEDIA_TYPE_OCI_MANIFEST, D1, 1, platform=Platform("linux", "386")),
             Descriptor(MEDIA_TYPE_OCI_MANIFEST, D2, 1, platform=Platform("linux", "arm64")),
             Descriptor(MEDIA_TYPE_OCI_MANIFEST, D3, 1, platform=Platform("linux", "amd64"))]
    best = m.best(descs)
    assert best is not None and best.digest == D3


def test_matcher_arm64_runs_arm() -> None:
    m = Matcher.only(Platform("linux", "arm64"))
    assert m.match(Platform("linux", "arm", "v7"))
    assert m.rank(Platform("linux", "arm64", "v8")) == 0
    assert not Matcher.strict(Platform("linux", "arm64")).match(Platform("linux", "arm", "v7"))


def test_matcher_all_and_parse() -> None:
    assert Matcher.all().match(Platform("plan9", "mips"))
    assert Matcher.all().match(None)
    assert Matcher.parse("").match(default_platform())
    assert Matcher.parse("linux/arm64", strict=True).candidates == [Platform("linux", "arm64")]
    assert str(Matcher.parse("linux/arm/v6")) == "linux/arm/v6"


def test_best_puts_platformless_entries_last() -> None:
    none = Descriptor(MEDIA_TYPE_OCI_MANIFEST, D1, 1)
    amd = Descriptor(MEDIA_TYPE_OCI_MANIFEST, D2, 1, platform=Platform("linux", "amd64"))
    assert Matcher.only(Platform("linux", "amd64")).best([none, amd]) is amd
    assert Matcher.only(Platform("linux", "arm64")).best([none, amd]) is none
    assert Matcher.only(Platform("linux", "arm64")).best([amd]) is None


# -- chain IDs and gc labels -------------------------------------------------------------------


def test_chain_ids_follow_the_oci_spec() -> None:
    # ChainID(L0) = DiffID(L0); ChainID(L0|L1) = sha256(ChainID(L0) + " " + DiffID(L1)).
    c1 = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    c2 = "sha256:" + hashlib.sha256(f"{c1} {D3}".encode()).hexdigest()
    assert chain_ids([D1, D2, D3]) == [D1, c1, c2]
    assert chain_id([D1]) == D1
    assert chain_ids([]) == []
    with pytest.raises(InvalidArgument):
        chain_id([])


def test_chain_ids_pinned_values() -> None:
    # The image-spec identity package's test vectors (with its short fake digests), as values.
    ab = "sha256:970a948bffa8de94d6e22d747ba8c95030e6e546909f98f54e99a13005e173a8"
    abc = "sha256:dee159b33409cefa3f6eda71539f006014283e9d9130c18a1dea7bd8a33c9b1b"
    assert chain_ids(["sha256:a", "sha256:b", "sha256:c"]) == ["sha256:a", ab, abc]


def test_child_gc_labels_as_containerd() -> None:
    config = Descriptor(MEDIA_TYPE_OCI_CONFIG, D1, 1)
    layers = [Descriptor(LAYER, D2, 1), Descriptor(LAYER, D3, 1)]
    assert child_gc_labels([config, *layers]) == {
        "containerd.io/gc.ref.content.config": D1,
        "containerd.io/gc.ref.content.l.0": D2,
        "containerd.io/gc.ref.content.l.1": D3,
    }
    manifests = [Descriptor(MEDIA_TYPE_OCI_MANIFEST, D1, 1), Descriptor(MEDIA_TYPE_DOCKER_MANIFEST, D2, 1),
                 Descriptor(MEDIA_TYPE_OCI_INDEX, D3, 1)]
    assert child_gc_labels(manifests) == {
        "containerd.io/gc.ref.content.m.0": D1,
        "containerd.io/gc.ref.content.m.1": D2,
        "containerd.io/gc.ref.content.0": D3,
    }
