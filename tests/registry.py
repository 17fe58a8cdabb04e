"""Real registries for tests: Debian's docker-registry on 127.0.0.1, plain, with htpasswd
Basic auth, or behind a small Bearer token server written here; plus a way to run any
aiohttp app (a token server, a registry that lies) on a thread of its own.

    with start_registry(tmp) as reg:                      # plain HTTP, anonymous
        reg.host                                          # "127.0.0.1:<port>"
    with start_registry(tmp, auth="htpasswd", users={"alice": "pw"}) as reg: ...
    with TokenServer(users={"alice": "pw"}) as ts, start_registry(tmp, auth="token", token=ts) as reg:
        ts.requests                                        # token requests seen (for cache tests)
    tls = make_tls(tmp)                                   # a test CA, a server and a client certificate
    with start_registry(tls=tls, client_auth=True) as reg:   # https://127.0.0.1:<port>, client certs required
        push_blobs(reg.url, "r", blobs, context=tls.client_context())

Processes are ended by PID and their temp dirs removed; servers on threads are stopped
and joined. Only 127.0.0.1 is ever listened on or connected to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

REGISTRY_BINARY = "/usr/bin/docker-registry"
SERVICE = "dockyard-test-registry"
ISSUER = "dockyard-test-issuer"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None, log: Path | None, timeout: float = 20,
               context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n"
                               f"{log.read_text() if log else ''}")
        try:
            with urllib.request.urlopen(url, timeout=1, context=context):
                return
        except urllib.error.HTTPError:
            return  # it answers (401 counts)
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def _wait_http_in(netns: Path, url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    """`_wait_http` from inside a pinned network namespace (busybox wget run there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()}")
        res = subprocess.run(["nsenter", f"--net={netns}", "/bin/busybox", "wget", "-q", "-O", "/dev/null", url],
                             capture_output=True, timeout=10, check=False)
        if res.returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s in {netns}")


# -- servers on a thread ------------------------------------------------------------------


class ThreadedApp:
    """An aiohttp app served on 127.0.0.1:<port> by an event loop on its own thread."""

    def __init__(self, app: web.Application, port: int = 0) -> None:
        self.app = app
        self.port = port or free_port()
        self.loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ThreadedApp:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(15)
            self._runner = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def __enter__(self) -> ThreadedApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- a Bearer token server ---------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenServer:
    """Docker's token flow: GET /token?service=&scope=… with optional Basic auth answers a
    JWT signed by a test key whose self-signed certificate the registry trusts.

    Anonymous callers may pull repositories under `public/`; known users may pull and push
    everything. `requests` counts token requests; `expires_in` is what tokens say."""

    users: dict[str, str] = field(default_factory=dict)
    expires_in: int = 300
    requests: list[dict[str, Any]] = field(default_factory=list)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dy-token-")))

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockyard test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self._cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.cert_path = self.dir / "root.crt"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        app = web.Application()
        app.router.add_get("/token", self._token)
        self.server = ThreadedApp(app)

    @property
    def realm(self) -> str:
        return f"{self.server.url}/token"

    def sign(self, claims: dict[str, Any]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._cert_der).decode()]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"

    async def _token(self, request: web.Request) -> web.Response:
        user = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            name, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if self.users.get(name) != password:
                self.requests.append({"user": name, "refused": True})
                return web.json_response({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                                         status=401)
            user = name
        scopes = request.query.getall("scope", [])
        self.requests.append({"user": user, "scopes": scopes, "service": request.query.get("service", "")})
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                kind, _, rest = one.partition(":")
                repo, _, actions = rest.rpartition(":")
                wanted = [a for a in actions.split(",") if a]
                if user:
                    granted = [a for a in wanted if a in ("pull", "push", "*")]
                else:
                    granted = [a for a in wanted if a == "pull" and repo.startswith("public/")]
                access.append({"type": kind, "name": repo, "actions": granted})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "aud": request.query.get("service", SERVICE),
                  "exp": now + self.expires_in, "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8),
                  "access": access}
        token = self.sign(claims)
        return web.json_response({"token": token, "access_token": token, "expires_in": self.expires_in,
                                  "issued_at": datetime.datetime.now(datetime.UTC).isoformat()})

    def __enter__(self) -> TokenServer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- docker-registry --------------------------------------------------------------------------


# -- TLS material ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a test CA, a server certificate it signed for 127.0.0.1 and localhost, and
    a client certificate it signed (also as one file holding certificate and key)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_both: Path

    def client_context(self) -> ssl.SSLContext:
        """What urllib needs to talk to a registry using these (trusts the CA, presents the client)."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.client_cert), str(self.client_key))
        return ctx


def make_tls(directory: Path) -> TLSFiles:
    """Generate TLSFiles in `directory` (created): keys are EC P-256, valid for a week."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def builder(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7)))

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (builder("dockyard test CA", "dockyard test CA", ca_key)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    files = TLSFiles(*(directory / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key",
                                               "client-both.pem")))
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    for role, usage, sans in (
            ("server", ExtendedKeyUsageOID.SERVER_AUTH,
             [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            ("client", ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("dockyard-test-client")])):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(f"dockyard test {role}", "dockyard test CA", key)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(aki, critical=False)
                .sign(ca_key, hashes.SHA256()))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        (directory / f"{role}.pem").write_bytes(pem)
        (directory / f"{role}.key").write_bytes(key_pem(key))
        if role == "client":
            files.client_both.write_bytes(pem + key_pem(key))
    return files


