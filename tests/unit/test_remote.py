"""The registry client's pure parts: challenges, scopes, the token cache, hosts.toml, and
Docker's credential file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from dockyard_common import credentials as credfile
from dockyard_common.errors import InvalidArgument
from supervisor.remote.auth import Challenge, TokenCache, merge_scopes, parse_challenges
from supervisor.remote.client import origin
from supervisor.remote.hosts import Hosts, hostname


def test_parse_challenges() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/busybox:pull,push"')
    assert parse_challenges([header]) == [Challenge("bearer", {
        "realm": "https://auth.docker.io/token", "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull,push"})]
    assert parse_challenges(['Basic realm="my \\"realm\\""', "Bearer realm=x, error=insufficient_scope"]) == [
        Challenge("basic", {"realm": 'my "realm"'}), Challenge("bearer", {"realm": "x", "error": "insufficient_scope"})]
    assert parse_challenges(["Negotiate"]) == [Challenge("negotiate", {})]
    assert parse_challenges([""]) == []


def test_merge_scopes() -> None:
    assert merge_scopes(["repository:a:pull", "repository:a:push", "repository:b:pull"]) == (
        "repository:a:pull,push", "repository:b:pull")
    assert merge_scopes(["repository:a:push,pull repository:a:pull"]) == ("repository:a:pull,push",)


def test_token_cache_expires() -> None:
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    key = ("realm", "svc", ("repository:a:pull",), "")
    cache.put(key, "tok", 60)
    assert cache.get(key) == "tok"
    assert cache.get(("realm", "svc", ("repository:b:pull",), "")) is None
    now[0] += 56
    assert cache.get(key) is None, "tokens are dropped a little before they expire"


def test_origin_includes_scheme_and_port() -> None:
    assert origin("https://r.example/v2/") == ("https", "r.example:443")
    assert origin("http://127.0.0.1:5000/v2/x") == ("http", "127.0.0.1:5000")
    assert origin("http://127.0.0.1:5000/") != origin("http://127.0.0.1:5001/")


def test_hosts_defaults() -> None:
    hosts = Hosts(None)
    [hub] = hosts.lookup("docker.io")
    assert hub.url("/library/busybox/manifests/latest") == \
        "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
    [plain] = hosts.lookup("127.0.0.1:5000", plain_http=True)
    assert plain.base == "http://127.0.0.1:5000" and not plain.mirror
    assert hostname("127.0.0.1:5000") == "127.0.0.1" and hostname("docker.io") == "docker.io"


def test_hosts_toml(tmp_path: Path) -> None:
    d = tmp_path / "certs.d" / "registry.example:5000"
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(
        'server = "http://127.0.0.1:1"\n'
        '[host."http://127.0.0.1:7000"]\n  capabilities = ["pull", "resolve"]\n'
        '[host."https://mirror.example/custom/v2"]\n  override_path = true\n  skip_verify = true\n'
        '  ca = "ca.pem"\n  [host."https://mirror.example/custom/v2".header]\n    x-test = "1"\n')
    m1, m2, server = Hosts(tmp_path).lookup("registry.example:5000")
    assert (m1.base, m1.path, m1.mirror, m1.can("push")) == ("http://127.0.0.1:7000", "/v2", True, False)
    assert (m2.path, m2.skip_verify, m2.ca_files, m2.headers) == (
        "/custom/v2", True, (str(d / "ca.pem"),), (("x-test", "1"),))
    assert (server.base, server.mirror, server.can("push")) == ("http://127.0.0.1:1", False, True)
    (d / "hosts.toml").write_text("server = 5\n")
    with pytest.raises(InvalidArgument, match=r"hosts\.toml: server must be a URL"):
        Hosts(tmp_path).lookup("registry.example:5000")
    (d / "hosts.toml").write_text('[host."https://m"]\n  capabilities = ["fly"]\n')
    with pytest.raises(InvalidArgument, match="capabilities"):
        Hosts(tmp_path).lookup("registry.example:5000")


def test_credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert credfile.config_path() == tmp_path / "dc" / "config.json"
    assert credfile.load("127.0.0.1:5000") is None
    (tmp_path / "dc").mkdir()
    (tmp_path / "dc" / "config.json").write_text(json.dumps({"proxies": {"default": {}}, "auths": {}}))
    credfile.store("127.0.0.1:5000", credfile.Credentials("alice", "p:w"))
    credfile.store("https://index.docker.io/v1/", credfile.Credentials("bob", "hub"))
    data = json.loads((tmp_path / "dc" / "config.json").read_text())
    assert data["proxies"] == {"default": {}}, "other settings are kept"
    assert base64.b64decode(data["auths"]["127.0.0.1:5000"]["auth"]) == b"alice:p:w"
    assert "https://index.docker.io/v1/" in data["auths"]
    assert credfile.load("http://127.0.0.1:5000/") == credfile.Credentials("alice", "p:w")
    assert credfile.load("docker.io") == credfile.Credentials("bob", "hub")
    assert "p:w" not in repr(credfile.load("127.0.0.1:5000"))
    assert credfile.erase("127.0.0.1:5000") and not credfile.erase("127.0.0.1:5000")
    assert credfile.load("127.0.0.1:5000") is None
    (tmp_path / "dc" / "config.json").write_text('{"auths": {"r": {"identitytoken": "tok"}}}')
    assert credfile.load("r") == credfile.Credentials("<token>", "tok")
    (tmp_path / "dc" / "config.json").write_text("{nope")
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        credfile.load("r")
