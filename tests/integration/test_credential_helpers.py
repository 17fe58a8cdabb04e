"""Docker credential helpers (`credsStore`, `credHelpers` in config.json) against a real
htpasswd registry: the daemon runs `docker-credential-<name> get` itself (with its own PATH
and DOCKER_CONFIG, which the test gives it), and dock login/logout `store` and `erase`
through the helper. The helper is a small script written by the test, keeping its secrets
in a JSON file next to it and logging every call."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dock.client import Client
from dockyard_common.errors import FailedPrecondition
from tests.daemon import REPO, DaemonProcess, remove_base, start_daemon
from tests.images import OCI_MANIFEST, Image, busybox_image
from tests.registry import RegistryProcess, push_blobs, push_manifest, start_registry

pytestmark = pytest.mark.root
USERS = {"alice": "wonderland"}
HELPER = "dytest"
HELPER_SCRIPT = """#!{python}
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
store_path, log_path = os.path.join(here, "store.json"), os.path.join(here, "calls.log")
action, data = sys.argv[1], sys.stdin.read()
with open(log_path, "a") as log:
    log.write(json.dumps([action, data]) + "\\n")
creds = json.load(open(store_path)) if os.path.exists(store_path) else {{}}
if action == "get":
    if data.strip() not in creds:
        print("credentials not found in native keychain")
        sys.exit(1)
    user, secret = creds[data.strip()]
    print(json.dumps({{"ServerURL": data.strip(), "Username": user, "Secret": secret}}))
elif action == "store":
    doc = json.loads(data)
    creds[doc["ServerURL"]] = [doc["Username"], doc["Secret"]]
elif action == "erase":
    if data.strip() not in creds:
        print("credentials not found in native keychain")
        sys.exit(1)
    del creds[data.strip()]
else:
    print("unknown action " + action)
    sys.exit(1)
json.dump(creds, open(store_path, "w"))
"""


@dataclass
class Helper:
    bin: Path
    docker_config: Path

    @property
    def store(self) -> dict[str, list[str]]:
        path = self.bin / "store.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @store.setter
    def store(self, value: dict[str, list[str]]) -> None:
        (self.bin / "store.json").write_text(json.dumps(value))

    def calls(self) -> list[list[str]]:
        path = self.bin / "calls.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def config(self, doc: dict[str, object]) -> None:
        self.docker_config.mkdir(exist_ok=True)
        (self.docker_config / "config.json").write_text(json.dumps(doc))

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}:{os.environ['PATH']}", "DOCKER_CONFIG": str(self.docker_config)}


@pytest.fixture
def helper(tmp_path: Path) -> Helper:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / f"docker-credential-{HELPER}"
    script.write_text(HELPER_SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    return Helper(bin_dir, tmp_path / "docker")


@pytest.fixture
def registry() -> Iterator[RegistryProcess]:
    with start_registry(auth="htpasswd", users=USERS) as reg:
        yield reg


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image("x")


def publish(reg: RegistryProcess, img: Image) -> str:
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:wonderland").decode()}
    push_blobs(reg.url, "private/busybox", {d: b for d, b in img.blobs.items() if d != img.manifest_digest}, auth)
    push_manifest(reg.url, "private/busybox", "1", img.manifest, OCI_MANIFEST, auth)
    return f"{reg.host}/private/busybox:1"


@pytest.fixture
async def helper_client(helper: Helper, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Client]:
    """A daemon whose environment finds the helper (PATH) and the test's config.json (DOCKER_CONFIG)."""
    for key, value in helper.env.items():
        monkeypatch.setenv(key, value)  # start_daemon passes the test's environment on
    d = start_daemon()
    try:
        async with d.client() as client:
            yield client
    except BaseException:
        print(f"\n----- dockyardd log -----\n{d.log()}")
        raise
    finally:
        remove_base(d)


async def test_the_daemon_gets_credentials_from_the_helper(helper: Helper, helper_client: Client,
                                                           registry: RegistryProcess, busybox: Image) -> None:
    ref = publish(registry, busybox)
    helper.config({"credsStore": HELPER, "auths": {registry.host: {"auth": "bm90OnVzZWQ="}}})
    helper.store = {registry.host: ["alice", "wonderland"]}
    done = await helper_client.registry.pull(ref, plain_http=True, unpack=False)  # no credentials in the request
    assert done.target.digest == busybox.manifest_digest
    assert ["get", registry.host] in helper.calls(), "the server key goes on the helper's stdin"

    # credHelpers names the helper for this registry, over a credsStore that does not exist
    helper.config({"credsStore": "absent", "credHelpers": {registry.host: HELPER}})
    await helper_client.images.delete(ref, sync=True)
    done = await helper_client.registry.pull(ref, plain_http=True, unpack=False)
    assert done.target.digest == busybox.manifest_digest

    helper.store = {}  # the helper has nothing for the registry: an anonymous pull, refused
    with pytest.raises(FailedPrecondition, match="requires a username and password"):
        await helper_client.registry.pull(ref, plain_http=True, unpack=False)


def dock(daemon: DaemonProcess, helper: Helper, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **helper.env}
    return subprocess.run([sys.executable, "-m", "dock.cli", "--address", daemon.address, *args],
                          capture_output=True, text=True, env=env, timeout=120, input=stdin)


def test_dock_login_and_logout_store_and_erase_through_the_helper(daemon: DaemonProcess, helper: Helper,
                                                                  registry: RegistryProcess, busybox: Image) -> None:
    ref = publish(registry, busybox)
    helper.config({"credsStore": HELPER})
    res = dock(daemon, helper, "login", "-u", "alice", "--password-stdin", "--plain-http", registry.host,
               stdin="wonderland\n")
    assert res.returncode == 0, res.stderr
    assert helper.store == {registry.host: ["alice", "wonderland"]}
    store_call = next(json.loads(data) for action, data in helper.calls() if action == "store")
    assert store_call == {"ServerURL": registry.host, "Username": "alice", "Secret": "wonderland"}
    config = json.loads((helper.docker_config / "config.json").read_text())
    assert config == {"credsStore": HELPER, "auths": {registry.host: {}}}, "no secret in the file"

    res = dock(daemon, helper, "pull", "--plain-http", "--no-unpack", "-q", ref)  # the CLI asks the helper
    assert res.returncode == 0, res.stderr

    res = dock(daemon, helper, "logout", registry.host)
    assert res.returncode == 0 and f"Removing login credentials for {registry.host}" in res.stdout, res.stderr
    assert ["erase", registry.host] in helper.calls() and helper.store == {}
    assert json.loads((helper.docker_config / "config.json").read_text())["auths"] == {}
    res = dock(daemon, helper, "logout", registry.host)
    assert res.returncode == 0 and "Not logged in" in res.stdout, res.stderr

    helper.config({"credsStore": "absent"})
    res = dock(daemon, helper, "pull", "--plain-http", "-q", ref)
    assert res.returncode == 1 and "docker-credential-absent is not on PATH" in res.stderr
