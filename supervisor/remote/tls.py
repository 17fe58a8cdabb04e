"""TLS for one registry host: its trusted CAs, skip_verify, client certificates; and TLS errors
told in words a user can act on.

    ctx = await asyncio.to_thread(context_for, host)    # reads files: never on the event loop
    session.request(..., ssl=ctx)

- No setting: the system's trust store, hostname checked (aiohttp's default, `True`).
- `ca` files are trusted *in addition to* the system's roots (as containerd does).
- `skip_verify`: neither the chain nor the hostname is checked (client certificates are still
  sent when configured).
- `client`: certificates to present, as containerd's hosts.toml has them: "both.pem" (one file
  holding certificate and key), ["a.pem", "b.pem"] (several such files) or
  [["cert.pem", "key.pem"], ...] (pairs). A flat ["cert.pem", "key.pem"] whose first file
  has no key and whose second has no certificate is read as a pair too (containerd would
  refuse it; the intent is plain). Python's ssl offers one chain per context: the first pair
  loaded is the one presented.
"""

from __future__ import annotations

import ssl

import aiohttp

from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument
from supervisor.remote.hosts import RegistryHost

_KEY_MARK = b"PRIVATE KEY-----"
_CERT_MARK = b"-----BEGIN CERTIFICATE-----"


def _read(path: str, host: RegistryHost, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidArgument(f"registry {host.host}: {what} {path}: {exc.strerror or exc}") from None


def client_pairs(host: RegistryHost) -> list[tuple[str, str]]:
    """(certificate file, key file or "" when the first holds both), flat cert+key lists paired."""
    entries = list(host.client_certs)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(entries):
        cert, key = entries[i]
        if not key and i + 1 < len(entries) and not entries[i + 1][1]:
            first = _read(cert, host, "client certificate")
            if _KEY_MARK not in first:
                second = _read(entries[i + 1][0], host, "client key")
                if _KEY_MARK in second and _CERT_MARK not in second:
                    out.append((cert, entries[i + 1][0]))
                    i += 2
                    continue
        out.append((cert, key))
        i += 1
    return out


def context_for(host: RegistryHost) -> ssl.SSLContext | bool:
    """The `ssl=` argument for aiohttp requests to `host` (blocking: reads the files)."""
    if not host.ca_files and not host.client_certs:
        return False if host.skip_verify else True
    ctx = ssl.create_default_context()
    for ca in host.ca_files:
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidArgument(f"registry {host.host}: CA file {ca}: {_reason(exc)}") from None
    if host.skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    for cert, key in client_pairs(host)[:1]:
        try:
            ctx.load_cert_chain(cert, key or None)
        except (OSError, ssl.SSLError) as exc:
            files = f"{cert} and {key}" if key else cert
            hint = "" if key else " (one file must hold both the certificate and its key; a pair is " \
                                  "written client = [[\"cert.pem\", \"key.pem\"]])"
            raise InvalidArgument(f"registry {host.host}: client certificate {files}: {_reason(exc)}{hint}") \
                from None
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or exc.reason or str(exc)
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind an aiohttp failure, if any."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        # (aiohttp's TLS errors are ssl.SSLError subclasses themselves: unwrap them first)
        if isinstance(seen, aiohttp.ClientConnectorCertificateError):
            return seen.certificate_error if isinstance(seen.certificate_error, ssl.SSLError) else None
        if isinstance(seen, aiohttp.ClientOSError | aiohttp.ClientConnectorError):
            os_error = getattr(seen, "os_error", None)
            if isinstance(os_error, ssl.SSLError):
                return os_error
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class SpeaksPlainHTTP(FailedPrecondition):
    """The TLS handshake was answered in plain HTTP."""


def tls_error(exc: BaseException, what: str, host: RegistryHost) -> DockyardError | None:
    """A FailedPrecondition explaining a TLS failure talking to `host`, or None when `exc` is not one."""
    cause = ssl_cause(exc)
    if cause is None and not isinstance(exc, aiohttp.ClientSSLError):
        return None
    where = f"{what}: registry {host.host}"
    if isinstance(cause, ssl.SSLCertVerificationError) or isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = _reason(cause) if cause is not None else str(exc)
        return FailedPrecondition(
            f"{where}: TLS certificate verify failed: {reason} (trust its CA with `ca = \"ca.pem\"` in "
            f"certs.d/{host.host}/hosts.toml under the daemon's config dir, or, for testing only, "
            "skip_verify = true or --skip-verify)")
    reason = _reason(cause) if cause is not None else str(exc)
    hint = ""
    upper = reason.upper()
    if "WRONG_VERSION_NUMBER" in upper or "RECORD_LAYER" in upper or "PACKET_LENGTH" in upper:
        return SpeaksPlainHTTP(f"{where}: TLS handshake failed: {reason} (it seems to speak plain HTTP: use "
                               f"--plain-http, or server = \"http://...\" in certs.d/{host.host}/hosts.toml)")
    if "CERTIFICATE_REQUIRED" in upper or "BAD_CERTIFICATE" in upper or "UNKNOWN_CA" in upper:
        hint = (" (the registry wants a client certificate it trusts: client = [[\"cert.pem\", \"key.pem\"]] "
                f"in certs.d/{host.host}/hosts.toml)")
    return FailedPrecondition(f"{where}: TLS handshake failed: {reason}{hint}")
