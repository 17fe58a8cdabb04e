"""Image references, table-driven, with the tricky cases of Docker's own reference tests."""

from __future__ import annotations

import time

import pytest

from dockyard_common.errors import InvalidArgument
from dockyard_common.reference import (
    InvalidReference,
    Reference,
    digest_problem,
    familiar,
    normalize,
    parse,
    parse_normalized,
)

D256 = "sha256:" + "f" * 64
D512 = "sha512:" + "f" * 128
HEX64 = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a"

# input → (domain, path, tag, digest), by the grammar alone
PARSE_VALID = [
    ("test_com", ("", "test_com", "", "")),
    ("test.com:tag", ("", "test.com", "tag", "")),
    ("test.com:5000", ("", "test.com", "5000", "")),  # no "/": the ":" starts a tag
    ("test.com/repo:tag", ("test.com", "repo", "tag", "")),
    ("test:5000/repo", ("test:5000", "repo", "", "")),
    ("test:5000/repo:tag", ("test:5000", "repo", "tag", "")),
    (f"test:5000/repo@{D256}", ("test:5000", "repo", "", D256)),
    (f"test:5000/repo:tag@{D256}", ("test:5000", "repo", "tag", D256)),
    (f"repo@{D256}", ("", "repo", "", D256)),
    ("lowercase:Uppercase", ("", "lowercase", "Uppercase", "")),
    ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", ("sub-dom1.foo.com", "bar/baz/quux", "some-long-tag", "")),
    ("b.gcr.io/test.example.com/my-app:test.example.com",
     ("b.gcr.io", "test.example.com/my-app", "test.example.com", "")),
    ("xn--n3h.com/myimage:xn--n3h.com", ("xn--n3h.com", "myimage", "xn--n3h.com", "")),
    (f"xn--7o8h.com/myimage:xn--7o8h.com@{D512}", ("xn--7o8h.com", "myimage", "xn--7o8h.com", D512)),
    ("foo_bar.com:8080", ("", "foo_bar.com", "8080", "")),
    ("foo/foo_bar.com:8080", ("foo", "foo_bar.com", "8080", "")),
    ("[2001:db8::1]:5000/repo", ("[2001:db8::1]:5000", "repo", "", "")),
    ("[2001:db8::1]/repo:tag", ("[2001:db8::1]", "repo", "tag", "")),
    ("foo__bar", ("", "foo__bar", "", "")),
    ("foo---bar", ("", "foo---bar", "", "")),
    (HEX64, ("", HEX64, "", "")),  # only the normalized reading refuses a bare ID
    ("a/" * 127 + "a:tag-puts-this-over-max", ("a", "a/" * 126 + "a", "tag-puts-this-over-max", "")),
    ("repo:" + "t" * 128, ("", "repo", "t" * 128, "")),
]

# input → the reason Docker gives (what follows `reference "<input>": `)
PARSE_INVALID = [
    ("", "repository name must have at least one component"),
    (":justtag", "invalid reference format: repository name must have at least one component"),
    (f"@{D256}", "invalid reference format: repository name must have at least one component"),
    (f"validname@invaliddigest:{'f' * 64}", "unsupported digest algorithm"),
    ("Uppercase:tag", "repository name must be lowercase"),
    ("test:5000/Uppercase/lowercase:tag", "repository name must be lowercase"),
    ("a/" * 128 + "a:tag", "repository name must not be more than 255 characters"),
    ("aa/asdf$$^/aa", 'invalid reference format: invalid repository name "aa/asdf$$^/aa"'),
    ("[fe80::1%eth0]:5000/repo", 'invalid reference format: invalid repository name "[fe80::1%eth0]:5000/repo"'),
    ("[2001:db8:1:2:3:4:5:6]", 'invalid reference format: invalid tag "6]"'),
    ("foo___bar", 'invalid reference format: invalid repository name "foo___bar"'),
    ("foo.-bar", 'invalid reference format: invalid repository name "foo.-bar"'),
    ("-foo", 'invalid reference format: invalid repository name "-foo"'),
    ("foo//bar", 'invalid reference format: invalid repository name "foo//bar"'),
    ("foo/", "invalid reference format: repository name must have at least one component"),
    ("busybox:", 'invalid reference format: invalid tag ""'),
    ("busybox:-tag", 'invalid reference format: invalid tag "-tag"'),
    ("repo:" + "t" * 129, "invalid reference format: tag must not be more than 128 characters"),
    ("repo@sha256:abc", 'invalid reference format: invalid digest "sha256:abc"'),
    ("repo@sha256:" + "f" * 63, "invalid checksum digest length"),
    ("repo@sha256:" + "F" * 64, "invalid checksum digest format"),
    ("repo@md5:" + "f" * 32, "unsupported digest algorithm"),
    ("https://github.com/docker/docker",
     'invalid reference format: invalid repository name "https://github.com/docker/docker"'),
    ("foo bar", 'invalid reference format: invalid repository name "foo bar"'),
    ("foo\n", 'invalid reference format: invalid repository name "foo\\n"'),
]

