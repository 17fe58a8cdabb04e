"""What the compat tests share: the real `ctr` (tests/ctr.py, re-exported), and the checks that skip them."""

from __future__ import annotations

import os

import pytest

from tests.ctr import CTR, ctr, ok

__all__ = ["CTR", "ctr", "ok"]  # tests import them from here too


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Compat tests marked `root` run containers or mount: without root they are skipped."""
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here) and item.get_closest_marker("root") and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="needs root"))
