"""Image references as Docker reads them: `[domain[:port]/]path[:tag][@digest]`.

Words
    reference   the whole string, e.g. `registry.local:5000/team/app:v1@sha256:…`
    domain      the registry host, with an optional port; `docker.io` for Docker Hub
    path        the repository within the registry: lowercase components joined by "/"
    name        domain + "/" + path (at most 255 characters)
    tag         `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`
    digest      `algorithm:hex`, checked as go-digest does (sha256, sha384, sha512)

Two readings:
    `parse(s)`             the grammar alone (distribution's `reference.Parse`): nothing is
                           added; "busybox" has no domain.
    `parse_normalized(s)`  Docker's familiar names (`ParseNormalizedNamed`): the first component
                           is a domain only when it is `localhost`, contains "." or ":", or has
                           uppercase letters; otherwise the domain is docker.io, and one-component
                           Docker Hub paths get `library/`. `index.docker.io` becomes docker.io.
    `normalize(s)`         what an image is stored under (`ParseDockerRef`): normalized, `latest`
                           added when there is neither tag nor digest, and a reference with both
                           keeps only the digest (the digest is what it names).
    `check_image_name(s)`  what an image record may be named: what `parse` reads (the image
                           store refuses anything else with InvalidArgument naming the name).

    normalize("busybox")                   == "docker.io/library/busybox:latest"
    normalize("localhost:5000/a/b")        == "localhost:5000/a/b:latest"
    familiar(parse_normalized("docker.io/library/busybox:1")) == "busybox:1"

The grammar is today's distribution/reference (IPv6 hosts `[::1]:5000` are domains, an uppercase
first component is a domain); containerd 1.6 vendors an older copy that lacks both.

Errors are `InvalidReference` (an InvalidArgument) with Docker's words first and, where Docker
says only "invalid reference format", the part that is wrong:
`reference "a:b:c": invalid reference format: invalid tag "b:c"`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dockyard_common.errors import InvalidArgument
from dockyard_common.goquote import go_quote

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255
TAG_LENGTH_MAX = 128
# The longest reference the grammar allows: name, ":" tag, "@" sha512 digest.
REFERENCE_LENGTH_MAX = NAME_TOTAL_LENGTH_MAX + 1 + TAG_LENGTH_MAX + 1 + len("sha512:") + 128

# distribution/reference's regexp.go, in Python. re.ASCII: Go's \w is ASCII. The separator is
# `[-]+`, not the older `[-]*`: the same language, but without the ambiguity that makes a
# backtracking matcher exponential on long names.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REMOTE = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_NAME = rf"(?:{_DOMAIN}/)?{_REMOTE}"

_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?", re.ASCII)
_NAME_RE = re.compile(rf"(?:({_DOMAIN})/)?({_REMOTE})", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)
_DIGEST_RE = re.compile(_DIGEST, re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")

# go-digest: the algorithms containerd registers, and their encoded lengths.
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+", re.ASCII)
_HEX_RE = re.compile(r"[a-f0-9]+")


class InvalidReference(InvalidArgument):
    """A string that is not a valid image reference; `reason` is Docker's part of the message."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"reference {short_quote(text)}: {reason}")


def digest_problem(digest: str) -> str | None:
    """Why go-digest's `Digest.Validate` refuses `digest`, in its words, or None if it is valid."""
    algorithm, sep, encoded = digest.partition(":")
    if not algorithm or not sep or not encoded:
        return "invalid checksum digest format"
    length = _DIGEST_LENGTHS.get(algorithm)
    if length is None:
        if not _ANY_DIGEST_RE.fullmatch(digest):
            return "invalid checksum digest format"
        return "unsupported digest algorithm"
    if len(encoded) != length:
        return "invalid checksum digest length"
    if not _HEX_RE.fullmatch(encoded):
        return "invalid checksum digest format"
    return None


