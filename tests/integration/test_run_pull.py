"""`dock run --pull missing|always|never` (and `dock containers create --pull`), as Docker's: an image
only in a registry (Debian's docker-registry on 127.0.0.1, spoken to in plain HTTP without a flag,
as `dock pull` does with a loopback registry) is pulled, its progress on stderr; `never` refuses;
`always` follows a tag that moved; a pull that fails is one `dock: ...` line with nothing left behind."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon import DaemonProcess
from tests.dockcli import DockCLI
from tests.images import Image, build_image, busybox_image
from tests.registry import RegistryProcess, push_blobs, push_manifest, start_registry
from tests.unit.archive_fixtures import build_tar, file

pytestmark = [pytest.mark.root, pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root")]

REPO = "team/box"


def marked(base: Image, word: str) -> Image:
    """`base` with a layer on top holding /which: `word`, so a run shows which image it ran."""
    return build_image("x", [*base.layer_tars, build_tar([file("which", f"{word}\n".encode())])])


def publish(reg: RegistryProcess, repo: str, tag: str, img: Image, headers: dict[str, str] | None = None) -> None:
    """Put an image into the registry without dockyardd (blobs, then the manifest under `tag`)."""
    push_blobs(reg.url, repo, {d: b for d, b in img.blobs.items() if d != img.manifest_digest}, headers)
    push_manifest(reg.url, repo, tag, img.manifest, "application/vnd.oci.image.manifest.v1+json", headers)


@pytest.fixture(scope="module")
def images() -> tuple[Image, Image]:
    base = busybox_image("x")
    return marked(base, "one"), marked(base, "two")


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    with start_registry() as reg:
        yield reg


@pytest.fixture
def cli(d: DaemonProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DockCLI]:
    """`dock` against the module's daemon, with a Docker config of this test's own (no host
    credentials); the images the test pulled go afterwards (containers: the `d` fixture)."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    cli = DockCLI(d.address, tmp_path)
    before = set(cli.ok("images", "ls", "-q").split())
    yield cli
    made = set(cli.ok("images", "ls", "-q").split()) - before
    if made:
        cli.ok("images", "rm", "--sync", *sorted(made))


def state(cli: DockCLI) -> tuple[str, str]:
    """What a failed run must leave as it was: containers, snapshots (leases: the daemon's pull)."""
    return cli.ok("ps", "-a", "-q"), cli.ok("snapshots", "ls", "-q")


def test_missing_image_is_pulled_and_run(cli: DockCLI, registry: RegistryProcess,
                                         images: tuple[Image, Image]) -> None:
    one, _ = images
    publish(registry, REPO, "1", one)
    ref = f"{registry.host}/{REPO}:1"
    res = cli.dock("run", "--rm", "--net", "none", ref, "cat", "/which")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "one\n", "only the container's output on stdout"
    assert res.stderr.startswith(f"Unable to find image '{ref}' locally\n"), res.stderr
    assert f"pulled {ref} {one.manifest_digest}" in res.stderr
    assert "Traceback" not in res.stderr
    assert ref in cli.ok("images", "ls", "-q").split()
    assert cli.ok("ps", "-a", "-q") == ""
    # There now: no pull again, nothing said.
    res = cli.dock("run", "--rm", "--net", "none", ref, "cat", "/which")
    assert (res.returncode, res.stdout, res.stderr) == (0, "one\n", "")


def test_pull_never_refuses_and_makes_nothing(cli: DockCLI, registry: RegistryProcess,
                                              images: tuple[Image, Image]) -> None:
    publish(registry, REPO, "1", images[0])
    ref = f"{registry.host}/{REPO}:1"
    before = state(cli)
    err = cli.fails("run", "--pull", "never", "--rm", "--net", "none", ref, "true", words="not found")
    assert err == f'dock: image "{ref}": not found', err
    cli.fails("containers", "create", "--pull", "never", "--net", "none", ref, words="not found")
    assert state(cli) == before
    assert ref not in cli.ok("images", "ls", "-q").split()


