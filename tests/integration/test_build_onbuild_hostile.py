"""Hostile base images for `dock build` (the dockyard.build.v1.Builder RPC of a real dockyardd):
ONBUILD triggers a registry or a hand-written config could carry — text that is not valid
Unicode (it crashed the whole daemon through the Go Dockerfile parser), NULs (the parser stopped
at them: the trigger shown was not the trigger run), several instructions in one trigger,
thousands of triggers, megabytes of trigger quoted back, triggers Docker refuses, a COPY --from
naming a stage that is not there —; a base config holding text that is not valid Unicode; a RUN
step leaving a name that layers reserve for whiteouts; a Dockerfile of thousands of chained
stages. Each is one clear error of the right kind (or a build), the daemon lives on and logs no
traceback, and nothing is left behind: the build's private directory, leases, snapshots,
containers, mounts.

The hostile images are written straight into the content store (as a registry's blobs would
be), so the daemon's import checks do not stand in the way.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import tarfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dock.build import BuildAPI, BuildOptions, BuildResult, Event
from dock.build import BuildEvent as ClientEvent
from dock.client import Client
from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound
from dockyard_common.imagespec import MEDIA_TYPE_OCI_MANIFEST, Descriptor
from supervisor.build.dockerfile import DockerfileError, parse_triggers
from tests.daemon import DaemonProcess, daemon_with_busybox
from tests.images import Image, build_image
from tests.waiting import wait_until_async

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="the daemon needs root")]

SMUGGLED = "/tmp/dy-onbuild-smuggled"


@dataclass
class Rig:
    d: DaemonProcess
    layer: bytes  # busybox's rootfs, uncompressed

    def build_dirs(self) -> list[str]:
        tmp = self.d.root / "tmp"
        return sorted(p.name for p in tmp.iterdir() if p.name.startswith("build-")) if tmp.is_dir() else []


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with daemon_with_busybox("dy-onbuild-", "docker.io/library/busybox:latest") as (d, _, layer):
        yield Rig(d, layer)
        assert d.proc.poll() is None, "the daemon died"


@pytest.fixture
async def client(rig: Rig) -> AsyncIterator[Client]:
    async with rig.d.client() as c:
        yield c


async def put_image(c: Client, img: Image) -> str:
    """The image's blobs written as they are (rooted for the collector) and its record."""
    for digest, blob in img.blobs.items():
        await c.content.write(f"hostile-{digest}", blob, expected=digest, labels={"containerd.io/gc.root": "test"})
    await c.images.create(img.name, Descriptor(MEDIA_TYPE_OCI_MANIFEST, img.manifest_digest, len(img.manifest)))
    return img.name


async def hostile(rig: Rig, c: Client, name: str, config: dict[str, Any]) -> str:
    return await put_image(c, build_image(f"docker.io/library/hostile-{name}:1", [rig.layer], config))


def context() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("file.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"ctx"))
    return buf.getvalue()


async def build(c: Client, dockerfile: str, tag: str = "") -> list[Event]:
    options = BuildOptions(dockerfile=dockerfile.encode(), tags=[tag] if tag else [])
    return [e async for e in BuildAPI(c).build(context(), options)]


async def state(c: Client) -> tuple[set[str], set[str], set[str]]:
    snaps = {s.name async for s in c.snapshots.using("overlayfs").list()}
    return snaps, {lease.id for lease in await c.leases.list()}, {x.id for x in await c.containers.list()}


async def nothing_left(rig: Rig, c: Client, before: tuple[set[str], set[str], set[str]]) -> None:
    await wait_until_async(lambda: not rig.build_dirs(), 30, what="the build's private directory to go")

    async def same() -> bool:
        return await state(c) == before

    await wait_until_async(same, 30, what="the build's leases, snapshots and containers to go")
    mounts = Path("/proc/self/mounts").read_text()
    assert str(rig.d.root / "tmp") not in mounts, mounts


def output(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, ClientEvent) and e.kind == "output")


# -- triggers ----------------------------------------------------------------------------------------


async def test_a_trigger_that_is_not_unicode_reads_as_go_reads_it(rig: Rig, client: Client) -> None:
    """`\\udcff` in the config's JSON was a lone surrogate in Python, and the Go parser's wrapper
    crashed (SIGSEGV) the daemon on it: every container's supervisor gone for one build. Read as
    Go reads JSON (jsonutil), it is U+FFFD: the trigger runs, the daemon lives."""
    image = await hostile(rig, client, "surrogate", {"OnBuild": ["RUN echo \udcff"]})
    assert output(await build(client, f"FROM {image}\n")) == "\ufffd\n".encode()
    assert rig.d.proc.poll() is None, rig.d.log()[-3000:]


def test_text_that_is_not_unicode_never_reaches_the_go_parser() -> None:
    """The parser's own guard, for any way a lone surrogate could still come (it crashed the process)."""
    with pytest.raises(DockerfileError, match="not valid Unicode text"):
        parse_triggers(["LABEL \udcff=1"])


