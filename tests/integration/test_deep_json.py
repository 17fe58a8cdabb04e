"""JSON nested deeper than Python's parser goes (`[[[[...]]]]`, 100,000 levels) is refused in words.

json.loads raises RecursionError on it, not ValueError, with Python's "maximum recursion depth
exceeded": wherever untrusted JSON is decoded (a container's spec, an image config) the user
must see one plain message instead.
"""

from __future__ import annotations

import json

import pytest

from dock import runner
from dock.client import Client
from dockyard_common.errors import InvalidArgument, NotFound
from tests.conformance.mounts import mounts_under
from tests.daemon import DaemonProcess, shims_in_bundles
from tests.images import busybox_image
from tests.integration.test_cli import dock
from tests.integration.test_isolation import c, make_container, new_id
from tests.integration.test_user_errors import PYTHON_WORDS, one_clean_line, store_image

__all__ = ["c"]  # test_isolation's SDK client fixture; d comes from conftest.py

pytestmark = [pytest.mark.root]

DEPTH = 100_000
DEEP = b"[" * DEPTH + b"]" * DEPTH


def _deep_object(key: str) -> bytes:
    """A JSON object whose `key` holds DEEP: it passes a check of the top-level type."""
    return b'{"%s": ' % key.encode() + DEEP + b"}"


@pytest.mark.parametrize("spec", [DEEP, _deep_object("process")], ids=["array", "object"])
async def test_a_deeply_nested_spec_is_invalid_argument_in_words(d: DaemonProcess, c: Client, spec: bytes) -> None:
    cid = new_id("deep")
    shims = shims_in_bundles(d)
    mounts = await make_container(c, cid, spec)
    try:
        with pytest.raises(InvalidArgument) as info:
            await c.tasks.create(cid, mounts)
        message = info.value.message
        assert "not valid JSON: nested too deeply" in message, message
        assert not any(w in message for w in (*PYTHON_WORDS, "recursion")), message
        with pytest.raises(NotFound):
            await c.tasks.get(cid)
        assert shims_in_bundles(d) == shims and mounts_under(str(d.base)) == []
        # dock reads the same record: `start` refuses it in one line, `info` still shows it.
        line = one_clean_line(dock(d.address, "tasks", "start", "-d", cid), "nested too deeply")
        assert cid in line
        info_res = dock(d.address, "containers", "info", cid)
        assert info_res.returncode == 0, info_res.stderr
        assert json.loads(info_res.stdout)["spec"]["bytes"] == len(spec)
    finally:
        await runner.remove_container(c, cid)


async def test_an_image_config_nested_too_deeply_is_one_plain_line(d: DaemonProcess, c: Client) -> None:
    base = busybox_image("docker.io/library/busybox:latest")
    name = f"deep/config-{new_id('x')}:1"
    lease = await c.leases.create()
    try:
        await store_image(c, lease.id, name, base, _deep_object("config"))
        for fmt in ("table", "json"):
            line = one_clean_line(dock(d.address, "--format", fmt, "images", "inspect", name),
                                  "not valid JSON: nested too deeply")
            assert "recursion" not in line, line
        one_clean_line(dock(d.address, "run", "--rm", "--name", new_id("deep"), name, "true"), "nested too deeply")
    finally:
        await c.images.delete(name)
        await c.leases.delete(lease.id)
