"""dock's command table: the lazily imported groups register exactly what COMMANDS says."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

from dock.parser import COMMANDS, GROUPS, build_parser

REPO = Path(__file__).resolve().parents[2]


def test_commands_table_matches_what_groups_register() -> None:
    registered: dict[str, str] = {}
    for group in GROUPS:
        sub = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(f"dock.commands.{group}").register(sub)
        for name in sub.choices:
            registered[name] = group
    assert registered == COMMANDS


def test_a_command_imports_only_its_group() -> None:
    code = ("import sys; from dock.parser import build_parser; "
            "build_parser(['-n', 'x', '--format', 'json', 'pull', 'busybox']); "
            "print(sorted(m for m in sys.modules if m.startswith('dock.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['dock.commands.registry']"


def test_help_and_unknown_commands_see_every_group() -> None:
    for argv in ([], ["--help"], ["nonsense"], ["--format"]):
        choices = build_parser(argv)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert set(choices or ()) == set(COMMANDS), argv
