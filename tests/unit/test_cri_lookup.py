"""Pods and containers by id or a unique prefix of it (supervisor/cri/lookup.py)."""

from __future__ import annotations

import pytest

from dockyard_common.errors import InvalidArgument, NotFound
from supervisor.cri.lookup import by_id_prefix

IDS = ["abc123", "abd456", "abc"]


def find(prefix: str) -> str:
    return by_id_prefix(IDS, lambda i: i, prefix, "container", "containers")


def test_exact_id_wins_over_longer_ones_it_begins() -> None:
    assert find("abc") == "abc"  # "abc123" starts with it too


def test_a_unique_prefix_finds_its_one() -> None:
    assert find("abd") == "abd456"
    assert find("abc1") == "abc123"


@pytest.mark.parametrize(("prefix", "error", "words"), [
    ("", InvalidArgument, "container id must not be empty"),
    ("ab", InvalidArgument, "container id prefix 'ab' is ambiguous: 3 containers match"),
    ("x", NotFound, "container 'x'"),
])
def test_what_cannot_be_found_says_why(prefix: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        find(prefix)
