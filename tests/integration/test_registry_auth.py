"""Registry authentication against real registries: htpasswd Basic auth, and Bearer tokens
from the test token server in front of a registry configured with `auth: token`; dock
login/logout and Docker's credential file."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dock.client import Client
from dockyard_common.errors import FailedPrecondition
from tests.daemon import REPO, DaemonProcess
from tests.images import Image, busybox_image, oci_archive
from tests.integration.test_registry_pull import pull_events
from tests.registry import RegistryProcess, TokenServer, start_registry

pytestmark = pytest.mark.root
USERS = {"alice": "wonderland"}
LOCAL = "docker.io/library/busybox:latest"


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image(LOCAL)


@pytest.fixture
def basic_registry() -> Iterator[RegistryProcess]:
    with start_registry(auth="htpasswd", users=USERS) as reg:
        yield reg


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    with TokenServer(users=dict(USERS)) as ts:
        yield ts


@pytest.fixture
def token_registry(tokens: TokenServer) -> Iterator[RegistryProcess]:
    with start_registry(auth="token", token=tokens) as reg:
        yield reg


def dock(daemon: DaemonProcess, docker_config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DOCKER_CONFIG": str(docker_config)}
    return subprocess.run([sys.executable, "-m", "dock.cli", "--address", daemon.address, *args],
                          capture_output=True, text=True, env=env, timeout=120, input=stdin)


async def test_basic_auth_push_pull(client: Client, basic_registry: RegistryProcess, busybox: Image) -> None:
    await client.transfer.import_archive(oci_archive([busybox]))
    ref = f"{basic_registry.host}/private/busybox:1"
    with pytest.raises(FailedPrecondition, match="requires a username and password"):
        await client.registry.push(ref, local=LOCAL, plain_http=True)
    with pytest.raises(FailedPrecondition, match="refused the credentials of user 'alice'"):
        await client.registry.push(ref, local=LOCAL, plain_http=True, username="alice", secret="wrong")
    done = await client.registry.push(ref, local=LOCAL, plain_http=True, username="alice", secret="wonderland")
    assert done.target.digest == busybox.manifest_digest
    await client.images.delete(LOCAL, sync=True)
    with pytest.raises(FailedPrecondition):
        await pull_events(client, ref)
    _, pulled = await pull_events(client, ref, username="alice", secret="wonderland")
    assert pulled.target.digest == busybox.manifest_digest


async def test_bearer_tokens_anonymous_and_credentialed_and_cached(
        client: Client, token_registry: RegistryProcess, tokens: TokenServer, busybox: Image) -> None:
    await client.transfer.import_archive(oci_archive([busybox]))
    public = f"{token_registry.host}/public/busybox:1"
    private = f"{token_registry.host}/private/busybox:1"
    with pytest.raises(FailedPrecondition, match="denied anonymous access"):
        await client.registry.push(public, local=LOCAL, plain_http=True)
    for ref in (public, private):
        await client.registry.push(ref, local=LOCAL, plain_http=True, username="alice", secret="wonderland")
    assert any(r.get("user") == "alice" and any("push" in s for s in r["scopes"]) for r in tokens.requests)
    await client.images.delete(LOCAL, sync=True)

    before = len(tokens.requests)
    _, done = await pull_events(client, public)  # anonymous token, pull scope
    assert done.target.digest == busybox.manifest_digest
    anon = [r for r in tokens.requests[before:] if r.get("user") == "" and r.get("scopes")]
    assert anon and all(s == "repository:public/busybox:pull" for r in anon for s in r["scopes"])
    assert anon[-1]["service"] == "dockyard-test-registry"
    seen = len(tokens.requests)
    await pull_events(client, public)
    assert len(tokens.requests) == seen, "the token is cached for its scope until it expires"

    with pytest.raises(FailedPrecondition, match="denied anonymous access"):
        await pull_events(client, private)
    with pytest.raises(FailedPrecondition, match="refused"):
        await pull_events(client, private, username="alice", secret="nope")
    _, done = await pull_events(client, private, username="alice", secret="wonderland")
    assert done.name == private


async def test_login_checks_credentials(client: Client, token_registry: RegistryProcess,
                                        basic_registry: RegistryProcess) -> None:
    for reg in (token_registry, basic_registry):
        assert await client.registry.login(reg.host, "alice", "wonderland", plain_http=True) == reg.host
        with pytest.raises(FailedPrecondition):
            await client.registry.login(reg.host, "alice", "bad", plain_http=True)


def test_dock_login_logout_and_stored_credentials(daemon: DaemonProcess, tmp_path: Path,
                                                  basic_registry: RegistryProcess, busybox: Image) -> None:
    config = tmp_path / "docker"
    (tmp_path / "bb.tar").write_bytes(oci_archive([busybox]))
    assert dock(daemon, config, "images", "import", str(tmp_path / "bb.tar")).returncode == 0
    ref = f"{basic_registry.host}/cli/busybox:1"
    assert dock(daemon, config, "tag", "busybox", ref).stdout.strip() == ref

    res = dock(daemon, config, "push", "--plain-http", ref)
    assert res.returncode == 1 and "requires a username and password" in res.stderr

    res = dock(daemon, config, "login", "-u", "alice", "--password-stdin", "--plain-http", basic_registry.host,
               stdin="bad\n")
    assert res.returncode == 1 and "refused" in res.stderr
    assert not (config / "config.json").exists()
    res = dock(daemon, config, "login", "-u", "alice", "--password-stdin", "--plain-http", basic_registry.host,
               stdin="x" * ((1 << 20) + 1))  # bounded: `< /dev/zero` hung dock
    assert res.returncode == 1 and "longer than 1 MiB" in res.stderr, res.stderr
    assert not (config / "config.json").exists()
    res = dock(daemon, config, "login", "-u", "alice", "--password-stdin", "--plain-http", basic_registry.host,
               stdin="wonderland\n")
    assert res.returncode == 0, res.stderr
    assert "Login Succeeded" in res.stdout
    stored = json.loads((config / "config.json").read_text())
    assert base64.b64decode(stored["auths"][basic_registry.host]["auth"]) == b"alice:wonderland"
    assert oct((config / "config.json").stat().st_mode & 0o777) == "0o600"

    res = dock(daemon, config, "push", "--plain-http", ref)  # the stored credentials go with the request
    assert res.returncode == 0, res.stderr
    res = dock(daemon, config, "pull", "--plain-http", "-q", ref)
    assert res.returncode == 0, res.stderr

    res = dock(daemon, config, "logout", basic_registry.host)
    assert res.returncode == 0 and f"Removing login credentials for {basic_registry.host}" in res.stdout
    assert json.loads((config / "config.json").read_text())["auths"] == {}
    assert "Not logged in" in dock(daemon, config, "logout", basic_registry.host).stdout
    res = dock(daemon, config, "pull", "--plain-http", "--user", "alice:wonderland", "-q", ref)
    assert res.returncode == 0, res.stderr
