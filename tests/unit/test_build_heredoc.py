"""The command of a RUN with heredocs (supervisor/build/heredoc.py), from parsed Dockerfiles."""

from __future__ import annotations

import pytest

from dockyard_common.errors import InvalidArgument
from supervisor.build.dockerfile import parse_dockerfile
from supervisor.build.heredoc import Script, run_argv

SHELL = ["/bin/sh", "-c"]


def _argv(text: str) -> tuple[list[str], Script | None]:
    return run_argv(SHELL, parse_dockerfile("FROM a\n" + text).instructions[1])


def test_only_a_heredoc_runs_its_text_in_the_shell() -> None:
    assert _argv("RUN <<EOF\necho $A\necho b\nEOF\n") == ([*SHELL, "echo $A\necho b\n"], None)
    assert _argv("RUN <<'EOF'\necho $A\nEOF\n") == ([*SHELL, "echo $A\n"], None)  # the shell expands
    assert _argv("RUN <<-EOF\n\techo tab\n\tEOF\n") == ([*SHELL, "echo tab\n"], None)
    assert _argv("RUN <<EMPTY\nEMPTY\n") == ([*SHELL, ""], None)


def test_a_shebang_heredoc_is_a_script_file() -> None:
    argv, script = _argv("RUN <<RUNME\n#!/usr/bin/env python3\nprint(1)\nRUNME\n")
    assert argv == ["/dev/pipes/RUNME"] and script == Script("RUNME", "#!/usr/bin/env python3\nprint(1)\n")


def test_anything_else_goes_to_the_shell_whole() -> None:
    assert _argv("RUN <<EOF bash\necho $A\nEOF\n") == ([*SHELL, "<<EOF bash\necho $A\nEOF"], None)
    assert _argv('RUN python3 <<"EOT"\nprint(1)\nEOT\n') == ([*SHELL, 'python3 <<"EOT"\nprint(1)\nEOT'], None)
    argv, _ = _argv("RUN cat <<A >/a && cat <<-B >/b\none\nA\n\ttwo\n\tB\n")
    assert argv == [*SHELL, "cat <<A >/a && cat <<-B >/b\none\nA\ntwo\nB"]


def test_exec_form_takes_no_heredoc() -> None:
    ins = parse_dockerfile("FROM a\nRUN <<EOF\necho\nEOF\n").instructions[1]
    bad = type(ins)(ins.name, ins.args, ins.line, ins.end_line, True, ins.flags, ins.original, ins.heredocs)
    with pytest.raises(InvalidArgument, match="Dockerfile:2: RUN: heredocs are only allowed in the shell form"):
        run_argv(SHELL, bad)
