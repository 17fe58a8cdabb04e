"""Image documents: OCI and Docker schema 2 manifests, indexes (manifest lists) and configs,
the descriptors that point at blobs, layer media types, platforms, chain IDs and gc labels.
Pure (no I/O): the daemon reads and writes content with it, the CLI resolves images with it.

Words
    descriptor  what points at a blob: media type, digest, size, annotations, and (in an
                index) the platform the blob is for.
    manifest    one image for one platform: a config descriptor and its layers, in order.
    index       a list of manifests (or of further indexes), usually one per platform.
                Docker calls it a manifest list.
    config      the image config: os/architecture, the run defaults (Cmd, Env, ...) and
                `rootfs.diff_ids`, the digests of the *uncompressed* layers.
    chain ID    the identity of a stack of layers (OCI image-spec, config.md):
                ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
                Unpacked snapshots are named by it, so images sharing lower layers share snapshots.

Parsing (`parse_document`, `parse_index`, `parse_manifest`, `parse_config`) validates as it
reads: not JSON, a field of the wrong type or missing, an unknown media type, a digest
go-digest refuses, a negative or absurd size, all raise InvalidArgument naming the document
and the field. Docker schema 1 manifests are refused with a message saying so.

Platforms follow containerd's `platforms` package: `parse_platform("linux/arm64")`,
`normalize` (x86_64 -> amd64, aarch64 -> arm64 with no variant, armhf -> arm/v7, ...),
`Matcher.only(p)` (p, then what p's CPU also runs: amd64 also matches 386, arm64 also arm/v8..v5)
and `Matcher.strict(p)`; `default_platform()` is the host's (linux/amd64 on x86-64 hosts).

    doc = parse_document(data, MEDIA_TYPE_OCI_INDEX)     # Index or Manifest
    best = Matcher.default().best(doc.manifests)         # the descriptor for this host
    chain = chain_ids(config.diff_ids)                   # chain[-1] names the unpacked rootfs
"""

from __future__ import annotations

import enum
import hashlib
import json
import platform as _host
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dockyard_common.errors import InvalidArgument
from dockyard_common.goquote import go_quote
from dockyard_common.jsonutil import json_value
from dockyard_common.reference import digest_problem

# -- media types ---------------------------------------------------------------------------

MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MEDIA_TYPE_CONTAINERD_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"

INDEX_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_CONTAINERD_CHECKPOINT_CONFIG})
SCHEMA1_TYPES = frozenset({MEDIA_TYPE_DOCKER_SCHEMA1, MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED})

# Annotations containerd and OCI use to name what an index entry is.
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

# Labels that make the garbage collector follow references (containerd's gc labels).
LABEL_GC_REF_CONTENT = "containerd.io/gc.ref.content"
LABEL_GC_REF_SNAPSHOT = "containerd.io/gc.ref.snapshot"
LABEL_UNCOMPRESSED = "containerd.io/uncompressed"

# Limits: documents are read whole, so they get a modest cap; blobs get a sanity cap only.
MAX_DOCUMENT_SIZE = 8 << 20
MAX_BLOB_SIZE = 1 << 42  # 4 TiB: past that a size is a mistake or an attack
MAX_INDEX_DEPTH = 8
MAX_ENTRIES = 10_000  # manifests in an index, layers in a manifest

SCHEMA1_MESSAGE = ("Docker schema 1 manifests are not supported (deprecated since Docker 1.10): "
                   "pull or build the image again with a current tool to get a schema 2 or OCI manifest")


# -- layer media types and their compression ----------------------------------------------


