"""Registry authentication: WWW-Authenticate challenges, Bearer tokens and Basic auth.

The flow (Docker's token spec, as containerd's docker resolver does it):

    1. a request gets 401 with `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`
       (or `Basic realm="…"`);
    2. for Bearer, GET <realm>?service=<service>&scope=<scope>… — anonymously, or with Basic
       credentials when the caller has some for this registry — answers
       {"token"|"access_token": …, "expires_in": s, "issued_at": t};
    3. the request is sent again with `Authorization: Bearer <token>` (or `Basic …`).

Tokens are cached per (realm, service, scopes, who asked) until they expire (less a margin),
in a `TokenCache` the daemon shares between pulls, so a second pull of the same repository
asks the token server nothing. Scopes are `repository:<path>:pull` (or `pull,push`).
Credentials are only ever attached to requests for the registry host they belong to (and
to the token realm that host names, which must be an absolute http(s) URL and is never
plain http for a registry reached over https): redirects elsewhere go without them (client.py).

Errors: `RegistryAuthError` (a FailedPrecondition) when the registry or its token server
refuses, with the registry's own words when it gave any.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from dockyard_common.credentials import Credentials
from dockyard_common.errors import FailedPrecondition
from supervisor.remote.untrusted import shown

DEFAULT_TOKEN_SECONDS = 60  # the spec's default when expires_in is absent
MIN_TOKEN_SECONDS = 60
EXPIRY_MARGIN = 5.0


class RegistryAuthError(FailedPrecondition):
    """The registry (or its token server) refused our credentials, or asked for some we lack."""


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*(\"(?:[^\"\\]|\\.)*\"|{_TOKEN}[=]*)\s*(?:,|$)")
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")


def parse_challenges(headers: Sequence[str]) -> list[Challenge]:
    """Every challenge in the WWW-Authenticate header values (RFC 7235 syntax)."""
    out: list[Challenge] = []
    for header in headers:
        pos = 0
        while pos < len(header):
            while pos < len(header) and header[pos] in ", \t":
                pos += 1
            m = _SCHEME.match(header, pos)
            if m is None:
                break
            scheme = m.group(1).lower()
            pos = m.end()
            params: dict[str, str] = {}
            while True:
                p = _PARAM.match(header, pos)
                if p is None:
                    break
                value = p.group(2)
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                params[p.group(1).lower()] = value
                pos = p.end()
            out.append(Challenge(scheme, params))
    return out


def repository_scope(repository: str, *actions: str) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def merge_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    """Scopes sorted and merged per resource (`repository:a:pull` + `repository:a:push` ->
    `repository:a:pull,push`), so equal needs share a cache entry."""
    merged: dict[str, set[str]] = {}
    for scope in scopes:
        for one in scope.split(" "):
            if not one:
                continue
            resource, _, actions = one.rpartition(":")
            if not resource:
                merged.setdefault(one, set())
                continue
            merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return tuple(sorted(f"{r}:{','.join(sorted(a))}" if a else r for r, a in merged.items()))


@dataclass
class _Token:
    value: str
    expires: float


class TokenCache:
    """Bearer tokens by (realm, service, scopes, identity), each until it expires."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens: dict[tuple[str, str, tuple[str, ...], str], _Token] = {}
        self._clock = clock

    def get(self, key: tuple[str, str, tuple[str, ...], str]) -> str | None:
        tok = self._tokens.get(key)
        if tok is None:
            return None
        if tok.expires <= self._clock():
            del self._tokens[key]
            return None
        return tok.value

    def put(self, key: tuple[str, str, tuple[str, ...], str], value: str, seconds: float) -> None:
        self._tokens[key] = _Token(value, self._clock() + max(seconds - EXPIRY_MARGIN, 1.0))
        if len(self._tokens) > 4096:  # a long-lived daemon: drop what has expired
            now = self._clock()
            self._tokens = {k: t for k, t in self._tokens.items() if t.expires > now}


def identity(creds: Credentials | None) -> str:
    """Who a token was issued to, without keeping the secret in the cache key."""
    if creds is None:
        return ""
    return hashlib.sha256(f"{creds.username}\0{creds.secret}".encode()).hexdigest()


def basic_header(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()


# (realm, service, scopes, credentials) -> (token, seconds it is valid)
TokenFetcher = Callable[[str, str, tuple[str, ...], Credentials | None], Awaitable[tuple[str, float]]]


class HostAuth:
    """What one registry host asked for, and how we answer it (one per host per session)."""

    def __init__(self, host: str, creds: Credentials | None, cache: TokenCache, fetch: TokenFetcher) -> None:
        self.host = host
        self.creds = creds
        self.cache = cache
        self.fetch = fetch
        self.challenge: Challenge | None = None

    async def header(self, scopes: Sequence[str]) -> str | None:
        """The Authorization header for a request needing `scopes`, once challenged."""
        ch = self.challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            return basic_header(self.creds) if self.creds is not None else None
        realm, service = ch.params.get("realm", ""), ch.params.get("service", "")
        wanted = merge_scopes([*scopes, *([ch.params["scope"]] if ch.params.get("scope") else [])])
        key = (realm, service, wanted, identity(self.creds))
        token = self.cache.get(key)
        if token is None:
            token, seconds = await self.fetch(realm, service, wanted, self.creds)
            self.cache.put(key, token, seconds)
        return "Bearer " + token

    def on_unauthorized(self, challenges: list[Challenge], had_auth: bool, what: str) -> None:
        """Learn from a 401. Raises when sending the request again cannot help."""
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            offered = shown(", ".join(c.scheme for c in challenges[:8]) or "none")
            raise RegistryAuthError(f"{what}: registry {self.host} wants authentication we cannot do "
                                    f"(challenges: {offered})")
        ch = next((c for c in usable if c.scheme == "bearer"), usable[0])
        if ch.scheme == "bearer" and not ch.params.get("realm"):
            raise RegistryAuthError(f"{what}: registry {self.host} sent a Bearer challenge with no realm")
        if ch.scheme == "basic" and self.creds is None:
            raise RegistryAuthError(f"{what}: registry {self.host} requires a username and password "
                                    "(dock login, or --user)")
        if had_auth and self.challenge is not None and self.challenge.scheme == ch.scheme:
            if ch.params.get("error") == "insufficient_scope" or ch.scheme == "bearer":
                who = f"user {self.creds.username!r}" if self.creds else "anonymous access"
                raise RegistryAuthError(f"{what}: registry {self.host} denied {who}: "
                                        f"{shown(ch.params.get('error', 'unauthorized'), 80)}"
                                        + ("" if self.creds else " (dock login, or --user)"))
            raise RegistryAuthError(f"{what}: registry {self.host} refused the credentials of user "
                                    f"{self.creds.username if self.creds else ''!r}")
        self.challenge = ch
