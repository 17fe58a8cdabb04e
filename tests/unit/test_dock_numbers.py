"""Numbers on dock's command line stay within what the wire and the kernel take: argparse types
(dock/args.py), sizes, CPUs and times."""

from __future__ import annotations

import argparse

import pytest

from dock.args import INT64_MAX, int_in, positive_float
from dock.commands.logs import MAX_TIME_NS, _tail, parse_time
from dock.oci import MAX_BYTES, parse_bytes, with_cpus, with_memory_limit, with_pids_limit
from dockyard_common.errors import InvalidArgument
from dockyard_common.ocispec import default_spec


def test_int_in() -> None:
    parse = int_in(-1, 10)
    assert parse("-1") == -1 and parse("10") == 10
    for bad in ("11", "-2", "x", "1.5", "", "99999999999999999999999"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
    assert int_in(0)(str(INT64_MAX)) == INT64_MAX
    with pytest.raises(argparse.ArgumentTypeError):
        int_in(0)(str(INT64_MAX + 1))


def test_positive_float() -> None:
    assert positive_float("0.5") == 0.5
    for bad in ("0", "-1", "nan", "inf", "-inf", "1e400", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_float(bad)


def test_sizes_and_resources() -> None:
    assert parse_bytes("7t") == 7 << 40
    for bad in ("99999999t", "8e", "1e30"):
        with pytest.raises(InvalidArgument):
            parse_bytes(bad)
    assert parse_bytes(str(MAX_BYTES)) == MAX_BYTES
    spec = default_spec("n", "c")
    with pytest.raises(InvalidArgument, match="minimum"):
        with_memory_limit(spec, (6 << 20) - 1)
    with_memory_limit(spec, 6 << 20)
    for cpus in (float("nan"), float("inf"), 1e308, 0.0, -1.0):
        with pytest.raises(InvalidArgument):
            with_cpus(spec, cpus)
    with pytest.raises(InvalidArgument):
        with_pids_limit(spec, MAX_BYTES + 1)


def test_times_and_tail() -> None:
    assert parse_time("0") == 0
    assert parse_time("99999999999h", now_ns=10**18) == 0  # before 1970: from the start
    with pytest.raises(InvalidArgument, match="9999"):
        parse_time("99999999999999999999")
    assert parse_time("253402300799") == MAX_TIME_NS
    assert _tail("5") == 5 and _tail("all") is None
    assert _tail("99999999999999999999999") is None  # more lines than any log holds: all of them
