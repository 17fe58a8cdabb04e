"""Pulls over https from Debian's docker-registry serving a certificate of a test CA made here:
the CA from hosts.toml (`ca`), or Docker's certs.d layout; skip_verify; client certificates
(`client`, containerd's three forms); and no silent fallback from https to plain HTTP."""

from __future__ import annotations

import contextlib
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from dock.client import Client
from dock.registry import Resolved, TransferDone
from dockyard_common.errors import FailedPrecondition
from tests.daemon import remove_base, start_daemon
from tests.images import OCI_MANIFEST, Image, busybox_image
from tests.registry import RegistryProcess, TLSFiles, make_tls, push_blobs, push_manifest, start_registry

pytestmark = pytest.mark.root
REPO_NAME = "tls/busybox"


@pytest.fixture(scope="module")
def busybox() -> Image:
    return busybox_image("x")


@pytest.fixture(scope="module")
def tls() -> Iterator[TLSFiles]:
    directory = Path(tempfile.mkdtemp(prefix="dy-tls-"))
    try:
        yield make_tls(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def publish(reg: RegistryProcess, img: Image, context: ssl.SSLContext | None) -> str:
    push_blobs(reg.url, REPO_NAME, {d: b for d, b in img.blobs.items() if d != img.manifest_digest},
               context=context)
    push_manifest(reg.url, REPO_NAME, "1", img.manifest, OCI_MANIFEST, context=context)
    return f"{reg.host}/{REPO_NAME}:1"


@contextlib.asynccontextmanager
async def daemon_with_certs() -> AsyncIterator[tuple[Client, Path]]:
    """A daemon whose config dir is a temp dir; yields its client and its certs.d."""
    base = Path(tempfile.mkdtemp(prefix="dy-"))
    (base / "config.toml").write_text("")
    certs = base / "certs.d"
    certs.mkdir()
    d = start_daemon(base=base, extra=["--config", str(base / "config.toml")])
    try:
        async with d.client() as client:
            yield client, certs
    except BaseException:
        print(f"\n----- dockyardd log -----\n{d.log()}")
        raise
    finally:
        remove_base(d)


def configure(certs: Path, reg: RegistryProcess, hosts_toml: str | None, files: dict[str, Path] | None = None) -> Path:
    """certs.d/<host>/ holding `hosts_toml` (None: none) and copies of `files` (name -> source)."""
    directory = certs / reg.host
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    if hosts_toml is not None:
        (directory / "hosts.toml").write_text(hosts_toml)
    for name, source in (files or {}).items():
        shutil.copy(source, directory / name)
    return directory


async def pull(client: Client, ref: str, **options: object) -> tuple[Resolved, TransferDone]:
    events = [e async for e in client.registry.pull_stream(ref, unpack=False, **options)]  # type: ignore[arg-type]
    assert isinstance(events[0], Resolved) and isinstance(events[-1], TransferDone), events
    return events[0], events[-1]


async def test_https_pull_trusts_the_configured_ca_or_skips_verification(tls: TLSFiles, busybox: Image) -> None:
    with start_registry(tls=tls) as reg:
        ref = publish(reg, busybox, ssl.create_default_context(cafile=str(tls.ca)))
        async with daemon_with_certs() as (client, certs):
            with pytest.raises(FailedPrecondition, match=r"TLS certificate verify failed: .*(self.signed|unable to "
                                                         r"get local issuer).*ca = "):
                await pull(client, ref)
            assert await client.content.list_statuses() == []

            configure(certs, reg, 'ca = "ca.pem"\n', {"ca.pem": tls.ca})  # relative to hosts.toml
            resolved, done = await pull(client, ref)
            assert resolved.host == f"https://{reg.host}" and done.target.digest == busybox.manifest_digest

            configure(certs, reg, None, {"ca.crt": tls.ca})  # Docker's layout: *.crt are CA files
            _, done = await pull(client, ref)
            assert done.target.digest == busybox.manifest_digest

            configure(certs, reg, "skip_verify = true\n")
            resolved, _ = await pull(client, ref)
            assert resolved.host == f"https://{reg.host}"

            configure(certs, reg, f'ca = "{certs / "missing.pem"}"\n')
            with pytest.raises(Exception, match=r"CA file .*missing\.pem"):
                await pull(client, ref)

            shutil.rmtree(certs / reg.host)
            resolved, _ = await pull(client, ref, skip_verify=True)  # ctr's --skip-verify
            assert resolved.host == f"https://{reg.host}"


async def test_client_certificates_in_containerds_forms(tls: TLSFiles, busybox: Image) -> None:
    with start_registry(tls=tls, client_auth=True) as reg:
        ref = publish(reg, busybox, tls.client_context())
        async with daemon_with_certs() as (client, certs):
            configure(certs, reg, f'ca = "{tls.ca}"\n')
            with pytest.raises(FailedPrecondition, match=r"TLS handshake failed: .*client certificate"):
                await pull(client, ref)
            for form in (f'[["{tls.client_cert}", "{tls.client_key}"]]',  # pairs
                         f'"{tls.client_both}"',  # one file with both
                         f'["{tls.client_both}"]',  # a list of such files
                         '["client.pem", "client.key"]'):  # a flat pair, relative to hosts.toml
                configure(certs, reg, f'ca = "{tls.ca}"\nclient = {form}\n',
                          {"client.pem": tls.client_cert, "client.key": tls.client_key})
                _, done = await pull(client, ref)
                assert done.target.digest == busybox.manifest_digest, form

            configure(certs, reg, f'ca = "{tls.ca}"\nclient = "client.pem"\n', {"client.pem": tls.client_cert})
            with pytest.raises(Exception, match=r"client certificate .*client\.pem.*hold both"):
                await pull(client, ref)

            # Docker's layout: ca.crt, and client.cert with its client.key
            configure(certs, reg, None, {"ca.crt": tls.ca, "client.cert": tls.client_cert,
                                         "client.key": tls.client_key})
            _, done = await pull(client, ref)
            assert done.target.digest == busybox.manifest_digest


async def test_plain_http_only_for_loopback_or_when_asked(busybox: Image) -> None:
    """A loopback registry with no hosts.toml is tried over https, then over http when the
    handshake is answered in http (Docker's and containerd 2's behaviour for localhost).
    Anywhere else (here: a hosts.toml that names the https server) http is used only when
    asked: --plain-http, or `server = "http://..."`; the failed handshake is the error."""
    with start_registry() as reg:
        ref = publish(reg, busybox, None)
        async with daemon_with_certs() as (client, certs):
            resolved, done = await pull(client, ref)  # 127.0.0.1:<port>: the fallback
            assert (resolved.host, done.target.digest) == (f"http://{reg.host}", busybox.manifest_digest)
            configure(certs, reg, f'server = "https://{reg.host}"\n')
            with pytest.raises(FailedPrecondition, match=r"TLS handshake failed: .*plain HTTP: use --plain-http"):
                await pull(client, ref)
            with pytest.raises(FailedPrecondition, match="TLS handshake failed"):
                await pull(client, ref, skip_verify=True)  # skipping verification is not downgrading
            resolved, _ = await pull(client, ref, plain_http=True)
            assert resolved.host == f"http://{reg.host}"
            configure(certs, reg, f'server = "http://{reg.host}"\n')
            resolved, _ = await pull(client, ref)
            assert resolved.host == f"http://{reg.host}"
