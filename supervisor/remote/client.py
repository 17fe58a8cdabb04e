"""One registry session: HTTP requests with auth, redirects followed by hand, timeouts, errors.

    async with RegistrySession(hosts, creds, token_cache) as s:
        async with s.request("GET", host, "/library/busybox/manifests/latest",
                             scopes=[repository_scope("library/busybox", "pull")]) as resp:
            ...

Redirects are followed here, not by aiohttp, so the Authorization header goes only to the
registry's own origin (scheme, host and port): blob storage redirects (S3, a CDN, another
port) get the request without it. A redirect seen twice is a loop; more than MAX_REDIRECTS
is too many. A 401 from the registry is answered once (auth.py) and the request sent again.

Timeouts: `connect` for the TCP/TLS connection, `read` for each read of headers or body
(a registry that stalls mid-body fails after `read` seconds of silence, however long the
blob). GET and HEAD are sent again after transient failures (429, 502-504, a connection
reset; retry.py); other methods once. TLS per host (CA files, skip_verify, client
certificates) is tls.py's. Failures become the daemon's error kinds, naming the registry
and what was asked: NotFound (404), RegistryAuthError (401/403), FailedPrecondition (TLS:
an untrusted certificate, a failed handshake), Unavailable (connection trouble, timeouts,
429 and 5xx), InvalidArgument (other 4xx, with the registry's error codes).

What a registry sends is untrusted (tests/integration/test_registry_hostile.py):
- every URL it leads us to (a redirect, an upload Location, a token realm) must be an absolute
  http(s) URL, and never takes a request from https down to plain http, where a network could
  read or change it (`follow`): FailedPrecondition. So a token realm of an https registry is
  https too (the user's password goes there), and credentials still go only to the registry's
  own origin and its realm;
- a body read whole (a manifest, an index, a config, a token answer) is capped and must average
  `MIN_BODY_RATE` once its first `read` seconds have passed (`read_limited`): a registry that
  trickles a byte now and then cannot hold a pull for ever with the per-read timeout alone;
- its words (error documents, reason phrases, challenge parameters, URLs) reach users' terminals
  through error messages only with control characters escaped and their length bounded (`shown`);
- a response that is not HTTP (too many or too long header lines, a bad Content-Length) is
  Unavailable saying so, not aiohttp's parser text.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import math
import os
import re
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import yarl

from dockyard_common.errors import DockyardError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from dockyard_common.version import VERSION
from supervisor.remote.auth import Credentials, HostAuth, RegistryAuthError, TokenCache, parse_challenges
from supervisor.remote.hosts import RegistryHost
from supervisor.remote.retry import (
    IDEMPOTENT_METHODS,
    NO_RETRY,
    RETRYABLE_STATUS,
    RetryPolicy,
    TransientError,
    parse_retry_after,
    with_retries,
)
from supervisor.remote.tls import SpeaksPlainHTTP, context_for, tls_error
from supervisor.remote.untrusted import SHOWN, shown

log = logging.getLogger("dockyard.remote")

MAX_REDIRECTS = 10
# A body read whole must average this many bytes a second once its first `read` seconds have
# passed: a legitimate registry is far faster, and the document caps (8 MiB for a config) then
# bound how long one body can take (about 9 minutes at this rate).
MIN_BODY_RATE = 16 << 10
MAX_TOKEN_ANSWER = 1 << 20
MAX_TOKEN_SECONDS = 24 * 3600.0  # a token said to live longer (or for ever, 1e999) is kept this long
USER_AGENT = f"dockyard/{VERSION}"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 30.0
    read: float = 60.0


@dataclass
class Transferred:
    """Bytes moved over the network in a session (for progress and the resume test)."""

    received: int = 0
    sent: int = 0


def origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, f"{(parts.hostname or '').lower()}:{port}"


def _error_detail(body: bytes) -> str:
    """The registry's `{"errors": [{"code", "message"}]}` as text, else the body's start."""
    try:
        doc = json.loads(body)
        errs = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errs, list) and errs:
            return shown("; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errs[:8]
                                   if isinstance(e, dict)), 2 * SHOWN)
    except (ValueError, RecursionError):  # not the registry's error document: show the text
        pass
    text = body[:SHOWN].decode(errors="replace").strip()
    return shown(text)


class SlowBody(Unavailable):
    """A body read whole that arrived slower than MIN_BODY_RATE (after its grace period)."""


async def read_limited(resp: aiohttp.ClientResponse, limit: int, what: str = "", grace: float = 60.0) -> bytes:
    """The whole body, or the first `limit + 1` bytes when it is longer (so callers can tell).
    (StreamReader.read(n) may return fewer than n bytes before the end.)

    The body must come at `MIN_BODY_RATE` on average once `grace` seconds (the read timeout)
    have passed, else SlowBody: the per-read timeout alone lets a byte every minute hold the
    reader for ever."""
    parts: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = asyncio.timeout_at(start + grace)
    try:
        async with deadline:
            while size <= limit:
                chunk = await resp.content.read(limit + 1 - size)
                if not chunk:
                    break
                parts.append(chunk)
                size += len(chunk)
                deadline.reschedule(start + grace + size / MIN_BODY_RATE)
    except TimeoutError:
        if not deadline.expired():
            raise  # the read timeout (silence): the caller's to word
        elapsed = loop.time() - start
        raise SlowBody(f"{what or 'read a response'}: the registry sent only {size} bytes in {elapsed:.1f}s "
                       f"(a response read whole must come at {MIN_BODY_RATE // 1024} KiB/s at least once its "
                       f"first {grace:g}s have passed)") from None
    return b"".join(parts)


def _retry_after(resp: aiohttp.ClientResponse) -> str:
    value = resp.headers.get("Retry-After")
    return f" (retry after {shown(value, 40)}s)" if value else ""


async def status_error(resp: aiohttp.ClientResponse, what: str, host: RegistryHost) -> DockyardError:
    """The error for an unexpected response (reads a little of the body for the reason)."""
    try:
        body = await asyncio.wait_for(resp.content.read(8192), 5)
    except (aiohttp.ClientError, TimeoutError):
        body = b""
    detail = _error_detail(body)
    status = f"{resp.status} {shown(resp.reason or '', 80)}".strip()
    message = f"{what}: registry {host.host} answered {status}" + (f": {detail}" if detail else "")
    if resp.status in RETRYABLE_STATUS:  # (retried, so the final error says exactly which request)
        return TransientError(f"{what}: registry {host.host} answered {status} to {resp.method} "
                              f"{shown_url(str(resp.url))}" + (f": {detail}" if detail else "") + _retry_after(resp),
                              parse_retry_after(resp.headers.get("Retry-After")))
    if resp.status == 404:
        return NotFound(f"{what}: not found on registry {host.host}" + (f" ({detail})" if detail else ""))
    if resp.status in (401, 403):
        return RegistryAuthError(message)
    if resp.status >= 500:
        return Unavailable(message + _retry_after(resp))
    return InvalidArgument(message)


_RESETS = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED})


def shown_url(url: str) -> str:
    """A URL for messages: without its query, which may be a signature (presigned blob storage)."""
    return shown(url.split("?", 1)[0].split("#", 1)[0])


def follow(current: str, location: str, what: str, registry: str) -> str:
    """The absolute URL that `location` (a redirect's Location, an upload Location, a token
    realm; relative to `current`) names, if we may go there: a valid http(s) URL without
    credentials in it, and never from https down to plain http, where anyone on the way could
    read the request or answer in the registry's name. Unavailable for a URL we cannot use,
    FailedPrecondition for a step down to http."""
    try:
        url = urljoin(current, location)
        parsed = yarl.URL(url)
        parsed.port  # noqa: B018 (yarl checks the port's range when asked)
    except ValueError as exc:
        raise Unavailable(f"{what}: registry {registry} gave the URL {shown(location)!r}, which is not valid "
                          f"({shown(exc, 80)})") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Unavailable(f"{what}: registry {registry} gave the URL {shown(location)!r}, which is not an "
                          "absolute http(s) URL")
    if parsed.user is not None or parsed.password is not None:
        raise Unavailable(f"{what}: registry {registry} gave a URL with credentials in it "
                          f"({shown(parsed.scheme)}://...@{shown(parsed.host)}); refused")
    if urlsplit(current).scheme == "https" and parsed.scheme == "http":
        raise FailedPrecondition(f"{what}: registry {registry} led from https to plain http "
                                 f"({shown_url(url)}); refused, since anyone on the network could read or change "
                                 "that request (configure the registry to stay on https)")
    return url


def connection_error(exc: BaseException, what: str, host: RegistryHost, timeouts: Timeouts,
                     method: str = "", url: str = "") -> DockyardError:
    """The error for a failed exchange: TLS trouble (FailedPrecondition), a reset or a body
    cut short (TransientError), anything else (Unavailable)."""
    tls = tls_error(exc, what, host)
    if tls is not None:
        return tls
    target = f" ({method} {shown_url(url)})" if url else ""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransientError(f"{what}: registry {host.host}: the response body was cut short ({exc}){target}")
    reset = isinstance(exc, aiohttp.ServerDisconnectedError) or (
        isinstance(exc, aiohttp.ClientOSError) and not isinstance(exc, aiohttp.ClientConnectorError)
        and exc.errno in _RESETS)
    if reset:
        return TransientError(f"{what}: registry {host.host}: {_describe(exc, timeouts)}{target}")
    return Unavailable(f"{what}: registry {host.host}: {_describe(exc, timeouts)}")


class RegistrySession:
    """HTTP to one registry domain's hosts for one operation; use `async with`."""

    def __init__(self, creds: Credentials | None = None, tokens: TokenCache | None = None,
                 timeouts: Timeouts | None = None, retry: RetryPolicy | None = None) -> None:
        self.creds = creds
        self.tokens = tokens or TokenCache()
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.transferred = Transferred()
        self._auth: dict[str, HostAuth] = {}
        self._ssl: dict[tuple[bool, tuple[str, ...], tuple[tuple[str, str], ...]], ssl.SSLContext | bool] = {}
        self._session: aiohttp.ClientSession | None = None
        self._plain: dict[RegistryHost, RegistryHost] = {}  # loopback hosts found to speak http

    async def __aenter__(self) -> RegistrySession:
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeouts.connect,
                                        sock_connect=self.timeouts.connect, sock_read=self.timeouts.read)
        self._session = aiohttp.ClientSession(timeout=timeout, headers={"User-Agent": USER_AGENT},
                                              auto_decompress=False, trust_env=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("RegistrySession used outside `async with`")
        return self._session

    async def _ssl_for(self, host: RegistryHost) -> ssl.SSLContext | bool:
        key = (host.skip_verify, host.ca_files, host.client_certs)
        if key not in self._ssl:
            # (a thread: loading the system's trust store and the files is disk I/O)
            self._ssl[key] = await asyncio.to_thread(context_for, host)
        return self._ssl[key]

    def effective(self, host: RegistryHost) -> RegistryHost:
        """`host` as this session speaks to it (http for a loopback host found to speak http)."""
        return self._plain.get(host, host)

    def auth_for(self, host: RegistryHost) -> HostAuth:
        if host.host not in self._auth:
            async def fetch(realm: str, service: str, scopes: tuple[str, ...],
                            creds: Credentials | None) -> tuple[str, float]:
                return await self._fetch_token(host, realm, service, scopes, creds)

            self._auth[host.host] = HostAuth(host.host, self.creds, self.tokens, fetch)
        return self._auth[host.host]

    async def _fetch_token(self, host: RegistryHost, realm: str, service: str, scopes: tuple[str, ...],
                           creds: Credentials | None) -> tuple[str, float]:
        """A token from the realm (a GET: retried like any). The host's TLS settings apply to its
        token server too, as in containerd (a private CA usually signs both)."""
        from supervisor.remote.auth import DEFAULT_TOKEN_SECONDS, MIN_TOKEN_SECONDS, basic_header

        reached = self.effective(host)  # (http for a loopback registry found to speak http)
        if not realm.lower().startswith(("http://", "https://")):
            raise RegistryAuthError(f"get a token: registry {host.host} names the realm {shown(realm)!r}, which is "
                                    "not an absolute http(s) URL")
        realm = follow(reached.base + "/", realm, "get a token", host.host)
        params: list[tuple[str, str]] = []
        if service:
            params.append(("service", service))
        params += [("scope", s) for s in scopes]
        if creds is not None:
            params.append(("account", creds.username))
        headers = {"Authorization": basic_header(creds)} if creds is not None else {}
        what = f"token from {shown_url(realm)}"
        tls = await self._ssl_for(host)

        async def once(attempt: int) -> Any:
            try:
                async with self.session.get(realm, params=params, headers=headers, allow_redirects=False,
                                            ssl=tls) as resp:
                    if resp.status in (401, 403):
                        who = f"user {creds.username!r}" if creds else "anonymous access"
                        detail = _error_detail(await resp.content.read(8192))
                        raise RegistryAuthError(f"{what}: {who} refused ({resp.status})"
                                                + (f": {detail}" if detail else ""))
                    if resp.status in RETRYABLE_STATUS:
                        raise TransientError(f"{what}: answered {resp.status} {shown(resp.reason or '', 80)}".rstrip(),
                                             parse_retry_after(resp.headers.get("Retry-After")))
                    if resp.status != 200:
                        detail = _error_detail(await resp.content.read(8192))
                        raise Unavailable(f"{what}: answered {resp.status}" + (f": {detail}" if detail else ""))
                    body = await read_limited(resp, MAX_TOKEN_ANSWER, what, self.timeouts.read)
                    if len(body) > MAX_TOKEN_ANSWER:
                        raise Unavailable(f"{what}: the answer is larger than {MAX_TOKEN_ANSWER} bytes")
                    return json.loads(body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise connection_error(exc, what, host, self.timeouts) from None
            except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
                raise Unavailable(f"{what}: the answer is not JSON") from None

        doc = await with_retries(self.retry, once)
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise Unavailable(f"{what}: the answer has no token")
        if not _TOKEN_CHARS.fullmatch(token):
            # it becomes a header line: a CR/LF in it would be a header of the server's choosing
            raise Unavailable(f"{what}: the token in the answer has characters a token cannot have "
                              "(only visible ASCII)")
        seconds = doc.get("expires_in", DEFAULT_TOKEN_SECONDS)
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not math.isfinite(seconds) \
                or seconds <= 0:
            seconds = DEFAULT_TOKEN_SECONDS
        return token, min(max(float(seconds), MIN_TOKEN_SECONDS), MAX_TOKEN_SECONDS)

    @asynccontextmanager
    async def request(self, method: str, host: RegistryHost, suffix: str, *, what: str,
                      scopes: Sequence[str] = (), headers: dict[str, str] | None = None,
                      data: Any = None, url: str | None = None) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request to `host` (URL `host.url(suffix)`, or an absolute `url` the registry
        gave, e.g. an upload location) and yield the final response, unread. `data` may be a
        function making the body (a stream from the content store), called for each send. GET and HEAD
        are sent again after a transient failure; a body cut short while the caller reads it
        raises TransientError (the caller decides whether to fetch again, e.g. from a Range)."""
        host = self.effective(host)
        target = url or host.url(suffix)
        policy = self.retry if method in IDEMPOTENT_METHODS else NO_RETRY

        async def send() -> aiohttp.ClientResponse:
            return await with_retries(policy, lambda attempt: self._send(method, host, target, what, scopes,
                                                                         headers or {}, data, policy is not NO_RETRY))

        try:
            resp = await send()
        except SpeaksPlainHTTP:
            if not host.http_fallback:
                raise
            # a loopback registry that speaks http (hosts.py): this session keeps to http with it
            plain = replace(host, scheme="http", http_fallback=False)
            log.info("%s: %s answers in plain HTTP; using %s", what, host, plain)
            self._plain[host] = plain
            target = plain.url(suffix) if url is None else "http" + target.removeprefix("https")
            host = plain
            resp = await send()
        try:
            yield resp
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise connection_error(exc, what, host, self.timeouts, method, target) from None
        finally:
            resp.release()

    async def _send(self, method: str, host: RegistryHost, url: str, what: str, scopes: Sequence[str],
                    headers: dict[str, str], data: Any, retrying: bool) -> aiohttp.ClientResponse:
        """One attempt: the request, its auth challenge answered, redirects followed. With
        `retrying`, a retryable status is raised as TransientError instead of returned."""
        auth = self.auth_for(host)
        home = origin(host.base)
        seen = {url}
        hops = 0
        retried = False
        while True:
            send = dict(host.headers)
            send.update(headers)
            same = origin(url) == home
            authorization = await auth.header(scopes) if same else None
            if authorization:
                send["Authorization"] = authorization
            try:
                # (a streamed body is made anew for each send: a redirect must not find it used up)
                resp = await self.session.request(method, url, headers=send, data=data() if callable(data) else data,
                                                  allow_redirects=False,
                                                  ssl=await self._ssl_for(host) if same else True)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise connection_error(exc, what, host, self.timeouts, method, url) from None
            except ValueError as exc:  # a header value aiohttp refuses to send (a newline in it, say)
                raise InvalidArgument(f"{what}: cannot send {method} {shown_url(url)}: {shown(exc, 120)}") from None
            if resp.status == 401 and same and not retried:
                challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
                resp.release()
                auth.on_unauthorized(challenges, authorization is not None, what)
                retried = True
                continue
            if resp.status == 401 and same:
                challenges = parse_challenges(resp.headers.getall("WWW-Authenticate", []))
                resp.release()
                auth.on_unauthorized(challenges, True, what)
                raise RegistryAuthError(f"{what}: registry {host.host} refused the request (401)")
            if resp.status in _REDIRECTS:
                location = resp.headers.get("Location")
                resp.release()
                if not location:
                    raise Unavailable(f"{what}: registry {host.host} redirected ({resp.status}) without a Location")
                hops += 1
                url = follow(url, location, what, host.host)
                if url in seen:
                    raise Unavailable(f"{what}: registry {host.host}: redirect loop (back to {shown_url(url)})")
                if hops > MAX_REDIRECTS:
                    raise Unavailable(f"{what}: registry {host.host}: more than {MAX_REDIRECTS} redirects")
                seen.add(url)
                if resp.status == 303:
                    method, data = "GET", None
                if not same and origin(url) != home:
                    log.debug("%s: following a redirect to %s without credentials", what, origin(url)[1])
                continue
            if retrying and resp.status in RETRYABLE_STATUS:
                try:
                    raise await status_error(resp, what, host)
                finally:
                    resp.release()
            return resp


def _os_words(err: OSError | None) -> str:
    """The system's words for a failed connect, without Python's: asyncio's own text when every
    address failed is "Multiple exceptions: [Errno 111] Connect call failed ('::1', 443, 0, 0), ..."."""
    if err is None:
        return "no connection"
    if err.errno:
        return os.strerror(err.errno)
    found = re.search(r"\[Errno (\d+)\]", str(err))
    return os.strerror(int(found.group(1))) if found else "no connection"


def _describe(exc: BaseException, timeouts: Timeouts) -> str:
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return f"no response within {timeouts.read:g}s (timed out)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        # (not "connect": dock's client reads that word in UNAVAILABLE as "daemon unreachable")
        return f"unreachable: {_os_words(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server hung up before answering"
    if isinstance(exc, aiohttp.ClientResponseError):
        # We never ask aiohttp to raise for a status: this is its parser refusing the response
        # (too many or too long header lines, a bad status line or Content-Length).
        reason = str(exc.message).splitlines()[0] if exc.message else "unreadable"
        reason = re.split(r":?\s*b['\"]", reason, maxsplit=1)[0].rstrip(": ")  # (without the bytes' repr)
        return f"the response is not valid HTTP ({shown(reason, 80)})"
    return shown(str(exc) or "the exchange failed")


@dataclass
class Endpoint:
    """A repository on one registry host (what resolver, fetcher and pusher talk to)."""

    session: RegistrySession
    host: RegistryHost
    repository: str
    actions: tuple[str, ...] = ("pull",)
    extra_scopes: list[str] = field(default_factory=list)

    @property
    def scopes(self) -> list[str]:
        return [f"repository:{self.repository}:{','.join(self.actions)}", *self.extra_scopes]

    @property
    def reached(self) -> RegistryHost:
        """The host as the session has spoken to it so far: after a first request, http for a
        loopback host that answered in http (what Resolved events name, for pull and push)."""
        return self.session.effective(self.host)
