"""ReadAhead: order, end of stream, errors raised where they are read, and a clean stop."""

from __future__ import annotations

import io
import threading

import pytest

from supervisor.archive.readahead import ReadAhead


def test_chunks_arrive_in_order_and_end_with_empty() -> None:
    data = bytes(range(256)) * 1000
    with ReadAhead(io.BytesIO(data).read, chunk=1000, depth=2) as ahead:
        got = b"".join(iter(ahead.read, b""))
        assert ahead.read() == b""  # and stays at the end
    assert got == data


def test_an_error_of_the_source_is_raised_after_what_came_before() -> None:
    pieces = [b"a", b"b"]

    def read(n: int) -> bytes:
        if pieces:
            return pieces.pop(0)
        raise ValueError("corrupt")

    with ReadAhead(read) as ahead:
        assert ahead.read() == b"a"
        assert ahead.read() == b"b"
        with pytest.raises(ValueError, match="corrupt"):
            ahead.read()
        assert ahead.read() == b""


def test_leaving_early_stops_the_producer() -> None:
    calls = 0
    after_exit = threading.Event()

    def endless(n: int) -> bytes:
        nonlocal calls
        calls += 1
        if after_exit.is_set():
            raise AssertionError("read after the block was left")
        return b"x" * n

    with ReadAhead(endless, chunk=10, depth=2) as ahead:
        assert ahead.read() == b"x" * 10
    after_exit.set()
    assert not any(t.name == "layer-read-ahead" and t.is_alive() for t in threading.enumerate())


def test_finish_reads_to_the_end() -> None:
    src = io.BytesIO(b"y" * 5000)
    with ReadAhead(src.read, chunk=100) as ahead:
        assert ahead.read() == b"y" * 100
        ahead.finish()
    assert src.tell() == 5000
