"""Docker's credential file: `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`), `auths`.

    creds = load("registry.local:5000")          # Credentials("alice", "s3cret") or None
    store("registry.local:5000", Credentials("alice", "s3cret"))
    erase("registry.local:5000")                 # True when something was removed

Each entry is keyed the way the docker CLI keys it: the registry host (`host[:port]`), and
`https://index.docker.io/v1/` for Docker Hub. `auth` is base64("user:password"); an
`identitytoken` is an OAuth refresh token the registry gave at login (used as the secret
with username `<token>` semantics left to the caller). Other keys of the file (credsStore,
credHelpers, proxies, ...) are kept as they are when writing; credential helpers themselves
are not run: only the file's own `auths` are read.

This module does file I/O only (no network, no aiohttp) so the CLI can use it too; the file
is written atomically with mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.errors import InvalidArgument

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Credentials:
    """A username and its secret (a password, a personal access token or an identity token)."""

    username: str
    secret: str

    def __repr__(self) -> str:  # never print the secret in logs or tracebacks
        return f"Credentials(username={self.username!r}, secret=***)"


def config_dir() -> Path:
    """Where the docker CLI keeps config.json: $DOCKER_CONFIG, else ~/.docker."""
    env = os.environ.get("DOCKER_CONFIG")
    if env:
        return Path(env)
    return Path.home() / ".docker"


def config_path() -> Path:
    return config_dir() / CONFIG_FILE


def registry_host(server: str) -> str:
    """`https://r.example:5000/v2/` -> `r.example:5000`; Docker Hub's names -> `docker.io`."""
    text = server.strip()
    for prefix in ("https://", "http://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    text = text.split("/", 1)[0]
    if not text:
        raise InvalidArgument(f"registry {server!r}: no host in it")
    return "docker.io" if text.lower() in _HUB_NAMES else text


def auth_key(server: str) -> str:
    """The `auths` key the docker CLI uses for a registry."""
    host = registry_host(server)
    return DOCKER_HUB_KEY if host == "docker.io" else host


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"{path}: expected a JSON object")
    return data


def _decode(entry: Any, where: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    user, password = entry.get("username") or "", entry.get("password") or ""
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=False).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument(f"{where}: `auth` is not base64 of user:password") from None
        if not sep:
            raise InvalidArgument(f"{where}: `auth` is not base64 of user:password")
    if isinstance(token, str) and token:
        return Credentials(user or "<token>", token)
    if user or password:
        return Credentials(str(user), str(password))
    return None


def load(server: str, path: Path | None = None) -> Credentials | None:
    """The stored credentials for `server`, or None."""
    path = path or config_path()
    auths = _read(path).get("auths") or {}
    if not isinstance(auths, dict):
        raise InvalidArgument(f"{path}: `auths` must be an object")
    key = auth_key(server)
    host = registry_host(server)
    # The docker CLI has written all of these forms over the years.
    for candidate in (key, host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"):
        if candidate in auths:
            return _decode(auths[candidate], f"{path}: auths[{candidate!r}]")
    return None


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent="\t")
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def store(server: str, creds: Credentials, path: Path | None = None) -> Path:
    """Save credentials for `server` the way `docker login` does; returns the file written."""
    path = path or config_path()
    data = _read(path)
    auths = data.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise InvalidArgument(f"{path}: `auths` must be an object")
    encoded = base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()
    auths[auth_key(server)] = {"auth": encoded}
    _write(path, data)
    return path


def erase(server: str, path: Path | None = None) -> bool:
    """Forget the credentials for `server`; False when there were none."""
    path = path or config_path()
    data = _read(path)
    auths = data.get("auths")
    if not isinstance(auths, dict):
        return False
    host = registry_host(server)
    keys = [k for k in list(auths) if k == auth_key(server) or registry_host(k) == host]
    if not keys:
        return False
    for k in keys:
        del auths[k]
    _write(path, data)
    return True
