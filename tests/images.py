"""Build test images from local material (Debian's busybox-static), in OCI and Docker archive form.

    tar_bytes = busybox_oci_archive("docker.io/library/busybox:latest")
    Path("bb.tar").write_bytes(tar_bytes)     # `ctr images import bb.tar` takes it
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.rootfs import make_busybox_rootfs

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
EPOCH = 1_700_000_000  # fixed mtimes: the same inputs give the same digests


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_tree(root: Path) -> bytes:
    """A layer tar of the tree at `root`: sorted, owned by root, fixed mtimes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = Path(dirpath) / name
                info = tf.gettarinfo(str(full), arcname=str(full.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = EPOCH
                if info.isreg():
                    with open(full, "rb") as f:
                        tf.addfile(info, f)
                else:
                    tf.addfile(info)
    return buf.getvalue()


@dataclass
class Image:
    """An image's blobs, ready to be written as an archive or pushed."""

    name: str
    manifest: bytes
    config: bytes
    layers: list[bytes]  # compressed layer blobs
    blobs: dict[str, bytes] = field(default_factory=dict)
    layer_tars: list[bytes] = field(default_factory=list)  # the same layers uncompressed

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)


def build_image(name: str, layer_tars: list[bytes], config: dict[str, Any] | None = None,
                architecture: str = "amd64") -> Image:
    layers = [gzip.compress(t, mtime=0) for t in layer_tars]
    cfg = {
        "architecture": architecture, "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"],
                   **(config or {})},
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in layer_tars]},
        "history": [{"created_by": "tests/images.py"} for _ in layer_tars],
    }
    config_blob = json.dumps(cfg, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(b), "size": len(b)} for b in layers],
    }, sort_keys=True).encode()
    blobs = {sha256(b): b for b in [config_blob, manifest, *layers]}
    return Image(name, manifest, config_blob, layers, blobs, list(layer_tars))


def busybox_image(name: str = "docker.io/library/busybox:latest", config: dict[str, Any] | None = None) -> Image:
    with tempfile.TemporaryDirectory(prefix="dy-img-") as tmp:
        root = make_busybox_rootfs(Path(tmp) / "rootfs")
        return build_image(name, [tar_tree(root)], config)


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = EPOCH
    tf.addfile(info, io.BytesIO(data))


def oci_archive(images: list[Image]) -> bytes:
    """An OCI image layout tar (what `ctr images export` writes) holding `images`."""
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": len(img.manifest),
         "annotations": {"io.containerd.image.name": img.name,
                         "org.opencontainers.image.ref.name": img.name.rsplit(":", 1)[-1]}}
        for img in images]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        done: set[str] = set()
        for img in images:
            for digest, blob in img.blobs.items():
                if digest not in done:
                    done.add(digest)
                    _add(tf, f"blobs/sha256/{digest.split(':', 1)[1]}", blob)
        _add(tf, "index.json", json.dumps(index).encode())
    return buf.getvalue()


def busybox_oci_archive(name: str = "docker.io/library/busybox:latest") -> bytes:
    return oci_archive([busybox_image(name)])


def docker_archive(images: list[Image], *, link_duplicates: bool = True) -> bytes:
    """A `docker save` tar (Docker 1.10+ layout): `<config hex>.json`, `<id>/layer.tar` holding
    the *uncompressed* layers, `<id>/VERSION` and `<id>/json`, `manifest.json` and
    `repositories`. A layer already written for an earlier image is a symlink to it, as
    docker save does, when `link_duplicates`."""
    buf = io.BytesIO()
    listing: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: dict[str, str] = {}  # diff id -> path of its layer.tar
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for img in images:
            config_hex = sha256(img.config).split(":", 1)[1]
            parent = ""
            layer_paths = []
            for raw in img.layer_tars:
                # v1 layer ids depend on the image too, so a shared layer gets a new directory
                layer_id = hashlib.sha256(f"{config_hex} {parent} {sha256(raw)}".encode()).hexdigest()
                path = f"{layer_id}/layer.tar"
                _add_dir(tf, layer_id + "/")
                _add(tf, f"{layer_id}/VERSION", b"1.0")
                _add(tf, f"{layer_id}/json", json.dumps({"id": layer_id, "parent": parent}).encode())
                diff = sha256(raw)
                if diff in written and link_duplicates:
                    _add_symlink(tf, path, f"../{written[diff]}")
                else:
                    _add(tf, path, raw)
                    written.setdefault(diff, path)
                layer_paths.append(path)
                parent = layer_id
            _add(tf, f"{config_hex}.json", img.config)
            tags = [familiar_tag(img.name)] if img.name else []
            listing.append({"Config": f"{config_hex}.json", "RepoTags": tags, "Layers": layer_paths})
            for tag in tags:
                repo, _, t = tag.rpartition(":")
                repositories.setdefault(repo, {})[t] = parent
        _add(tf, "manifest.json", json.dumps(listing).encode())
        _add(tf, "repositories", json.dumps(repositories).encode())
    return buf.getvalue()


def familiar_tag(name: str) -> str:
    """docker.io/library/busybox:latest -> busybox:latest (what docker save writes)."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _add_dir(tf: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = EPOCH
    tf.addfile(info)


def _add_symlink(tf: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mtime = EPOCH
    tf.addfile(info)


# A three-layer image over busybox: the second layer deletes (a whiteout and an opaque
# directory), adds a hard link and a setuid file; the third deletes what the second added.
def multilayer_image(name: str = "docker.io/library/layered:1") -> Image:
    from tests.unit.archive_fixtures import build_tar, directory, file, hardlink, opaque, whiteout

    with tempfile.TemporaryDirectory(prefix="dy-img-") as tmp:
        root = make_busybox_rootfs(Path(tmp) / "rootfs")
        (root / "etc" / "motd").write_text("welcome\n")
        (root / "etc" / "conf.d").mkdir()
        (root / "etc" / "conf.d" / "old.conf").write_text("old\n")
        (root / "etc" / "keep").write_text("kept\n")
        base = tar_tree(root)
    second = build_tar([
        directory("etc"), whiteout("etc/motd"),
        directory("etc/conf.d"), opaque("etc/conf.d"), file("etc/conf.d/new.conf", b"new\n"),
        directory("bin"), file("bin/tool", b"#!/bin/sh\necho tool\n", mode=0o755),
        hardlink("bin/tool-link", "bin/tool"),
        file("bin/su-tool", b"#!/bin/sh\nid\n", mode=0o4755),
        directory("data"), file("data/temp", b"temporary\n"),
    ])
    third = build_tar([directory("data"), whiteout("data/temp"), file("data/final", b"final\n")])
    return build_image(name, [base, second, third], {"Cmd": ["/bin/tool"], "WorkingDir": "/data", "User": "0"})