# input → normalize(input): what an image is stored under
NORMALIZE = [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/debian", "docker.io/library/debian:latest"),
    ("docker/docker", "docker.io/docker/docker:latest"),
    ("docker.io/debian", "docker.io/library/debian:latest"),
    ("docker.io/library/debian", "docker.io/library/debian:latest"),
    ("index.docker.io/debian", "docker.io/library/debian:latest"),
    ("index.docker.io/docker/docker", "docker.io/docker/docker:latest"),
    ("localhost/foo", "localhost/foo:latest"),  # localhost is a domain, and gets no library/
    ("localhost/library/debian", "localhost/library/debian:latest"),
    ("localhost", "docker.io/library/localhost:latest"),  # no "/": a Docker Hub name
    ("localhost:5000", "docker.io/library/localhost:5000"),  # ... and ":5000" is its tag
    ("foo:5000/bar", "foo:5000/bar:latest"),
    ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian:latest"),
    ("127.0.0.1:5001/tap/busybox:copy", "127.0.0.1:5001/tap/busybox:copy"),
    ("192.168.0.1", "docker.io/library/192.168.0.1:latest"),
    ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
    ("example.com/a/b/c:tag", "example.com/a/b/c:tag"),
    ("Example.com/foo", "Example.com/foo:latest"),  # uppercase is allowed in a domain
    ("Foo/bar", "Foo/bar:latest"),  # an uppercase first component can only be a domain
    ("[::1]:5000/foo", "[::1]:5000/foo:latest"),
    (f"docker.io/{HEX64}", f"docker.io/library/{HEX64}:latest"),
    (f"busybox@{D256}", f"docker.io/library/busybox@{D256}"),
    # tag and digest: the digest names the content, so only it is kept
    (f"a/b/c:tag@{D256}", f"docker.io/a/b/c@{D256}"),
    (f"localhost:5000/x:1@{D256}", f"localhost:5000/x@{D256}"),
]

NORMALIZE_INVALID = [
    ("", "repository name must have at least one component"),
    ("Busybox", "invalid reference format: repository name (library/Busybox) must be lowercase"),
    ("docker/Docker", "invalid reference format: repository name (docker/Docker) must be lowercase"),
    ("docker.io/docker/Docker:tag", "invalid reference format: repository name (docker/Docker) must be lowercase"),
    ("localhost:5000/Foo", "invalid reference format: repository name (Foo) must be lowercase"),
    (HEX64, "invalid repository name, cannot specify 64-byte hexadecimal strings"),
    ("-docker", 'invalid reference format: invalid repository name "docker.io/library/-docker"'),
    ("docker///docker", 'invalid reference format: invalid repository name "docker.io/docker///docker"'),
    ("busybox:" + "x" * 129, "invalid reference format: tag must not be more than 128 characters"),
    ("busybox@sha256:1234", 'invalid reference format: invalid digest "sha256:1234"'),
]


@pytest.mark.parametrize(("text", "want"), PARSE_VALID, ids=[t[:40] for t, _ in PARSE_VALID])
def test_parse_valid(text: str, want: tuple[str, str, str, str]) -> None:
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == want
    assert str(ref) == text


@pytest.mark.parametrize(("text", "reason"), PARSE_INVALID, ids=[t[:40] for t, _ in PARSE_INVALID])
def test_parse_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(text)
    assert info.value.reason == reason
    assert info.value.text == text


@pytest.mark.parametrize(("text", "want"), NORMALIZE, ids=[t[:40] for t, _ in NORMALIZE])
def test_normalize(text: str, want: str) -> None:
    assert normalize(text) == want
    assert normalize(want) == want  # normal forms are fixed points


@pytest.mark.parametrize(("text", "reason"), NORMALIZE_INVALID, ids=[t[:40] for t, _ in NORMALIZE_INVALID])
def test_normalize_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as info:
        normalize(text)
    assert info.value.reason == reason


def test_parse_normalized_keeps_tag_and_digest() -> None:
    ref = parse_normalized(f"a/b/c:tag@{D256}")
    assert ref == Reference("docker.io", "a/b/c", "tag", D256)
    assert parse_normalized("busybox") == Reference("docker.io", "library/busybox")


@pytest.mark.parametrize(("text", "want"), [
    ("docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/library/busybox", "busybox"),
    ("docker.io/dmcgowan/myapp:1", "dmcgowan/myapp:1"),
    ("docker.io/library/a/b", "library/a/b"),
    ("localhost/foo:latest", "localhost/foo:latest"),
    (f"docker.io/library/busybox@{D256}", f"busybox@{D256}"),
])
def test_familiar(text: str, want: str) -> None:
    assert familiar(parse_normalized(text)) == want


def test_error_is_invalid_argument_with_the_input_quoted() -> None:
    with pytest.raises(InvalidArgument) as info:
        normalize("Busybox")
    assert str(info.value) == ('reference "Busybox": invalid reference format: repository name '
                               "(library/Busybox) must be lowercase: invalid argument")


@pytest.mark.parametrize(("digest", "problem"), [
    (D256, None),
    ("sha384:" + "0" * 96, None),
    (D512, None),
    ("", "invalid checksum digest format"),
    ("sha256", "invalid checksum digest format"),
    ("sha256:", "invalid checksum digest format"),
    (":" + "f" * 64, "invalid checksum digest format"),
    ("sha256:" + "f" * 65, "invalid checksum digest length"),
    ("sha256:" + "g" * 64, "invalid checksum digest format"),
    ("md5:abcd", "unsupported digest algorithm"),
    ("MD5:abcd", "invalid checksum digest format"),
])
def test_digest_problem(digest: str, problem: str | None) -> None:
    assert digest_problem(digest) == problem


@pytest.mark.parametrize("text", [
    "a" * 100_000 + "!",
    "a-" * 50_000 + "!",
    "a_" * 50_000 + "!",
    "a." * 50_000 + "/!",
    "a" * 100_000 + ":" + "b" * 100_000 + "$",
])
def test_long_hostile_input_fails_fast(text: str) -> None:
    start = time.monotonic()
    with pytest.raises(InvalidReference):
        normalize(text)
    assert time.monotonic() - start < 1.0
