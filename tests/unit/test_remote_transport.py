"""The registry transport's pure parts: retry policy and loop, Retry-After, hosts.toml client
certificates and Docker's certs.d layout, TLS contexts from files, credential helpers."""

from __future__ import annotations

import email.utils
import json
import ssl
from pathlib import Path

import pytest

from dockyard_common import credentials as credfile
from dockyard_common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from supervisor.remote.client import shown_url
from supervisor.remote.hosts import Hosts, RegistryHost
from supervisor.remote.retry import RetryPolicy, TransientError, parse_retry_after, with_retries
from supervisor.remote.tls import client_pairs, context_for
from tests.registry import make_tls

FAST = RetryPolicy(attempts=4, base=0.001, cap=0.004)


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base=0.5, cap=4.0)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (9, 4.0)]:
        delays = [policy.backoff(retry) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (retry, delays)
        assert len(set(delays)) > 1, "jittered"


def test_urls_in_messages_lose_their_query() -> None:
    assert shown_url("https://s3.example/b/x?X-Amz-Signature=abc#f") == "https://s3.example/b/x"


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(1000.0 + 7, usegmt=True)
    assert parse_retry_after(date, now=lambda: 1000.0) == pytest.approx(7.0)
    assert parse_retry_after(date, now=lambda: 2000.0) == 0.0


async def test_with_retries_until_success_or_the_last_attempt() -> None:
    calls: list[int] = []

    async def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 3:
            raise TransientError("GET x: 503")
        return "ok"

    assert await with_retries(FAST, flaky) == "ok" and calls == [1, 2, 3]

    async def down(attempt: int) -> str:
        raise TransientError("GET x: 503")

    with pytest.raises(Unavailable, match=r"GET x: 503 \(gave up after 4 attempts\)") as info:
        await with_retries(FAST, down)
    assert not isinstance(info.value, TransientError), "an outer retry loop must not start over"

    calls.clear()

    async def missing(attempt: int) -> str:
        calls.append(attempt)
        raise NotFound("GET x")

    with pytest.raises(NotFound):
        await with_retries(FAST, missing)
    assert calls == [1]

    async def later(attempt: int) -> str:
        raise TransientError("GET x: 429", retry_after=3600)

    with pytest.raises(Unavailable, match="asks to wait 3600s"):
        await with_retries(FAST, later)


def test_hosts_toml_client_certificates(tmp_path: Path) -> None:
    d = tmp_path / "certs.d" / "r.example"
    d.mkdir(parents=True)
    forms = {
        '"both.pem"': ((str(d / "both.pem"), ""),),
        '["a.pem", "/abs/b.pem"]': ((str(d / "a.pem"), ""), ("/abs/b.pem", "")),
        '[["c.pem", "k.pem"]]': ((str(d / "c.pem"), str(d / "k.pem")),),
    }
    for form, expected in forms.items():
        (d / "hosts.toml").write_text(f'ca = "ca.pem"\nclient = {form}\n')
        [server] = Hosts(tmp_path).lookup("r.example")
        assert server.client_certs == expected, form
        assert server.ca_files == (str(d / "ca.pem"),)
    for bad in ("5", '[["a.pem"]]', '[["a", "b", "c"]]', '[""]'):
        (d / "hosts.toml").write_text(f"client = {bad}\n")
        with pytest.raises(InvalidArgument, match="client must be a file"):
            Hosts(tmp_path).lookup("r.example")


def test_dockers_certs_d_layout(tmp_path: Path) -> None:
    d = tmp_path / "certs.d" / "r.example:5000"
    d.mkdir(parents=True)
    for name in ("ca.crt", "me.cert", "me.key", "lonely.cert"):
        (d / name).write_text("")
    [server] = Hosts(tmp_path).lookup("r.example:5000")
    assert (server.scheme, server.ca_files) == ("https", (str(d / "ca.crt"),))
    assert server.client_certs == ((str(d / "me.cert"), str(d / "me.key")),), "a .cert needs its .key"


def test_plain_http_fallback_only_for_loopback(tmp_path: Path) -> None:
    for domain in ("127.0.0.1:5000", "localhost:5000", "localhost", "[::1]:5000", "127.1.2.3"):
        [server] = Hosts(tmp_path).lookup(domain)
        assert (server.scheme, server.http_fallback) == ("https", True), domain
    for domain in ("r.example:5000", "10.0.0.1:5000", "localhost.example", "docker.io"):
        [server] = Hosts(tmp_path).lookup(domain)
        assert (server.scheme, server.http_fallback) == ("https", False), domain
    [server] = Hosts(tmp_path).lookup("127.0.0.1:5000", plain_http=True)
    assert (server.scheme, server.http_fallback) == ("http", False)


def test_tls_contexts_from_files(tmp_path: Path) -> None:
    tls = make_tls(tmp_path / "tls")
    assert context_for(RegistryHost("https", "r")) is True
    assert context_for(RegistryHost("https", "r", skip_verify=True)) is False
    ctx = context_for(RegistryHost("https", "r", ca_files=(str(tls.ca),), skip_verify=True,
                                   client_certs=((str(tls.client_both), ""),)))
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    ctx = context_for(RegistryHost("https", "r", ca_files=(str(tls.ca),)))
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED
    assert any("dockyard test CA" in str(c.get("subject")) for c in ctx.get_ca_certs())

    flat = RegistryHost("https", "r", client_certs=((str(tls.client_cert), ""), (str(tls.client_key), "")))
    assert client_pairs(flat) == [(str(tls.client_cert), str(tls.client_key))], "a flat [cert, key] is a pair"
    two = RegistryHost("https", "r", client_certs=((str(tls.client_both), ""), (str(tls.client_both), "")))
    assert client_pairs(two) == [(str(tls.client_both), ""), (str(tls.client_both), "")]
    assert isinstance(context_for(flat), ssl.SSLContext)

    with pytest.raises(InvalidArgument, match=r"CA file .*nope\.pem"):
        context_for(RegistryHost("https", "r", ca_files=(str(tmp_path / "nope.pem"),)))
    with pytest.raises(InvalidArgument, match=r"client certificate .*client\.pem: .*hold both"):
        context_for(RegistryHost("https", "r", client_certs=((str(tls.client_cert), ""),)))


def _helper(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, config = tmp_path / "bin", tmp_path / "docker"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    config.mkdir()
    _helper(bin_dir, "good", 'read server; echo "{\\"ServerURL\\": \\"$server\\", \\"Username\\": \\"u-$server\\", '
                             '\\"Secret\\": \\"s\\"}"\n')
    _helper(bin_dir, "none", 'echo "credentials not found in native keychain"; exit 1\n')
    _helper(bin_dir, "junk", "echo hello\n")
    _helper(bin_dir, "fails", "echo 'keychain locked' >&2; exit 3\n")

    def use(doc: dict[str, object]) -> None:
        (config / "config.json").write_text(json.dumps(doc))

    use({"credsStore": "good"})
    assert credfile.load("r.example:5000") == credfile.Credentials("u-r.example:5000", "s")
    assert credfile.load("docker.io") == credfile.Credentials("u-https://index.docker.io/v1/", "s")
    use({"credsStore": "none", "credHelpers": {"r.example": "good"}})
    assert credfile.load("r.example") == credfile.Credentials("u-r.example", "s")
    assert credfile.load("other.example") is None
    use({"credsStore": "junk"})
    with pytest.raises(FailedPrecondition, match="docker-credential-junk get: the answer is not"):
        credfile.load("r")
    use({"credsStore": "fails"})
    with pytest.raises(FailedPrecondition, match="docker-credential-fails get r: keychain locked"):
        credfile.load("r")
    with pytest.raises(FailedPrecondition, match="keychain locked"):
        credfile.store("r", credfile.Credentials("u", "p"))
    use({"credsStore": "missing"})
    with pytest.raises(InvalidArgument, match="docker-credential-missing is not on PATH"):
        credfile.load("r")
    use({"credsStore": "../evil"})
    with pytest.raises(InvalidArgument, match="not valid"):
        credfile.load("r")
    use({"credsStore": "none", "auths": {"r": {"auth": "dTpw"}}})
    assert credfile.load("r") is None, "with a helper, the file's secrets are not used (as Docker does)"
    assert credfile.erase("r") and json.loads((config / "config.json").read_text())["auths"] == {}
