"""Where a registry domain is reached: containerd's hosts.toml, read per domain.

    hosts = Hosts(Path("/etc/dockyard"))                  # reads <dir>/certs.d/<domain>/hosts.toml
    for h in hosts.lookup("docker.io"):                   # mirrors first, then the server
        h.url("/library/busybox/manifests/latest")        # https://registry-1.docker.io/v2/...

A hosts.toml (containerd's format, the keys this daemon understands):

    server = "http://registry.local:5000"      # default: https://<domain> (docker.io ->
                                               # https://registry-1.docker.io); http:// = plain HTTP
    capabilities = ["pull", "resolve", "push"] # of the server (that is the default)
    skip_verify = false                        # do not verify the TLS certificate
    ca = "/etc/dockyard/certs.d/registry.local/ca.pem"   # or a list; relative to the file
    client = [["client.cert", "client.key"]]    # client certificates (containerd's forms: a
                                               # file with both, a list of such, or pairs)
    [header]
      x-custom = "1"                           # extra request headers

    [host."https://mirror.local"]              # tried before the server, in file order
      capabilities = ["pull", "resolve"]       # the default for a mirror
      skip_verify = true
      ca = "mirror-ca.pem"
      override_path = false                    # true: the URL already ends in the API root

Without a hosts.toml, `*.crt` files in the domain's directory are CA files and each
`<name>.cert` with its `<name>.key` a client certificate (Docker's layout).
`certs.d/_default/hosts.toml` applies to domains that have no directory of their own.
Bad files raise InvalidArgument naming the file and the key.

A host is spoken to over https unless `server` (or a mirror's URL) says http://, or the caller
asks for `plain_http` (ctr's --plain-http), which makes the server of a domain without a
hosts.toml http:// (and that of one whose server is the default https://<domain>). The one
fallback, as Docker and containerd 2 have it: a loopback domain (localhost, 127.0.0.0/8, ::1)
with no hosts.toml is tried over https, and spoken to over plain http when the handshake
shows it speaks http (`http_fallback`; client.py). A failed certificate check is never a
reason to try http.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dockyard_common.errors import InvalidArgument
from dockyard_common.reference import check_domain

CAP_PULL = "pull"
CAP_RESOLVE = "resolve"
CAP_PUSH = "push"
ALL_CAPS = frozenset({CAP_PULL, CAP_RESOLVE, CAP_PUSH})
MIRROR_CAPS = frozenset({CAP_PULL, CAP_RESOLVE})
DOCKER_HUB = "docker.io"
DOCKER_HUB_HOST = "registry-1.docker.io"
HOSTS_FILE = "hosts.toml"


@dataclass(frozen=True)
class RegistryHost:
    """One endpoint serving a registry domain's API."""

    scheme: str  # "https" or "http"
    host: str  # host[:port] in URLs
    path: str = "/v2"  # the API root
    capabilities: frozenset[str] = ALL_CAPS
    skip_verify: bool = False
    ca_files: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    mirror: bool = False
    client_certs: tuple[tuple[str, str], ...] = ()  # (certificate file, key file or "" if in the first)
    http_fallback: bool = False  # https first, plain http if the server answers the handshake in http

    def url(self, suffix: str) -> str:
        """The URL of `suffix` (e.g. `/library/busybox/manifests/latest`) under the API root."""
        return f"{self.scheme}://{self.host}{self.path}{suffix}"

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}"

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}"


def default_host(domain: str) -> str:
    return DOCKER_HUB_HOST if domain == DOCKER_HUB else domain


def is_loopback(domain: str) -> bool:
    """localhost, 127.0.0.0/8 or ::1, with or without a port."""
    name = hostname(domain).strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def hostname(domain: str) -> str:
    """The domain without its port (what containerd's distribution-source labels use)."""
    if domain.startswith("["):  # [::1]:5000
        return domain.split("]", 1)[0] + "]"
    return domain.rsplit(":", 1)[0] if domain.count(":") == 1 else domain


@dataclass
class Hosts:
    """hosts.toml lookups under `<config_dir>/certs.d`; `config_dir` None means none are read."""

    config_dir: Path | None = None
    _cache: dict[str, tuple[float, list[RegistryHost]]] = field(default_factory=dict, repr=False)

    @property
    def certs_dir(self) -> Path | None:
        return self.config_dir / "certs.d" if self.config_dir is not None else None

    def lookup(self, domain: str, *, plain_http: bool = False, skip_verify: bool = False) -> list[RegistryHost]:
        """The endpoints for `domain`, in the order to try them (mirrors, then the server)."""
        if not domain:
            raise InvalidArgument("registry domain must not be empty")
        check_domain(domain)  # it names a directory under certs.d/ and becomes a URL's host
        found = self._configured(domain)
        scheme = "http" if plain_http else "https"
        server = RegistryHost(scheme, default_host(domain), skip_verify=skip_verify,
                              http_fallback=not plain_http and is_loopback(domain))
        if found is None:
            return [server]
        out = []
        for h in found:
            if not h.mirror and plain_http and h.scheme == "https" and h.host == default_host(domain):
                h = replace(h, scheme="http")
            if skip_verify and not h.skip_verify:
                h = replace(h, skip_verify=True)
            out.append(h)
        return out

    def _configured(self, domain: str) -> list[RegistryHost] | None:
        certs = self.certs_dir
        if certs is None:
            return None
        directory = certs / domain.replace("[", "").replace("]", "") if ":" in domain else certs / domain
        if not directory.is_dir():
            directory = certs / domain
        if not directory.is_dir():
            directory = certs / "_default"
            if not directory.is_dir():
                return None
        path = directory / HOSTS_FILE
        if not path.is_file():
            cas = tuple(sorted(str(p) for p in directory.glob("*.crt")))
            clients = tuple((str(p), str(p.with_suffix(".key"))) for p in sorted(directory.glob("*.cert"))
                            if p.with_suffix(".key").is_file())
            if not cas and not clients:
                return None
            return [RegistryHost("https", default_host(domain), ca_files=cas, client_certs=clients)]
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        cached = self._cache.get(str(path))
        if cached is not None and cached[0] == mtime:
            hosts = cached[1]
        else:
            hosts = parse_hosts_toml(path.read_bytes(), path, domain)
            self._cache[str(path)] = (mtime, hosts)
        return hosts