def test_pull_always_follows_a_moved_tag(cli: DockCLI, registry: RegistryProcess,
                                         images: tuple[Image, Image]) -> None:
    one, two = images
    publish(registry, REPO, "1", one)
    ref = f"{registry.host}/{REPO}:1"
    assert cli.ok("run", "--rm", "--net", "none", ref, "cat", "/which") == "one\n"
    publish(registry, REPO, "1", two)  # the tag moves on the registry
    # missing (the default) keeps to the store's image
    assert cli.ok("run", "--rm", "--net", "none", ref, "cat", "/which") == "one\n"
    res = cli.dock("run", "--pull", "always", "--rm", "--net", "none", ref, "cat", "/which")
    assert (res.returncode, res.stdout) == (0, "two\n"), res.stderr
    assert "Unable to find image" not in res.stderr, "it was there: always pulls anyway, without that notice"
    assert f"pulled {ref} {two.manifest_digest}" in res.stderr
    [digest] = [i["target"]["digest"] for i in cli.json("images", "ls") if i["name"] == ref]
    assert digest == two.manifest_digest


def test_failed_pull_is_one_line_and_leaves_nothing(cli: DockCLI, registry: RegistryProcess) -> None:
    before = state(cli)
    missing = f"{registry.host}/no/such:1"
    err = cli.fails("run", "--rm", "--net", "none", missing, "true", words="pulling it failed")
    assert len(err.splitlines()) == 1 and missing in err, err
    err = cli.fails("run", "-d", "--net", "none", "--name", "pull-fails", missing, "true", words="pulling it failed")
    assert len(err.splitlines()) == 1, err
    unreachable = f"{registry.host.rsplit(':', 1)[0]}:1/team/box:1"  # nothing listens on port 1
    err = cli.fails("containers", "create", "--net", "none", unreachable, words="pulling it failed")
    assert len(err.splitlines()) == 1 and "127.0.0.1:1" in err, err
    assert state(cli) == before
    assert missing not in cli.ok("images", "ls", "-q").split()


def test_detached_run_prints_only_the_id(cli: DockCLI, registry: RegistryProcess,
                                         images: tuple[Image, Image]) -> None:
    publish(registry, REPO, "1", images[0])
    ref = f"{registry.host}/{REPO}:1"
    res = cli.dock("run", "-d", "--net", "none", "--name", "pulled-detached", ref, "sleep", "600")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "pulled-detached\n"
    assert f"pulled {ref}" in res.stderr  # (the task: killed by the `d` fixture)


def test_containers_create_pulls_too(cli: DockCLI, registry: RegistryProcess, images: tuple[Image, Image]) -> None:
    publish(registry, REPO, "1", images[0])
    ref = f"{registry.host}/{REPO}:1"
    res = cli.dock("containers", "create", "--net", "none", "--name", "pulled-created", ref, "true")
    assert (res.returncode, res.stdout) == (0, "pulled-created\n"), res.stderr
    assert "Unable to find image" in res.stderr
    assert ref in cli.ok("images", "ls", "-q").split()


def test_stored_login_credentials_are_sent(cli: DockCLI, images: tuple[Image, Image]) -> None:
    with start_registry(auth="htpasswd", users={"alice": "pw"}) as reg:
        auth = {"Authorization": "Basic " + base64.b64encode(b"alice:pw").decode()}
        publish(reg, REPO, "1", images[0], auth)
        ref = f"{reg.host}/{REPO}:1"
        cli.fails("run", "--rm", "--net", "none", ref, "true", words="pulling it failed")
        res = cli.dock("login", "-u", "alice", "--password-stdin", reg.host, input="pw\n")
        assert res.returncode == 0, res.stderr
        assert cli.ok("run", "--rm", "--net", "none", ref, "cat", "/which") == "one\n"
