"""The hygiene gate runs with the tests, so CI refuses lint and type errors too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_is_clean() -> None:
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_is_clean() -> None:
    res = subprocess.run([sys.executable, "-m", "mypy", "."], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_layers_hold() -> None:
    # import-linter's contracts in pyproject.toml: the three programs meet only in
    # dockyard_common, the domain speaks no daemon-API protobuf and never reaches up.
    res = subprocess.run(["lint-imports"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