@dataclass(frozen=True)
class Reference:
    """A parsed reference. `domain` is "" only for a name `parse` read without one."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def parse(s: str) -> Reference:
    """Read `s` by the grammar alone (distribution's `reference.Parse`)."""
    if len(s) > REFERENCE_LENGTH_MAX:  # before the regular expressions walk a megabyte
        raise InvalidReference(s, f"longer than a reference can be ({REFERENCE_LENGTH_MAX} characters)")
    match = _REFERENCE_RE.fullmatch(s)
    if match is None:
        if s == "":
            raise InvalidReference(s, "repository name must have at least one component")
        if _REFERENCE_RE.fullmatch(s.lower()) is not None:
            raise InvalidReference(s, "repository name must be lowercase")
        raise InvalidReference(s, _diagnose(s))
    name, tag, digest = match.group(1), match.group(2) or "", match.group(3) or ""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(s, f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters")
    if digest and (problem := digest_problem(digest)) is not None:
        raise InvalidReference(s, problem)
    parts = _NAME_RE.fullmatch(name)
    assert parts is not None, "a name the reference grammar accepted"
    return Reference(parts.group(1) or "", parts.group(2), tag, digest)


_QUOTE_MAX = 80


def image_name_problem(name: str) -> str | None:
    """Why `name` cannot be a stored image's name, or None when it can.

    containerd stores any non-empty name; clients (ctr, Docker, Kubernetes) then parse it as a
    reference, and one that does not parse is a name nothing can pull, push, tag or run: `..`
    components, absolute paths, `%2f`, blanks, uppercase repositories, names of thousands of
    characters. The rule is the reference grammar alone (`parse`: nothing is added, so the
    short names `ctr` users type, like `busybox:copy`, and CRI's `sha256:<id>` names pass).
    """
    if not name:
        return "must not be empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "must not contain control characters"
    try:
        parse(name)
    except InvalidReference as e:
        return e.reason
    return None


def check_image_name(name: str) -> str:
    """`name`, if it can name a stored image (`image_name_problem`); else InvalidArgument naming it."""
    problem = image_name_problem(name)
    if problem is not None:
        raise InvalidArgument(f"image name {short_quote(name)}: {problem}")
    return name


_DOMAIN_RE = re.compile(_DOMAIN, re.ASCII)


def check_domain(domain: str) -> str:
    """`domain` if it can be a registry's host[:port] as a reference names it; else InvalidArgument.

    What a caller names a registry by outside a reference (a login's server) must be a name the
    reference grammar allows too, with DNS's label limit and a real port: it becomes a URL, an
    IDNA name and a directory under certs.d/ (where `..` or 4 000 characters have no business)."""
    host, _, port = domain.rpartition(":") if not domain.endswith("]") else (domain, "", "")
    if not host or "]" in port:
        host, port = domain, ""
    bad = (len(domain) > NAME_TOTAL_LENGTH_MAX or not _DOMAIN_RE.fullmatch(domain)
           or (port != "" and not 0 < int(port) < 65536)
           or (not host.startswith("[") and any(len(label) > 63 for label in host.split("."))))
    if bad:
        raise InvalidArgument(f"registry host {short_quote(domain)}: not a host[:port] name")
    return domain


def short_quote(s: str) -> str:
    """Go's %q of `s`, cut to a readable length (a message must not repeat a 100 KiB name)."""
    if len(s) <= _QUOTE_MAX:
        return go_quote(s)
    return f"{go_quote(s[:_QUOTE_MAX])}... ({len(s)} characters)"


def _split_docker_domain(s: str) -> tuple[str, str]:
    """(domain, remainder) by Docker's rule for which first component is a registry host."""
    first, slash, rest = s.partition("/")
    if not slash:
        domain, remainder = DEFAULT_DOMAIN, s
    elif first == "localhost" or any(c in first for c in ".:") or first.lower() != first:
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, s
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized(s: str) -> Reference:
    """Read a familiar or full reference as Docker does (`ParseNormalizedNamed`)."""
    if s == "":  # else it would read as "docker.io/library/" and get a vaguer message
        raise InvalidReference(s, "repository name must have at least one component")
    if _IDENTIFIER_RE.fullmatch(s):
        raise InvalidReference(s, "invalid repository name, cannot specify 64-byte hexadecimal strings")
    domain, remainder = _split_docker_domain(s)
    # The path ends at the tag's ":" (a ":" before any "/" was taken as the domain's port).
    path = remainder.split(":", 1)[0].split("@", 1)[0]
    if path.lower() != path:
        raise InvalidReference(s, f"invalid reference format: repository name ({path}) must be lowercase")
    try:
        return parse(f"{domain}/{remainder}")
    except InvalidReference as e:
        raise InvalidReference(s, e.reason) from None


def normalize_reference(s: str) -> Reference:
    """`parse_normalized`, then Docker's storage form (`ParseDockerRef`): `latest` when
    untagged and undigested; only the digest when there are both."""
    ref = parse_normalized(s)
    if ref.digest:
        return Reference(ref.domain, ref.path, "", ref.digest)
    if not ref.tag:
        return Reference(ref.domain, ref.path, DEFAULT_TAG)
    return ref


def normalize(s: str) -> str:
    """The full name an image `s` is stored under: `busybox` → `docker.io/library/busybox:latest`."""
    return str(normalize_reference(s))


def familiar(ref: Reference) -> str:
    """The short form people type: docker.io and `library/` dropped (`FamiliarString`)."""
    path = ref.path
    domain = ref.domain
    if domain == DEFAULT_DOMAIN:
        domain = ""
        first, _, rest = path.partition("/")
        if first + "/" == OFFICIAL_REPO_PREFIX and rest and "/" not in rest:
            path = rest
    return str(Reference(domain, path, ref.tag, ref.digest))


def _diagnose(s: str) -> str:
    """Which part of a reference the grammar refused, for a clearer message than Docker's."""
    base = "invalid reference format"
    rest, at, digest = s.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        return f"{base}: invalid digest {go_quote(digest)}"
    # A tag follows the last ":" that has no "/" after it (an earlier ":" is a port).
    colon = rest.rfind(":")
    name, tag = rest, None
    if colon > rest.rfind("/"):
        name, tag = rest[:colon], rest[colon + 1:]
    if tag is not None and not _TAG_RE.fullmatch(tag):
        if len(tag) > TAG_LENGTH_MAX and _TAG_RE.fullmatch(tag[:TAG_LENGTH_MAX]):
            return f"{base}: tag must not be more than {TAG_LENGTH_MAX} characters"
        return f"{base}: invalid tag {go_quote(tag)}"
    if not _NAME_RE.fullmatch(name):
        if name == "" or name.endswith("/"):
            return f"{base}: repository name must have at least one component"
        return f"{base}: invalid repository name {go_quote(name)}"
    return base


__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "REFERENCE_LENGTH_MAX",
    "InvalidReference",
    "Reference",
    "check_domain",
    "check_image_name",
    "digest_problem",
    "familiar",
    "image_name_problem",
    "normalize",
    "normalize_reference",
    "parse",
    "parse_normalized",
    "short_quote",
]


# The repository of images a build made without a name: image records need one (Docker's containerd
# store writes `moby-dangling@<digest>`); `dock image prune` takes these.
DANGLING_REPOSITORY = "dockyard-dangling"


def dangling_name(digest: str) -> str:
    return f"{DANGLING_REPOSITORY}@{digest}"


def is_dangling(name: str) -> bool:
    return name.startswith(f"{DANGLING_REPOSITORY}@")
