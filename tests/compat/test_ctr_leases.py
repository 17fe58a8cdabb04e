"""The real `ctr leases` against dockyardd: create, ls, rm, and rm of a missing lease."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path

import pytest

from tests.compat.test_ctr_basics import ctr
from tests.daemon import DaemonProcess

pytestmark = pytest.mark.compat


def test_ctr_leases(daemon: DaemonProcess) -> None:
    res = ctr(daemon, "leases", "create", "--id", "L", "foo=bar")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "L"
    res = ctr(daemon, "leases", "create", "--id", "L")
    assert res.returncode == 1 and 'lease "L": already exists' in res.stderr
    rows = ctr(daemon, "leases", "ls").stdout.splitlines()
    assert rows[0].split() == ["ID", "CREATED", "AT", "LABELS"]
    assert len(rows) == 2
    lease_id, created, labels = rows[1].split()
    assert lease_id == "L"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    # ctr adds a 24 hour expiry itself; labels print sorted
    assert re.fullmatch(r"containerd\.io/gc\.expire=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ,foo=bar", labels), labels
    res = ctr(daemon, "leases", "rm", "L")
    assert res.returncode == 0, res.stderr
    assert ctr(daemon, "leases", "ls").stdout.splitlines()[1:] == []
    res = ctr(daemon, "leases", "rm", "missing")
    assert res.returncode == 1 and 'lease "missing": not found' in res.stderr


def test_ctr_leases_generated_id_and_namespaces(daemon: DaemonProcess) -> None:
    res = ctr(daemon, "leases", "create", namespace="other")
    assert res.returncode == 0, res.stderr
    generated = res.stdout.strip()
    assert re.fullmatch(r"\d+-[A-Za-z0-9_=-]+", generated), generated
    assert ctr(daemon, "leases", "ls", "-q", namespace="other").stdout.split() == [generated]
    assert ctr(daemon, "leases", "ls", "-q").stdout.split() == []
    # `rm --sync` asks the daemon to collect garbage before it answers
    res = ctr(daemon, "leases", "rm", "--sync", generated, namespace="other")
    assert res.returncode == 0, res.stderr


def _oci_archive(path: Path) -> dict[str, str]:
    """A one-layer OCI image archive for `ctr images import`; returns the digests by role."""
    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as t:
        d = tarfile.TarInfo("etc")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        t.addfile(d)
        body = b"kept by the image\n"
        f = tarfile.TarInfo("etc/hello")
        f.size, f.mode = len(body), 0o644
        t.addfile(f, io.BytesIO(body))
    raw = tar_bytes.getvalue()
    layer = gzip.compress(raw, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [digest(raw)]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(layer),
                    "size": len(layer)}],
    }).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest),
        "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "latest"},
    }]}).encode()
    with tarfile.open(path, "w") as out:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                           *((f"blobs/sha256/{digest(b)[7:]}", b) for b in (layer, config, manifest))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return {"layer": digest(layer), "config": digest(config), "manifest": digest(manifest),
            "chain": digest(raw)}


IMAGE = "example.com/gc/test:latest"


def test_ctr_import_keeps_the_image_and_rm_sync_collects_it(daemon: DaemonProcess, tmp_path: Path) -> None:
    """The whole lease/GC contract through ctr: import runs under leases that it deletes at the
    end; the image must keep its blobs and unpacked snapshot; `images rm --sync` frees them."""
    digests = _oci_archive(tmp_path / "img.tar")
    res = ctr(daemon, "images", "import", str(tmp_path / "img.tar"))
    assert res.returncode == 0, res.stderr
    res = ctr(daemon, "leases", "ls", "-q")
    assert res.stdout == ""  # import cleaned up its leases
    # A collection run to its end (deleting a lease of our own with --sync waits for one): the
    # image must come out of it whole.
    assert ctr(daemon, "leases", "create", "--id", "gc-probe").returncode == 0
    assert ctr(daemon, "leases", "delete", "--sync", "gc-probe").returncode == 0
    content = ctr(daemon, "content", "ls", "-q").stdout.split()
    assert sorted(content) == sorted([digests["layer"], digests["config"], digests["manifest"]])
    snaps = ctr(daemon, "snapshots", "ls").stdout.splitlines()[1:]
    assert [s.split()[0] for s in snaps] == [digests["chain"]]
    check = ctr(daemon, "images", "check").stdout.splitlines()[1]
    assert "complete" in check and check.split()[-1] == "true"
    res = ctr(daemon, "images", "rm", "--sync", IMAGE)
    assert res.returncode == 0, res.stderr
    assert ctr(daemon, "content", "ls", "-q").stdout == ""
    assert ctr(daemon, "snapshots", "ls").stdout.splitlines()[1:] == []
    assert os.listdir(daemon.root / "content" / "blobs" / "sha256") == []
