"""dock/formatting.py: Docker's table templates (header row, Go's tabwriter) and --format checks."""

from __future__ import annotations

import argparse

import pytest

from dock.formatting import FormatError, check_format, docker_size, header_name, render_rows, tabwrite
from dock.gotemplate import TemplateError


def test_tabwrite_as_go_with_dockers_settings() -> None:
    assert tabwrite("CONTAINER ID\tNAMES\nabc\tweb\n") == "CONTAINER ID   NAMES\nabc            web\n"
    assert tabwrite("a\tb\n") == "a         b\n"  # at least 10 wide
    # column blocks: a line with fewer cells ends the block of the columns it lacks
    assert tabwrite("a\tb\tc\nxx\ty\nlonger-cell\tz\tw\n") == \
        "a             b         c\nxx            y\nlonger-cell   z         w\n"
    assert tabwrite("é\tx\n") == "é         x\n"  # characters, not bytes


def test_render_rows_table_and_plain() -> None:
    rows = [{"ID": "abc", "Names": "web"}, {"ID": "def", "Names": "db"}]
    headers = {"ID": "CONTAINER ID", "Names": "NAMES"}
    assert render_rows(r"{{.ID}}\t{{.Names}}", rows, headers) == "abc\tweb\ndef\tdb\n"
    assert render_rows(r"table {{.ID}}\t{{upper .Names}}", rows, headers) == \
        "CONTAINER ID   NAMES\nabc            WEB\ndef            DB\n"
    assert render_rows("table {{.RunningFor}}", [], headers) == "RUNNING FOR\n"  # a header with no rows
    assert render_rows('table {{.Label "x"}}', [{"Label": lambda k: k}], {}) == "LABEL\nx\n"


def test_check_format() -> None:
    def ns(fmt: str, templates: bool = True) -> argparse.Namespace:
        return argparse.Namespace(format=fmt, templates=templates)

    for fmt in ("table", "json", "{{.ID}}", "table {{.ID}}"):
        check_format(ns(fmt))
    with pytest.raises(FormatError, match="takes --format table or json"):
        check_format(ns("{{.ID}}", templates=False))
    with pytest.raises(FormatError, match="want table, json, or a Go template"):
        check_format(ns("yaml"))
    with pytest.raises(TemplateError, match="unclosed action"):
        check_format(ns("{{.ID"))
    check_format(ns("json", templates=False))


def test_names_and_sizes() -> None:
    assert header_name("RunningFor") == "RUNNING FOR" and header_name("ID") == "ID"
    assert [docker_size(n) for n in (0, 999, 1000, 4_270_000, 1_500_000_000)] == \
        ["0B", "999B", "1kB", "4.27MB", "1.5GB"]


def _parsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [p]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                out.extend(_parsers(sub))
    return out


def test_no_command_reuses_the_global_format_for_something_else() -> None:
    """`--format` is table, json or a template everywhere: an option of a command that stores
    elsewhere into `format` (export's --oci did: "docker") made check_format refuse the command."""
    from dock.parser import build_parser

    for p in _parsers(build_parser(None)):
        for action in p._actions:
            if action.dest == "format":
                assert action.option_strings and "--format" in action.option_strings, (p.prog, action)
                assert action.default in ("table", argparse.SUPPRESS), (p.prog, action.default)
    args = build_parser(None).parse_args(["images", "export", "out.tar", "busybox"])
    check_format(args)
    assert args.format == "table" and args.archive_format == "docker"
