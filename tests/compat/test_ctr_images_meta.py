"""The real `ctr` against dockyardd's Images service: ls, rm, label, tag.

Images are made through the SDK; their targets need not exist in content for these calls,
except `ctr images ls` without -q, which reads the manifest and config (written here through
the content service) for the SIZE and PLATFORMS columns.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from functools import partial

import pytest

from dock.images import OCI_MANIFEST, Descriptor
from tests.compat.conftest import ctr as compat_ctr
from tests.daemon import DaemonProcess

pytestmark = pytest.mark.compat

NS = "tapx7"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
BUSYBOX = "127.0.0.1:5001/tap/busybox:latest"


ctr = partial(compat_ctr, namespace=NS)


async def make(daemon: DaemonProcess, name: str, digest: str = D1, size: int = 349,
               labels: dict[str, str] | None = None) -> None:
    async with daemon.client(NS) as c:
        await c.images.create(name, Descriptor(OCI_MANIFEST, digest, size), labels)


async def test_ctr_images_ls_quiet_and_filters(daemon: DaemonProcess) -> None:
    assert ctr(daemon, "images", "ls", "-q").stdout == ""
    await make(daemon, BUSYBOX, labels={"team": "red"})
    await make(daemon, "docker.io/library/alpine:3", D2)
    res = ctr(daemon, "images", "ls", "-q")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["127.0.0.1:5001/tap/busybox:latest", "docker.io/library/alpine:3"]
    assert ctr(daemon, "images", "ls", "-q", "labels.team==red").stdout.split() == [BUSYBOX]
    assert ctr(daemon, "images", "ls", "-q", f"target.digest=={D2}").stdout.split() == ["docker.io/library/alpine:3"]
    # another namespace sees none of them
    assert ctr(daemon, "images", "ls", "-q", namespace="other").stdout == ""
    res = ctr(daemon, "images", "ls", "-q", "name==")
    assert res.returncode == 1 and "invalid argument" in res.stderr


async def test_ctr_images_rm(daemon: DaemonProcess) -> None:
    await make(daemon, BUSYBOX)
    await make(daemon, "keep")
    res = ctr(daemon, "images", "rm", BUSYBOX)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == BUSYBOX
    # NOT_FOUND is tolerated: a warning, rc 0
    res = ctr(daemon, "images", "rm", "missing")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "" and "missing: image not found" in res.stderr
    res = ctr(daemon, "images", "rm", "--sync", "keep")
    assert res.returncode == 0 and res.stdout.strip() == "keep"
    assert ctr(daemon, "images", "ls", "-q").stdout == ""


async def test_ctr_images_label(daemon: DaemonProcess) -> None:
    await make(daemon, BUSYBOX, labels={"old": "1"})
    res = ctr(daemon, "images", "label", BUSYBOX, "foo=bar", "x=y")
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.strip().split(",")) == ["foo=bar", "old=1", "x=y"]
    res = ctr(daemon, "images", "label", BUSYBOX, "foo=")  # an empty value removes the label
    assert sorted(res.stdout.strip().split(",")) == ["old=1", "x=y"]
    res = ctr(daemon, "images", "label", "--replace-all", BUSYBOX, "only=this")
    assert res.stdout.strip() == "only=this"
    async with daemon.client(NS) as c:
        img = await c.images.get(BUSYBOX)
    assert img.labels == {"only": "this"} and img.target.digest == D1  # target untouched
    res = ctr(daemon, "images", "label", "nothere", "a=b")
    assert res.returncode == 1 and 'image "nothere": not found' in res.stderr


async def test_ctr_images_tag(daemon: DaemonProcess) -> None:
    await make(daemon, BUSYBOX, labels={"k": "v"})
    res = ctr(daemon, "images", "tag", BUSYBOX, "127.0.0.1:5001/tap/busybox:copy", "other:1")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["127.0.0.1:5001/tap/busybox:copy", "other:1"]
    async with daemon.client(NS) as c:
        copy = await c.images.get("127.0.0.1:5001/tap/busybox:copy")
        assert copy.target == Descriptor(OCI_MANIFEST, D1, 349) and copy.labels == {"k": "v"}
    # a taken name: ALREADY_EXISTS, rc 1, in containerd's words
    res = ctr(daemon, "images", "tag", BUSYBOX, "other:1")
    assert res.returncode == 1
    assert 'image "other:1": already exists' in res.stderr
    # --force: Delete, then Create again
    await make(daemon, "src2", D2)
    res = ctr(daemon, "images", "tag", "--force", "src2", "other:1")
    assert res.returncode == 0, res.stderr
    async with daemon.client(NS) as c:
        assert (await c.images.get("other:1")).target.digest == D2
    res = ctr(daemon, "images", "tag", "nothere", "x")
    assert res.returncode == 1 and 'image "nothere": not found' in res.stderr
    # the tag ran inside a lease, which ctr removed again
    assert ctr(daemon, "leases", "ls", "-q").stdout == ""


async def test_ctr_images_ls_reads_manifest_and_config(daemon: DaemonProcess) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "3" * 64]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    layer_size = 1 << 20  # the layer itself is never read by ls: its size comes from the manifest
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": "sha256:" + "4" * 64, "size": layer_size}],
    }).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    async with daemon.client(NS) as c:
        # as a pull does: content written under a lease, so the collector leaves it alone
        lease = await c.leases.create()
        cs = c.content.with_lease(lease.id)
        await cs.write("config", config, expected=config_digest)
        await cs.write("manifest", manifest, expected=manifest_digest,
                       labels={"containerd.io/gc.ref.content.config": config_digest})
        await c.images.create(BUSYBOX, Descriptor(OCI_MANIFEST, manifest_digest, len(manifest)), {"a": "b"})
    res = await asyncio.to_thread(ctr, daemon, "images", "ls")
    assert res.returncode == 0, res.stderr
    rows = [line.split() for line in res.stdout.splitlines()]
    assert rows[0] == ["REF", "TYPE", "DIGEST", "SIZE", "PLATFORMS", "LABELS"]
    total = len(manifest) + len(config) + layer_size
    assert rows[1] == [BUSYBOX, OCI_MANIFEST, manifest_digest, f"{total / 1024 / 1024:.1f}", "MiB",
                       "linux/amd64", "a=b"]
    assert "failed" not in res.stderr, res.stderr