@dataclass
class RegistryProcess:
    proc: subprocess.Popen[bytes]
    port: int
    dir: Path
    scheme: str = "http"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def storage(self) -> Path:
        return self.dir / "data"

    def log(self) -> str:
        return (self.dir / "registry.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _htpasswd(path: Path, users: dict[str, str]) -> None:
    path.write_text("")
    for user, password in users.items():
        subprocess.run(["htpasswd", "-B", "-b", str(path), user, password], check=True, capture_output=True)


@contextlib.contextmanager
def start_registry(auth: str = "", users: dict[str, str] | None = None, token: TokenServer | None = None,
                   tls: TLSFiles | None = None, client_auth: bool = False,
                   netns: Path | None = None) -> Iterator[RegistryProcess]:
    """docker-registry on 127.0.0.1:<free port>, storage in a temp dir; auth "", "htpasswd" or "token";
    over https with `tls` (requiring a client certificate signed by its CA with `client_auth`).
    With `netns` (a pinned namespace, tests/daemon.py `pinned_netns`) it listens on that namespace's
    loopback, for daemons started in it; plain http and no auth only."""
    if netns is not None and (tls is not None or auth):
        raise ValueError("a registry in a network namespace serves plain http without auth")
    if not os.path.exists(REGISTRY_BINARY):
        raise RuntimeError("docker-registry is not installed: run scripts/install (Debian package docker-registry)")
    base = Path(tempfile.mkdtemp(prefix="dy-reg-"))
    port = free_port()
    lines = ["version: 0.1", "log:", "  level: warn", "  accesslog:", "    disabled: true",
             "storage:", "  filesystem:", f"    rootdirectory: {base / 'data'}", "  delete:", "    enabled: true",
             "http:", f"  addr: 127.0.0.1:{port}", f"  secret: {secrets.token_hex(16)}"]
    if tls is not None:
        lines += ["  tls:", f"    certificate: {tls.server_cert}", f"    key: {tls.server_key}"]
        if client_auth:
            lines += ["    clientcas:", f"      - {tls.ca}"]
    if auth == "htpasswd":
        _htpasswd(base / "htpasswd", users or {})
        lines += ["auth:", "  htpasswd:", "    realm: dockyard-test", f"    path: {base / 'htpasswd'}"]
    elif auth == "token":
        assert token is not None, "a token registry needs a TokenServer"
        lines += ["auth:", "  token:", f"    realm: {token.realm}", f"    service: {SERVICE}",
                  f"    issuer: {ISSUER}", f"    rootcertbundle: {token.cert_path}"]
    elif auth:
        raise ValueError(f"unknown auth {auth!r}")
    config = base / "config.yml"
    config.write_text("\n".join(lines) + "\n")
    log = base / "registry.log"
    with open(log, "wb") as out:
        command = [REGISTRY_BINARY, "serve", str(config)]
        proc = subprocess.Popen(command if netns is None else ["nsenter", f"--net={netns}", *command],
                                stdout=out, stderr=out, start_new_session=True)
    reg = RegistryProcess(proc, port, base, "https" if tls is not None else "http")
    try:
        if netns is None:
            _wait_http(f"{reg.url}/v2/", proc, log, context=tls.client_context() if tls is not None else None)
        else:
            _wait_http_in(netns, f"{reg.url}/v2/", proc, log)
        yield reg
    finally:
        reg.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- pushing test images without the daemon -------------------------------------------------------


def push_blobs(url: str, repo: str, blobs: dict[str, bytes], headers: dict[str, str] | None = None, *,
               context: ssl.SSLContext | None = None) -> None:
    """Upload blobs monolithically with urllib (POST, then PUT ?digest=)."""
    for digest, data in blobs.items():
        req = urllib.request.Request(f"{url}/v2/{repo}/blobs/uploads/", method="POST", headers=headers or {})
        with urllib.request.urlopen(req, context=context) as resp:
            location = resp.headers["Location"]
        if location.startswith("/"):
            location = url + location
        sep = "&" if "?" in location else "?"
        put = urllib.request.Request(f"{location}{sep}digest={digest}", data=data, method="PUT",
                                     headers={**(headers or {}), "Content-Type": "application/octet-stream"})
        with urllib.request.urlopen(put, context=context) as resp:
            assert resp.status == 201, resp.status


def push_manifest(url: str, repo: str, reference: str, data: bytes, media_type: str,
                  headers: dict[str, str] | None = None, *, context: ssl.SSLContext | None = None) -> str:
    req = urllib.request.Request(f"{url}/v2/{repo}/manifests/{reference}", data=data, method="PUT",
                                 headers={**(headers or {}), "Content-Type": media_type})
    with urllib.request.urlopen(req, context=context) as resp:
        assert resp.status == 201, resp.status
        return str(resp.headers.get("Docker-Content-Digest", ""))


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


Handler = Callable[[web.Request], Any]
