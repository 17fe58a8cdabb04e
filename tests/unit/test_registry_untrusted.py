"""The registry client's rules for what a registry sends (the pure parts; the daemon-level
attacks are tests/integration/test_registry_hostile.py): where its URLs may lead, how its
words appear in messages, how slowly a body may come, which documents are JSON we can read."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from dockyard_common.errors import FailedPrecondition, InvalidArgument, Unavailable
from supervisor.remote.client import SlowBody, follow, read_limited
from supervisor.remote.resolver import checked_json, digest_of
from supervisor.remote.untrusted import shown

HTTPS = "https://registry.example/v2/a/manifests/1"


@pytest.mark.parametrize("location,expected", [
    ("/v2/a/blobs/x", "https://registry.example/v2/a/blobs/x"),
    ("https://cdn.example:8443/b?sig=1", "https://cdn.example:8443/b?sig=1"),
    ("//cdn.example/b", "https://cdn.example/b"),
])
def test_follow_goes_where_it_may(location: str, expected: str) -> None:
    assert follow(HTTPS, location, "w", "r") == expected


def test_follow_may_go_up_from_http_but_never_down_from_https() -> None:
    assert follow("http://r:5000/v2/", "https://cdn/b", "w", "r") == "https://cdn/b"
    assert follow("http://r:5000/v2/", "http://cdn/b", "w", "r") == "http://cdn/b"
    with pytest.raises(FailedPrecondition, match="led from https to plain http"):
        follow(HTTPS, "http://registry.example/v2/a/manifests/1", "w", "r")


@pytest.mark.parametrize("location,words", [
    ("file:///etc/passwd", "not an absolute http"),
    ("unix:/run/x.sock", "not an absolute http"),
    ("javascript:alert(1)", "not an absolute http"),
    ("http://[::1", "not valid"),
    ("https://h:99999/x", "not valid"),
    ("https://h:-1/x", "not valid"),
    ("https://user:pw@h/x", "credentials in it"),
    ("https://user@h/x", "credentials in it"),
])
def test_follow_refuses_urls_we_cannot_use(location: str, words: str) -> None:
    with pytest.raises(Unavailable, match=words):
        follow(HTTPS, location, "w", "r")


def test_shown_escapes_control_characters_and_bounds_length() -> None:
    assert shown("plain words, é and ü") == "plain words, é and ü"
    assert shown("a\x1b[2Jb\x07\n") == "a\\x1b[2Jb\\a\\n"
    assert shown("x" * 500, 10) == "x" * 10 + "..."
    assert "\x1b" not in shown("\x1b" * 500)


class _Body:
    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self.content = self
        self._chunks = chunks

    async def read(self, n: int) -> bytes:
        try:
            return (await self._chunks.__anext__())[:n]  # (the rest of a chunk is dropped: enough here)
        except StopAsyncIteration:
            return b""


async def _chunks(*parts: bytes, pause: float = 0.0, forever: bytes = b"") -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    while forever:
        await asyncio.sleep(pause)
        yield forever


async def test_read_limited_reads_whole_bodies_and_caps_long_ones() -> None:
    assert await read_limited(_Body(_chunks(b"ab", b"cd")), 10) == b"abcd"  # type: ignore[arg-type]
    assert len(await read_limited(_Body(_chunks(forever=b"x" * 4096)), 10_000)) == 10_001  # type: ignore[arg-type]


async def test_read_limited_ends_a_trickle_once_its_grace_is_over() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(SlowBody, match=r"w: the registry sent only \d+ bytes"):
        await read_limited(_Body(_chunks(forever=b"x", pause=0.05)), 1 << 20, "w", grace=0.3)  # type: ignore[arg-type]
    assert loop.time() - started < 5


async def test_read_limited_leaves_silence_to_the_read_timeout() -> None:
    async def silent() -> AsyncIterator[bytes]:
        yield b"x"
        raise TimeoutError  # what aiohttp raises when `read` seconds pass without a byte

    with pytest.raises(TimeoutError) as caught:
        await read_limited(_Body(silent()), 100, "w", grace=30)  # type: ignore[arg-type]
    assert not isinstance(caught.value, SlowBody)


@pytest.mark.parametrize("data,words", [
    (b'{"n": 1' + b"0" * 5000 + b"}", r"\(5001 digits\) is out of range"),
    (b'{"n": 1e999}', "1e999 is out of range"),
    (b'{"n": NaN}', "NaN is not a JSON value"),
    (b'{"a": "\xff"}', "not UTF-8"),
    (b"[" * 100_000, "nested too deeply"),
    (b"{'a': 1}", "not valid JSON"),
])
def test_checked_json_refuses_what_go_refuses(data: bytes, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        checked_json(data, "the document")


def test_checked_json_reads_what_go_reads() -> None:
    data = b'{"a": 1, "a": 2, "b": 1e308, "c": "\\udcff"}'  # duplicates, a float64, a lone surrogate
    assert checked_json(data, "d") is data


def test_digest_of_uses_the_algorithm_it_is_compared_with() -> None:
    data = b"manifest"
    assert digest_of(data, "sha512:" + "0" * 128) == "sha512:" + hashlib.sha512(data).hexdigest()
    assert digest_of(data, "sha384:" + "0" * 96) == "sha384:" + hashlib.sha384(data).hexdigest()
    assert digest_of(data, "sha256:" + "0" * 64) == "sha256:" + hashlib.sha256(data).hexdigest()
