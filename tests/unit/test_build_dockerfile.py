"""Parsing a Dockerfile into checked instructions (supervisor/build/dockerfile.py)."""

from __future__ import annotations

import pytest

from dockyard_common.errors import InvalidArgument
from supervisor.build.dockerfile import DockerfileError, parse_dockerfile, parse_triggers


def _one(text: str, index: int = 1):
    return parse_dockerfile(text).instructions[index]


def test_forms_flags_and_lines() -> None:
    df = parse_dockerfile(
        "# syntax=docker/dockerfile:1\n"
        "FROM --platform=linux/amd64 busybox AS build\n"
        "\n"
        "# a comment\n"
        "COPY --from=build --chown=1:2 --chmod=755 a b /dst/\n"
        'CMD ["echo", "hi"]\n'
        "run echo \\\n  continued\n"
    )
    assert df.directives == {"syntax": "docker/dockerfile:1"}
    frm, copy, cmd, run = df.instructions
    assert (frm.name, frm.args, frm.flags["platform"], frm.line) == ("FROM", ("busybox", "AS", "build"), "linux/amd64",
                                                                     2)
    assert copy.args == ("a", "b", "/dst/") and copy.line == 5
    assert dict(copy.flags) == {"from": "build", "chown": "1:2", "chmod": "755"}
    assert cmd.json and cmd.args == ("echo", "hi")
    assert run.name == "RUN" and not run.json and run.args == ("echo   continued",)
    assert (run.line, run.end_line) == (7, 8)


def test_escape_directive_backtick() -> None:
    df = parse_dockerfile("# escape=`\nFROM a\nRUN echo `\n  hi\nCOPY c:\\src d\n")
    assert df.escape == "`"
    assert df.instructions[1].args == ("echo   hi",)
    assert df.instructions[2].args == ("c:\\src", "d")


def test_directive_only_at_the_top() -> None:
    df = parse_dockerfile("\n# escape=`\nFROM a\n")
    assert df.escape == "\\"


def test_bad_escape_directive() -> None:
    with pytest.raises(DockerfileError, match="invalid escape token"):
        parse_dockerfile("# escape=x\nFROM a\n")


def test_heredoc() -> None:
    ins = _one("FROM a\nCOPY <<EOF /x\nhello $A\nEOF\n")
    assert ins.args == ("<<EOF", "/x")
    assert ins.heredocs[0].name == "EOF" and ins.heredocs[0].content == "hello $A\n" and ins.heredocs[0].expand
    quoted = _one("FROM a\nRUN <<'EOF'\n$x\nEOF\n")
    assert not quoted.heredocs[0].expand


def test_unknown_instruction_names_the_line() -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:3: unknown instruction: FOO"):
        parse_dockerfile("FROM a\nRUN x\nFOO bar\n")


def test_parse_error_names_the_line() -> None:
    with pytest.raises(DockerfileError) as err:
        parse_dockerfile("FROM a\nRUN x\nENV ONLYKEY\n")
    assert err.value.line == 3
    assert "ENV must have two arguments" in str(err.value)
    assert isinstance(err.value, InvalidArgument)


def test_empty_file() -> None:
    with pytest.raises(DockerfileError, match="no instructions"):
        parse_dockerfile("# nothing\n")


@pytest.mark.parametrize(("text", "message"), [
    ("FROM a\nCOPY --nope=1 a b\n", "unknown flag: nope"),
    ("FROM a\nCOPY --from a b\n", "missing a value on flag: from"),
    ("FROM a\nCOPY --from=x --from=y a b\n", "duplicate flag specified: from"),
    ("FROM a\nCOPY --link=maybe a b\n", "expecting boolean value"),
    ("FROM a\nUSER --x=1 bob\n", "unknown flag: x"),
    ("FROM a b\n", "FROM requires either one or three arguments"),
    ("FROM a\nCOPY onlyone\n", "requires at least two arguments"),
    ("FROM a\nWORKDIR\n", "WORKDIR requires exactly one argument"),
    ("FROM a\nSHELL /bin/bash\n", "SHELL requires the arguments to be in JSON form"),
    ("FROM a\nEXPOSE\n", "EXPOSE requires at least one argument"),
    ("FROM a\nONBUILD FROM b\n", "FROM isn't allowed as an ONBUILD trigger"),
    ("FROM a\nONBUILD ONBUILD RUN x\n", "ONBUILD isn't allowed as an ONBUILD trigger"),
    ("FROM a\nARG =x\n", "ARG names can not be blank"),
])
def test_bad_instructions(text: str, message: str) -> None:
    with pytest.raises(DockerfileError, match=message) as err:
        parse_dockerfile(text)
    assert err.value.line == 2 or text.startswith("FROM a b")


def test_bool_and_repeated_flags() -> None:
    ins = _one("FROM a\nRUN --mount=type=cache,target=/c --mount=type=tmpfs,target=/t --network=none x\n")
    assert ins.flags["mount"] == ["type=cache,target=/c", "type=tmpfs,target=/t"]
    assert ins.flags["network"] == "none"
    assert _one("FROM a\nCOPY --link a b\n").flags["link"] is True
    assert _one("FROM a\nCOPY --link=false a b\n").flags["link"] is False


def test_onbuild_keeps_the_trigger_and_its_flags() -> None:
    ins = _one("FROM a\nONBUILD COPY --chown=1:2 --from=x a b\n")
    assert ins.args == ("COPY --chown=1:2 --from=x a b",)
    assert ins.trigger is not None and ins.trigger.name == "COPY"
    assert dict(ins.trigger.flags) == {"chown": "1:2", "from": "x"}


def test_parse_triggers() -> None:
    triggers = parse_triggers(["RUN echo hi", "COPY --chown=5 . /app"], line=7)
    assert [t.name for t in triggers] == ["RUN", "COPY"]
    assert all(t.line == 7 for t in triggers)
    assert triggers[1].flags["chown"] == "5"
    with pytest.raises(DockerfileError, match="MAINTAINER isn't allowed"):
        parse_triggers(["MAINTAINER x"], line=2)


def test_bytes_bom_crlf_and_bad_encoding() -> None:
    df = parse_dockerfile(b"\xef\xbb\xbfFROM a\r\nRUN x\r\n")
    assert [i.name for i in df.instructions] == ["FROM", "RUN"]
    with pytest.raises(DockerfileError, match="not UTF-8"):
        parse_dockerfile(b"FROM a\nRUN \xff\n")


def test_heredoc_chomp() -> None:
    ins = _one("FROM a\nCOPY <<-EOT /x\n\tindented\n\t\ttwice\nEOT\n")
    assert ins.heredocs[0].content == "indented\ntwice\n"


def test_bad_trigger_names_the_from_line() -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:9: ONBUILD trigger 'FOO x' of the base image: "
                                              r"unknown instruction: FOO"):
        parse_triggers(["FOO x"], line=9)


def test_at_instruction_keeps_the_kind_and_adds_the_line() -> None:
    from dockyard_common.errors import NotFound
    from supervisor.build.dockerfile import at_instruction

    ins = _one("FROM a\n\nCOPY x /y\n")
    with pytest.raises(NotFound, match=r"^Dockerfile:3: COPY 'x': no such file: not found$"):
        with at_instruction(ins):
            raise NotFound("COPY 'x': no such file")


def test_unterminated_heredoc_names_its_line() -> None:
    with pytest.raises(DockerfileError, match="unterminated heredoc") as err:
        parse_dockerfile("FROM a\nRUN echo\nRUN <<EOF\necho hi\n")
    assert err.value.line == 3