class Compression(enum.Enum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP = MEDIA_TYPE_OCI_LAYER + "+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD = MEDIA_TYPE_OCI_LAYER + "+zstd"
MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

_OCI_BASES = {MEDIA_TYPE_OCI_LAYER, MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE}
_DOCKER_UNKNOWN = {MEDIA_TYPE_DOCKER_LAYER, MEDIA_TYPE_DOCKER_LAYER_FOREIGN}
_DOCKER_GZIP = {MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP}
_OCI_SUFFIXES = {"gzip": Compression.GZIP, "zstd": Compression.ZSTD}


def compression_for_media_type(media_type: str) -> Compression | None:
    """The compression a layer media type declares; None = "detect it" (Docker's plain tar)."""
    base, *suffixes = media_type.strip().split("+")
    if "encrypted" in suffixes:
        raise InvalidArgument(f"layer media type {media_type!r}: encrypted layers are not supported")
    if base in _OCI_BASES:
        if not suffixes:
            return Compression.NONE
        if len(suffixes) == 1 and suffixes[0] in _OCI_SUFFIXES:
            return _OCI_SUFFIXES[suffixes[0]]
    elif not suffixes:
        if base in _DOCKER_UNKNOWN:
            return None
        if base in _DOCKER_GZIP:
            return Compression.GZIP
    raise InvalidArgument(f"unrecognised layer media type {media_type!r}")


def media_type_for(compression: Compression, *, docker: bool = False) -> str:
    """The layer media type to record for a blob written with `compression`."""
    if docker:
        if compression is Compression.ZSTD:
            raise InvalidArgument("docker layer media types have no zstd variant")
        return MEDIA_TYPE_DOCKER_LAYER_GZIP if compression is Compression.GZIP else MEDIA_TYPE_DOCKER_LAYER
    return {
        Compression.NONE: MEDIA_TYPE_OCI_LAYER,
        Compression.GZIP: MEDIA_TYPE_OCI_LAYER_GZIP,
        Compression.ZSTD: MEDIA_TYPE_OCI_LAYER_ZSTD,
    }[compression]


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_config(media_type: str) -> bool:
    return media_type in CONFIG_TYPES


def is_layer(media_type: str) -> bool:
    try:
        compression_for_media_type(media_type)
    except InvalidArgument:
        return False
    return True


def is_document(media_type: str) -> bool:
    """Index, manifest or config: blobs that are JSON, read whole and kept small."""
    return is_index(media_type) or is_manifest(media_type) or is_config(media_type)


# -- platforms ------------------------------------------------------------------------------

_SPECIFIER_PART = re.compile(r"[A-Za-z0-9_-]+")
_KNOWN_OS = frozenset({"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "js", "linux",
                       "nacl", "netbsd", "openbsd", "plan9", "solaris", "windows", "zos"})
_KNOWN_ARCH = frozenset({"386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
                         "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le", "ppc",
                         "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm"})


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __str__(self) -> str:
        return format_platform(self)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out


def normalize_os(os_name: str) -> str:
    if not os_name:
        return "linux"  # containerd uses runtime.GOOS; this daemon only runs on Linux
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's normalizeArch: the usual aliases, and the variants that mean "the default"."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "i386":
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant == "v1" else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def normalize(p: Platform) -> Platform:
    arch, variant = normalize_arch(p.architecture, p.variant)
    return Platform(normalize_os(p.os), arch, variant, p.os_version, p.os_features)


def host_arch() -> str:
    arch, _ = normalize_arch(_host.machine(), "")
    return arch


def default_platform() -> Platform:
    """The host's platform, as containerd's platforms.DefaultSpec (linux/amd64 on x86-64)."""
    return Platform("linux", host_arch())


def format_platform(p: Platform) -> str:
    if not p.os:
        return "unknown"
    return "/".join(x for x in (p.os, p.architecture, p.variant) if x)


def parse_platform(specifier: str) -> Platform:
    """`os`, `arch`, `os/arch` or `os/arch/variant`, normalized as containerd's platforms.Parse."""
    if "*" in specifier:
        raise InvalidArgument(f"{specifier!r}: wildcards not yet supported")
    parts = specifier.split("/")
    for part in parts:
        if not _SPECIFIER_PART.fullmatch(part):
            raise InvalidArgument(f"{part!r} is an invalid component of {specifier!r}: platform specifier "
                                  f"component must match \"^[A-Za-z0-9_-]+$\"")
    if len(parts) == 1:
        os_name = normalize_os(parts[0])
        if os_name in _KNOWN_OS:
            return Platform(os_name, host_arch())
        arch, variant = normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _KNOWN_ARCH:
            return Platform("linux", arch, variant)
        raise InvalidArgument(f"{specifier!r}: unknown operating system or architecture")
    if len(parts) == 2:
        arch, variant = normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(normalize_os(parts[0]), arch, variant)
    if len(parts) == 3:
        arch, variant = normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return Platform(normalize_os(parts[0]), arch, variant)
    raise InvalidArgument(f"{specifier!r}: cannot parse platform specifier")


def _platform_vector(p: Platform) -> list[Platform]:
    """p, then the platforms a CPU of p also runs, best first (containerd's platformVector)."""
    out = [p]
    if p.architecture == "amd64":
        level = _variant_number(p.variant)
        if level is not None and level > 1:
            out += [Platform(p.os, "amd64", f"v{v}", p.os_version, p.os_features) for v in range(level - 1, 0, -1)]
        out.append(Platform(p.os, "386", "", p.os_version, p.os_features))
    elif p.architecture == "arm":
        level = _variant_number(p.variant)
        if level is not None and level > 5:
            out += [Platform(p.os, "arm", f"v{v}", p.os_version, p.os_features) for v in range(level - 1, 4, -1)]
    elif p.architecture == "arm64":
        out += _platform_vector(Platform(p.os, "arm", p.variant or "v8", p.os_version, p.os_features))
    return out


def _variant_number(variant: str) -> int | None:
    try:
        return int(variant.removeprefix("v"))
    except ValueError:
        return None


def _same(a: Platform, b: Platform) -> bool:
    return a.os == b.os and a.architecture == b.architecture and a.variant == b.variant


class Matcher:
    """Which platforms an operation wants, and which it prefers (containerd's MatchComparer).

    `candidates` is an ordered list (earlier = better); an empty list with `everything` set
    matches every platform (containerd's platforms.All).
    """

    def __init__(self, candidates: Sequence[Platform], everything: bool = False) -> None:
        self.candidates = [normalize(p) for p in candidates]
        self.everything = everything

    @classmethod
    def only(cls, p: Platform) -> Matcher:
        return cls(_platform_vector(normalize(p)))

    @classmethod
    def strict(cls, p: Platform) -> Matcher:
        return cls([p])

    @classmethod
    def default(cls) -> Matcher:
        return cls.only(default_platform())

    @classmethod
    def all(cls) -> Matcher:
        return cls([], everything=True)

    @classmethod
    def parse(cls, specifier: str, *, strict: bool = False) -> Matcher:
        """The matcher for a user's `--platform` ("" = the default)."""
        if not specifier:
            return cls.default()
        p = parse_platform(specifier)
        return cls.strict(p) if strict else cls.only(p)

    def rank(self, p: Platform | None) -> int | None:
        """0 for the best match, higher for worse, None for no match."""
        if self.everything:
            return 0
        if p is None:
            return None
        n = normalize(p)
        for i, c in enumerate(self.candidates):
            if _same(c, n):
                return i
        return None

    def match(self, p: Platform | None) -> bool:
        return self.rank(p) is not None

    def best(self, descriptors: Iterable[Descriptor]) -> Descriptor | None:
        """The best-matching descriptor; ones with no platform come after all that match one."""
        ranked: list[tuple[int, int, Descriptor]] = []
        for i, d in enumerate(descriptors):
            if d.platform is None:
                ranked.append((len(self.candidates) + 1, i, d))
            elif (r := self.rank(d.platform)) is not None:
                ranked.append((r, i, d))
        return min(ranked, key=lambda t: (t[0], t[1]))[2] if ranked else None

    def __str__(self) -> str:
        if self.everything:
            return "all platforms"
        return format_platform(self.candidates[0]) if self.candidates else "no platform"


# -- documents ------------------------------------------------------------------------------


@dataclass
class Descriptor:
    """An OCI descriptor: what points at a blob, in manifests and indexes, as an image record's
    target (which keeps no platform or URLs) and on the wire of the daemon's API."""

    media_type: str = ""
    digest: str = ""
    size: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    urls: list[str] = field(default_factory=list)

    def record(self) -> Descriptor:
        """A copy as image records and the differ keep it: no platform, no URLs."""
        return Descriptor(self.media_type, self.digest, self.size, dict(self.annotations))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        return out


@dataclass
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Index:
    media_type: str
    manifests: list[Descriptor]
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class ImageConfig:
    """The parts of an image config the daemon uses; `raw` is the whole document."""

    os: str
    architecture: str
    variant: str
    diff_ids: list[str]
    config: dict[str, Any]  # the run defaults: Cmd, Entrypoint, Env, WorkingDir, User, ...
    raw: dict[str, Any]

    @property
    def platform(self) -> Platform:
        return Platform(self.os, self.architecture, self.variant,
                        str(self.raw.get("os.version", "") or ""),
                        tuple(self.raw.get("os.features", None) or ()))


def _problem(where: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{where}: {message}")


def load_json(data: bytes, where: str) -> Any:
    """A document's JSON, read as Go reads it (`jsonutil.json_value`: NaN, a number past a
    float64 and deep nesting refused, a lone surrogate escape U+FFFD); InvalidArgument naming
    `where` otherwise. Every document parsed here, and the import archives' own JSON files."""
    if len(data) > MAX_DOCUMENT_SIZE:
        raise _problem(where, f"document of {len(data)} bytes is larger than the limit of {MAX_DOCUMENT_SIZE}")
    return json_value(data, where, InvalidArgument)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _problem(where, f"expected a JSON object, found {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)


def _string(obj: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise _problem(where, f"missing field {key!r}")
        return ""
    if not isinstance(value, str):
        raise _problem(where, f"field {key!r} must be a string, not {_json_type(value)}")
    return value


def _string_map(obj: dict[str, Any], key: str, where: str) -> dict[str, str]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _problem(where, f"field {key!r} must be an object of strings")
    return dict(value)


def _array(obj: dict[str, Any], key: str, where: str, *, required: bool = False) -> list[Any]:
    value = obj.get(key)
    if value is None:
        if required:
            raise _problem(where, f"missing field {key!r}")
        return []
    if not isinstance(value, list):
        raise _problem(where, f"field {key!r} must be an array, not {_json_type(value)}")
    if len(value) > MAX_ENTRIES:
        raise _problem(where, f"field {key!r} has {len(value)} entries, more than the limit of {MAX_ENTRIES}")
    return value


def check_digest(digest: str, where: str) -> str:
    problem = digest_problem(digest)
    if problem is not None:
        raise _problem(where, f"digest {digest!r}: {problem}")
    return digest


def check_size(size: Any, where: str, limit: int = MAX_BLOB_SIZE) -> int:
    if not isinstance(size, int) or isinstance(size, bool):
        raise _problem(where, f"size must be an integer, not {_json_type(size)}")
    if size < 0:
        raise _problem(where, f"size {size} is negative")
    if size > limit:
        raise _problem(where, f"size {size} is larger than the limit of {limit}")
    return size


def parse_platform_json(value: Any, where: str) -> Platform:
    obj = _object(value, where)
    features = _array(obj, "os.features", where)
    if not all(isinstance(f, str) for f in features):
        raise _problem(where, "field 'os.features' must be an array of strings")
    return Platform(_string(obj, "os", where, required=True), _string(obj, "architecture", where, required=True),
                    _string(obj, "variant", where), _string(obj, "os.version", where), tuple(features))


def parse_descriptor(value: Any, where: str) -> Descriptor:
    obj = _object(value, where)
    media_type = _string(obj, "mediaType", where, required=True)
    if not media_type:
        raise _problem(where, "mediaType must not be empty")
    digest = check_digest(_string(obj, "digest", where, required=True), where)
    if "size" not in obj:
        raise _problem(where, "missing field 'size'")
    limit = MAX_DOCUMENT_SIZE if is_document(media_type) else MAX_BLOB_SIZE
    size = check_size(obj["size"], f"{where} ({media_type})", limit)
    urls = _array(obj, "urls", where)
    if not all(isinstance(u, str) for u in urls):
        raise _problem(where, "field 'urls' must be an array of strings")
    platform = parse_platform_json(obj["platform"], f"{where} platform") if obj.get("platform") is not None else None
    return Descriptor(media_type, digest, size, _string_map(obj, "annotations", where), platform, list(urls))


def _refuse_schema1(obj: dict[str, Any], media_type: str, where: str) -> None:
    if media_type in SCHEMA1_TYPES or obj.get("schemaVersion") == 1 or "fsLayers" in obj:
        raise _problem(where, SCHEMA1_MESSAGE)


def _schema_version(obj: dict[str, Any], where: str) -> None:
    version = obj.get("schemaVersion")
    if version is None:
        raise _problem(where, "missing field 'schemaVersion'")
    if version != 2 or isinstance(version, bool):
        raise _problem(where, f"unsupported schemaVersion {version!r} (want 2)")


def document_kind(data: bytes, media_type: str, where: str) -> str:
    """"index" or "manifest" for a document, checked against its declared media type."""
    obj = _object(load_json(data, where), where)
    declared = media_type
    inner = obj.get("mediaType")
    _refuse_schema1(obj, declared if declared else inner if isinstance(inner, str) else "", where)
    if isinstance(inner, str) and inner and declared and inner != declared:
        raise _problem(where, f"document says mediaType {inner!r} but was referred to as {declared!r}")
    mt = declared or (inner if isinstance(inner, str) else "")
    if not mt:  # an OCI document may omit mediaType: its shape tells
        mt = MEDIA_TYPE_OCI_INDEX if "manifests" in obj else MEDIA_TYPE_OCI_MANIFEST
    if is_index(mt):
        return "index"
    if is_manifest(mt):
        return "manifest"
    raise _problem(where, f"unsupported media type {mt!r} (want an image index or manifest)")


def parse_manifest(data: bytes, media_type: str = "", where: str = "manifest") -> Manifest:
    obj = _object(load_json(data, where), where)
    _refuse_schema1(obj, media_type, where)
    _schema_version(obj, where)
    mt = _media_type(obj, media_type, MEDIA_TYPE_OCI_MANIFEST, where)
    if not is_manifest(mt):
        raise _problem(where, f"media type {mt!r} is not an image manifest")
    if "manifests" in obj:
        raise _problem(where, "a manifest must not have a 'manifests' field (is it an index?)")
    if obj.get("config") is None:
        raise _problem(where, "missing field 'config'")
    config = parse_descriptor(obj["config"], f"{where} config")
    if not is_config(config.media_type):
        raise _problem(where, f"config media type {config.media_type!r} is not an image config")
    layers = [parse_descriptor(v, f"{where} layer {i}") for i, v in enumerate(_array(obj, "layers", where))]
    for i, layer in enumerate(layers):
        try:
            compression_for_media_type(layer.media_type)
        except InvalidArgument as exc:
            raise _problem(f"{where} layer {i}", exc.message) from None
    return Manifest(mt, config, layers, _string_map(obj, "annotations", where))


def parse_index(data: bytes, media_type: str = "", where: str = "index") -> Index:
    obj = _object(load_json(data, where), where)
    _refuse_schema1(obj, media_type, where)
    _schema_version(obj, where)
    mt = _media_type(obj, media_type, MEDIA_TYPE_OCI_INDEX, where)
    if not is_index(mt):
        raise _problem(where, f"media type {mt!r} is not an image index")
    if "config" in obj or "layers" in obj:
        raise _problem(where, "an index must not have 'config' or 'layers' fields (is it a manifest?)")
    entries = [parse_descriptor(v, f"{where} manifest {i}")
               for i, v in enumerate(_array(obj, "manifests", where, required=True))]
    for i, entry in enumerate(entries):
        if entry.media_type in SCHEMA1_TYPES:
            raise _problem(f"{where} manifest {i}", SCHEMA1_MESSAGE)
        if not (is_manifest(entry.media_type) or is_index(entry.media_type)):
            raise _problem(f"{where} manifest {i}",
                           f"media type {entry.media_type!r} is not a manifest or index")
    return Index(mt, entries, _string_map(obj, "annotations", where))


def parse_document(data: bytes, media_type: str = "", where: str = "document") -> Index | Manifest:
    if document_kind(data, media_type, where) == "index":
        return parse_index(data, media_type, where)
    return parse_manifest(data, media_type, where)


def _media_type(obj: dict[str, Any], declared: str, default: str, where: str) -> str:
    inner = _string(obj, "mediaType", where)
    if inner and declared and inner != declared:
        raise _problem(where, f"document says mediaType {inner!r} but was referred to as {declared!r}")
    return declared or inner or default


def parse_config(data: bytes, where: str = "image config") -> ImageConfig:
    obj = _object(load_json(data, where), where)
    os_name = _string(obj, "os", where, required=True)
    arch = _string(obj, "architecture", where, required=True)
    if not os_name or not arch:
        raise _problem(where, "'os' and 'architecture' must not be empty")
    if obj.get("rootfs") is None:
        raise _problem(where, "missing field 'rootfs'")
    rootfs = _object(obj["rootfs"], f"{where} rootfs")
    kind = _string(rootfs, "type", f"{where} rootfs", required=True)
    if kind != "layers":
        raise _problem(where, f"rootfs type {kind!r} is not supported (want 'layers')")
    diff_ids = _array(rootfs, "diff_ids", f"{where} rootfs", required=True)
    for i, d in enumerate(diff_ids):
        if not isinstance(d, str):
            raise _problem(where, f"rootfs.diff_ids[{i}] must be a string, not {_json_type(d)}")
        check_digest(d, f"{where} rootfs.diff_ids[{i}]")
    run = obj.get("config")
    run = _object(run, f"{where} config") if run is not None else {}
    _check_fields(obj, _CONFIG_FIELDS, where)
    _check_fields(run, _RUN_FIELDS, where, "config.")
    for i, entry in enumerate(_array(obj, "history", where)):
        _check_fields(_object(entry, f"{where} history[{i}]"), _HISTORY_FIELDS, where, f"history[{i}].")
    return ImageConfig(os_name, arch, _string(obj, "variant", where), list(diff_ids), run, obj)


# The JSON types of the image config's fields (OCI image-spec config.md, and Docker's container
# config where it adds fields the daemon or `dock` reads). containerd decodes a config into Go
# structs, which refuse a field of another type (null is "unset" for every field); checking
# here gives the same verdict at import, pull, inspect and run, in words naming the field.
# Fields not listed are not read by anyone and stay unchecked, as in Go.
_STRING, _STRINGS, _BOOL, _INT = "a string", "an array of strings", "a boolean", "an integer"
_OBJECT, _SET, _STRING_MAP = "an object", "an object of objects", "an object of strings"
_CONFIG_FIELDS = {"created": _STRING, "author": _STRING, "os.version": _STRING, "os.features": _STRINGS}
_RUN_FIELDS = {"User": _STRING, "ExposedPorts": _SET, "Env": _STRINGS, "Entrypoint": _STRINGS, "Cmd": _STRINGS,
               "Volumes": _SET, "WorkingDir": _STRING, "Labels": _STRING_MAP, "StopSignal": _STRING,
               "ArgsEscaped": _BOOL, "Shell": _STRINGS, "OnBuild": _STRINGS, "StopTimeout": _INT,
               "Healthcheck": _OBJECT}
_HISTORY_FIELDS = {"created": _STRING, "created_by": _STRING, "author": _STRING, "comment": _STRING,
                   "empty_layer": _BOOL}


def _check_fields(obj: dict[str, Any], types: dict[str, str], where: str, prefix: str = "") -> None:
    for key, want in types.items():
        value = obj.get(key)
        if value is not None and not _has_type(value, want):
            raise _problem(where, f"field {prefix + key!r} must be {want}, {_what_is_wrong(value, want)}")


def _what_is_wrong(value: Any, want: str) -> str:
    """What about `value` is not `want`: its type, or the entry of the array or object that is
    not (an Env of [{"a": 1}] is an array, but not one of strings)."""
    if want == _STRINGS and isinstance(value, list):
        i, entry = next((i, v) for i, v in enumerate(value) if not isinstance(v, str))
        return f"but entry {i} is {_json_type(entry)}"
    if want in (_STRING_MAP, _SET) and isinstance(value, dict):
        key, entry = next((k, v) for k, v in value.items() if not _has_type_entry(v, want))
        return f"but the value of {go_quote(key[:100])} is {_json_type(entry)}"
    return f"not {_json_type(value)}"


def _has_type_entry(entry: Any, want: str) -> bool:
    return isinstance(entry, str) if want == _STRING_MAP else entry is None or isinstance(entry, dict)


def _has_type(value: Any, want: str) -> bool:
    if want == _STRING:
        return isinstance(value, str)
    if want == _BOOL:
        return isinstance(value, bool)
    if want == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if want == _OBJECT:
        return isinstance(value, dict)
    if want == _STRINGS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    # _STRING_MAP, or _SET: Go's map[string]struct{}; each value an object (null counts as one, as in Go)
    return isinstance(value, dict) and all(_has_type_entry(v, want) for v in value.values())


# -- identities and labels ---------------------------------------------------------------------


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of each prefix of the layer stack (OCI image-spec)."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(diff_id if not out else sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out


def chain_id(diff_ids: Sequence[str]) -> str:
    if not diff_ids:
        raise InvalidArgument("an image with no layers has no chain ID")
    return chain_ids(diff_ids)[-1]


def child_gc_labels(children: Sequence[Descriptor]) -> dict[str, str]:
    """The labels by which a manifest or index keeps its children (containerd's ChildGCLabels):
    `gc.ref.content.config`, `gc.ref.content.l.<i>` for layers, `gc.ref.content.m.<i>` for
    manifests, `gc.ref.content.<i>` for anything else."""
    labels: dict[str, str] = {}
    counts: dict[str, int] = {}
    for child in children:
        if is_config(child.media_type):
            key = f"{LABEL_GC_REF_CONTENT}.config"
        elif is_manifest(child.media_type):
            key = f"{LABEL_GC_REF_CONTENT}.m."
        elif is_layer(child.media_type):
            key = f"{LABEL_GC_REF_CONTENT}.l."
        else:
            key = f"{LABEL_GC_REF_CONTENT}."
        n = counts.get(key, 0)
        counts[key] = n + 1
        if n > 0 or key.endswith("."):
            key = f"{key}{n}"
        labels[key] = child.digest
    return labels


def snapshot_gc_label(snapshotter: str) -> str:
    return f"{LABEL_GC_REF_SNAPSHOT}.{snapshotter}"


def encode(document: Any) -> bytes:
    """Compact JSON, as Go's encoding/json writes it (the digest depends on the bytes)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_json(m: Manifest) -> dict[str, Any]:
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": m.media_type, "config": m.config.to_json(),
                           "layers": [layer.to_json() for layer in m.layers]}
    if m.annotations:
        out["annotations"] = dict(m.annotations)
    return out


def index_json(i: Index) -> dict[str, Any]:
    out: dict[str, Any] = {"schemaVersion": 2, "mediaType": i.media_type,
                           "manifests": [d.to_json() for d in i.manifests]}
    if i.annotations:
        out["annotations"] = dict(i.annotations)
    return out