@pytest.mark.parametrize(("triggers", "words"), [
    ([f"RUN echo visible\0; touch {SMUGGLED}"], "contains a NUL byte"),
    (["RUN echo one\nRUN echo two"], "a trigger must be one instruction, not 2"),
    ([f"LABEL l{i}={i}" for i in range(5000)], "has 5000 ONBUILD triggers, more than the 256"),
    (["ONBUILD RUN echo nested"], "ONBUILD isn't allowed as an ONBUILD trigger"),
    (["FROM busybox"], "FROM isn't allowed as an ONBUILD trigger"),
    (["MAINTAINER someone"], "MAINTAINER isn't allowed as an ONBUILD trigger"),
    (["COPY --from=7 /etc/passwd /x"], "COPY --from=7: there is no stage 7"),
    (["COPY --from=0 /etc/passwd /x"], "stage 0 depends on itself"),
    ([""], "file with no instructions"),
], ids=["nul", "two-instructions", "thousands", "onbuild", "from", "maintainer", "copy-from-missing-stage",
        "copy-from-itself", "empty"])
async def test_hostile_triggers_are_invalid_arguments(rig: Rig, client: Client, triggers: list[str],
                                                      words: str) -> None:
    image = await hostile(rig, client, f"t-{secrets.token_hex(4)}", {"OnBuild": triggers})
    before = await state(client)
    with pytest.raises(InvalidArgument) as err:
        await build(client, f"FROM {image}\nRUN echo never\n")
    message = err.value.message
    assert message.startswith("Dockerfile:1: ") and words in message, message
    assert "\n" not in message.replace("\\n", "") and "Traceback" not in message
    assert not os.path.lexists(SMUGGLED)
    await nothing_left(rig, client, before)


async def test_a_huge_trigger_is_quoted_shortly(rig: Rig, client: Client) -> None:
    image = await hostile(rig, client, "huge", {"OnBuild": ["RUN echo " + "x" * (4 << 20)]})
    with pytest.raises(InvalidArgument) as err:
        await build(client, f"FROM {image}\n")
    assert len(err.value.message) < 1000 and "characters)" in err.value.message, err.value.message[:3000]


async def test_a_trigger_that_is_not_a_string_is_refused(rig: Rig, client: Client) -> None:
    image = await hostile(rig, client, "number", {"OnBuild": [1]})
    with pytest.raises(InvalidArgument, match=r"field 'config\.OnBuild' must be an array of strings"):
        await build(client, f"FROM {image}\n")


async def test_good_triggers_still_run_once(rig: Rig, client: Client) -> None:
    """A heredoc trigger is one instruction; the built image does not inherit the triggers."""
    image = await hostile(rig, client, "heredoc", {"OnBuild": ["RUN <<EOF\necho from-heredoc\nEOF",
                                                               "LABEL triggered=yes"]})
    events = await build(client, f"FROM {image}\nRUN echo own\n", tag="onbuild-child:1")
    assert output(events) == b"from-heredoc\nown\n"
    result = next(e for e in events if isinstance(e, BuildResult))
    info = await client.transfer.inspect(result.tags[0])
    assert info.config["config"]["Labels"] == {"triggered": "yes"} and not info.config["config"].get("OnBuild")


# -- base configs and layers -----------------------------------------------------------------------------


async def test_a_base_config_that_is_not_unicode_builds_as_go_reads_it(rig: Rig, client: Client) -> None:
    """A lone surrogate in a base image's label (an internal error before): U+FFFD, as Go's JSON."""
    image = await hostile(rig, client, "label-surrogate", {"Labels": {"a": "\udcff"}})
    await build(client, f"FROM {image}\nLABEL b=2\n", tag="label-surrogate:built")
    desc = (await client.images.get("docker.io/library/label-surrogate:built")).target
    manifest = json.loads(await client.content.read_all(desc.digest))
    config = json.loads(await client.content.read_all(manifest["config"]["digest"]))
    assert config["config"]["Labels"] == {"a": "\ufffd", "b": "2"}
    await client.images.delete("docker.io/library/label-surrogate:built")


@pytest.mark.parametrize("script", ["touch /.wh.bin", "mkdir -p /etc && touch /etc/.wh..wh..opq",
                                    "mkdir /.wh.usr", "touch /.wh."])
async def test_a_step_leaving_whiteout_names_is_refused(rig: Rig, client: Client, script: str) -> None:
    """The layer would delete /bin (empty /etc, ...) wherever it is unpacked, while this daemon's
    own snapshot of the step still had it: refused, the step named."""
    before = await state(client)
    with pytest.raises(FailedPrecondition) as err:
        await build(client, f"FROM busybox\nRUN {script}\n", tag="whiteout-names:1")
    message = err.value.message
    assert message.startswith("Dockerfile:2: diff: the tree holds '/") and "reserve for whiteouts" in message, message
    with pytest.raises(NotFound):
        await client.images.get("docker.io/library/whiteout-names:1")
    await nothing_left(rig, client, before)


async def test_thousands_of_chained_stages_build(rig: Rig, client: Client) -> None:
    """The plan walked stage chains recursively: past ~1000 stages an internal error."""
    n = 1500
    dockerfile = "FROM busybox AS s0\n" + "".join(f"FROM s{i} AS s{i + 1}\nENV S{i}={i}\n" for i in range(n))
    events = await build(client, dockerfile, tag="chained:1")
    result = next(e for e in events if isinstance(e, BuildResult))
    info = await client.transfer.inspect(result.tags[0])
    assert f"S{n - 1}={n - 1}" in info.config["config"]["Env"]
