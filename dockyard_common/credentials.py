"""Docker's credential file: `~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`), `auths`.

    creds = load("registry.local:5000")          # Credentials("alice", "s3cret") or None
    store("registry.local:5000", Credentials("alice", "s3cret"))
    erase("registry.local:5000")                 # True when something was removed

Each entry is keyed the way the docker CLI keys it: the registry host (`host[:port]`), and
`https://index.docker.io/v1/` for Docker Hub. `auth` is base64("user:password"); an
`identitytoken` is an OAuth refresh token the registry gave at login (used as the secret
with username `<token>` semantics left to the caller). Other keys of the file (proxies, ...)
are kept as they are when writing.

Credential helpers, as the docker CLI runs them: when `credHelpers` names a helper for the
registry, or else `credsStore` names one for all, the secrets live in that helper, not in
the file. `docker-credential-<name> get` (found on PATH) gets the server key on stdin and
answers {"Username", "Secret"} ("credentials not found" = none); `store` gets
{"ServerURL", "Username", "Secret"} and the file keeps an empty `auths` entry for the
registry, as Docker's does; `erase` gets the server key. A helper that is missing, fails or
answers nonsense is an error naming it (the daemon then pulls anonymously, with a warning).

This module does file I/O and runs helpers only (no network, no aiohttp) so the CLI can use
it too; every call blocks, so async callers run it in a thread. The file is written
atomically with mode 0600 in a 0700 directory. The daemon reads the file and runs the
helpers of the user it runs as, with its own environment (DOCKER_CONFIG, PATH).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockyard_common.errors import FailedPrecondition, InvalidArgument
from dockyard_common.jsonutil import json_object

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})
CONFIG_FILE = "config.json"
HELPER_PREFIX = "docker-credential-"
HELPER_TIMEOUT = 30.0
_NOT_FOUND = "credentials not found"  # what docker-credential-helpers print when they have none


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
    return json_object(raw or b"{}", str(path), InvalidArgument)


def _decode(entry: Any, where: str) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    user, password = entry.get("username") or "", entry.get("password") or ""
    if isinstance(auth, str) and auth:
        try:
            user, sep, password = base64.b64decode(auth, validate=False).decode().partition(":")
        except ValueError:  # binascii.Error, UnicodeDecodeError, and a non-ASCII str's own ValueError
            raise InvalidArgument(f"{where}: `auth` is not base64 of user:password") from None
        if not sep:
            raise InvalidArgument(f"{where}: `auth` is not base64 of user:password")
    if isinstance(token, str) and token:
        return Credentials(user or "<token>", token)
    if user or password:
        return Credentials(str(user), str(password))
    return None


def _keys(server: str) -> tuple[str, ...]:
    """The keys a registry's entry may have: the docker CLI has written all of these over the years."""
    host = registry_host(server)
    return (auth_key(server), host, f"https://{host}", f"http://{host}", f"https://{host}/v1/",
            f"https://{host}/v2/")


def helper_for(server: str, data: dict[str, Any], path: Path) -> str | None:
    """The credential helper's name for `server`: its `credHelpers` entry, else `credsStore`."""
    helpers = data.get("credHelpers") or {}
    if not isinstance(helpers, dict):
        raise InvalidArgument(f"{path}: `credHelpers` must be an object")
    for key in _keys(server):
        if key in helpers:
            name = helpers[key]
            break
    else:
        name = data.get("credsStore") or None
    if name is not None and (not isinstance(name, str) or not name or "/" in name):
        raise InvalidArgument(f"{path}: credential helper name {name!r} is not valid")
    return name


def run_helper(name: str, action: str, stdin: str) -> tuple[bool, str]:
    """Run `docker-credential-<name> <action>`; (succeeded, its output)."""
    program = HELPER_PREFIX + name
    found = shutil.which(program)
    if found is None:
        raise InvalidArgument(f"credential helper {program} is not on PATH (named in {config_path()})")
    try:
        done = subprocess.run([found, action], input=stdin.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise FailedPrecondition(f"credential helper {program} {action}: no answer within "
                                 f"{HELPER_TIMEOUT:g}s") from None
    except OSError as exc:
        raise FailedPrecondition(f"credential helper {program} {action}: {exc.strerror or exc}") from None
    output = (done.stdout or done.stderr).decode(errors="replace").strip()
    return done.returncode == 0, output


def _from_helper(name: str, server: str) -> Credentials | None:
    ok, output = run_helper(name, "get", auth_key(server))
    program = HELPER_PREFIX + name
    if not ok:
        if _NOT_FOUND in output.lower():
            return None
        raise FailedPrecondition(f"credential helper {program} get {auth_key(server)}: {output[:300]}")
    try:
        doc = json.loads(output)
    except (ValueError, RecursionError):  # refused below in words
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("Username"), str) \
            or not isinstance(doc.get("Secret"), str):
        raise FailedPrecondition(f"credential helper {program} get: the answer is not "
                                 '{"Username": ..., "Secret": ...}')
    if not doc["Username"] and not doc["Secret"]:
        return None
    return Credentials(doc["Username"], doc["Secret"])


def load(server: str, path: Path | None = None) -> Credentials | None:
    """The stored credentials for `server` (from its credential helper when one is
    configured, else the file's `auths`), or None."""
    path = path or config_path()
    data = _read(path)
    helper = helper_for(server, data, path)
    if helper is not None:
        return _from_helper(helper, server)
    auths = data.get("auths") or {}
    if not isinstance(auths, dict):
        raise InvalidArgument(f"{path}: `auths` must be an object")
    for candidate in _keys(server):
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
    """Save credentials for `server` the way `docker login` does (in its credential helper
    when one is configured); returns the config file written."""
    path = path or config_path()
    data = _read(path)
    auths = data.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise InvalidArgument(f"{path}: `auths` must be an object")
    helper = helper_for(server, data, path)
    if helper is not None:
        request = json.dumps({"ServerURL": auth_key(server), "Username": creds.username, "Secret": creds.secret})
        ok, output = run_helper(helper, "store", request)
        if not ok:
            raise FailedPrecondition(f"credential helper {HELPER_PREFIX}{helper} store {auth_key(server)}: "
                                     f"{output[:300]}")
        auths[auth_key(server)] = {}  # the secret is the helper's; the file only lists the registry
    else:
        encoded = base64.b64encode(f"{creds.username}:{creds.secret}".encode()).decode()
        auths[auth_key(server)] = {"auth": encoded}
    _write(path, data)
    return path


def erase(server: str, path: Path | None = None) -> bool:
    """Forget the credentials for `server`; False when there were none."""
    path = path or config_path()
    data = _read(path)
    erased = False
    helper = helper_for(server, data, path)
    if helper is not None:
        ok, output = run_helper(helper, "erase", auth_key(server))
        if not ok and _NOT_FOUND not in output.lower():
            raise FailedPrecondition(f"credential helper {HELPER_PREFIX}{helper} erase {auth_key(server)}: "
                                     f"{output[:300]}")
        erased = ok
    auths = data.get("auths")
    if not isinstance(auths, dict):
        return erased
    host = registry_host(server)
    keys = [k for k in list(auths) if k == auth_key(server) or registry_host(k) == host]
    if not keys:
        return erased
    for k in keys:
        del auths[k]
    _write(path, data)
    return True