def _problem(path: Path, message: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {message}")


def _endpoint(url: str, path: Path, key: str, override_path: bool) -> tuple[str, str, str]:
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _problem(path, f"{key}: {url!r} is not an http(s) URL")
    api = parts.path.rstrip("/")
    if not override_path:
        api = api + "/v2" if not api.endswith("/v2") else api
    return parts.scheme, parts.netloc, api or "/v2"


def _entry(table: dict[str, Any], path: Path, key: str, url: str, default_caps: frozenset[str],
           mirror: bool) -> RegistryHost:
    known = {"server", "capabilities", "skip_verify", "ca", "client", "header", "override_path", "host"}
    for k in table:
        if k not in known:
            raise _problem(path, f"{key}: unknown setting {k!r}")
    caps = table.get("capabilities")
    if caps is None:
        capabilities = default_caps
    else:
        if not isinstance(caps, list) or not all(c in ALL_CAPS for c in caps):
            raise _problem(path, f"{key}.capabilities must be a list of {sorted(ALL_CAPS)}")
        capabilities = frozenset(caps)
    skip = table.get("skip_verify", False)
    if not isinstance(skip, bool):
        raise _problem(path, f"{key}.skip_verify must be true or false")
    ca = table.get("ca", [])
    cas = [ca] if isinstance(ca, str) else ca
    if not isinstance(cas, list) or not all(isinstance(c, str) for c in cas):
        raise _problem(path, f"{key}.ca must be a path or a list of paths")
    override = table.get("override_path", False)
    if not isinstance(override, bool):
        raise _problem(path, f"{key}.override_path must be true or false")
    clients = _client_certs(table.get("client", []), path, key)
    header = table.get("header", {})
    if not isinstance(header, dict):
        raise _problem(path, f"{key}.header must be a table")
    headers: list[tuple[str, str]] = []
    for name, value in header.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise _problem(path, f"{key}.header.{name} must be a string or a list of strings")
        headers += [(name, v) for v in values]
    scheme, netloc, api = _endpoint(url, path, key, override)
    return RegistryHost(scheme, netloc, api, capabilities, skip, tuple(str(path.parent / c) for c in cas),
                        tuple(headers), mirror, tuple((str(path.parent / c), str(path.parent / k) if k else "")
                                                      for c, k in clients))


def _client_certs(value: Any, path: Path, key: str) -> list[tuple[str, str]]:
    """containerd's `client` forms: "both.pem", ["both.pem", ...], [["cert.pem", "key.pem"], ...]."""
    items = [value] if isinstance(value, str) else value
    problem = _problem(path, f'{key}.client must be a file, a list of files or of ["cert", "key"] pairs')
    if not isinstance(items, list):
        raise problem
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str) and item:
            out.append((item, ""))
        elif isinstance(item, list) and len(item) == 2 and all(isinstance(i, str) and i for i in item):
            out.append((item[0], item[1]))
        else:
            raise problem
    return out


def parse_hosts_toml(data: bytes, path: Path, domain: str) -> list[RegistryHost]:
    try:
        doc = tomllib.loads(data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _problem(path, f"not valid TOML: {exc}") from None
    out: list[RegistryHost] = []
    mirrors = doc.get("host", {})
    if not isinstance(mirrors, dict):
        raise _problem(path, "[host] must be a table of URL -> settings")
    for url, table in mirrors.items():
        if not isinstance(table, dict):
            raise _problem(path, f"host.{url!r} must be a table")
        out.append(_entry(table, path, f"host.{url!r}", url, MIRROR_CAPS, True))
    server = doc.get("server", f"https://{default_host(domain)}")
    if not isinstance(server, str):
        raise _problem(path, "server must be a URL string")
    top = {k: v for k, v in doc.items() if k not in ("host",)}
    out.append(_entry(top, path, "server", server, ALL_CAPS, False))
    return out


def config_dir_for(config_source: str, default_config: Path) -> Path:
    """The daemon's config directory: that of the config file it read, else the default's
    (/etc/dockyard); certs.d/ lives there."""
    if config_source and config_source != "defaults":
        return Path(config_source).parent
    return default_config.parent
