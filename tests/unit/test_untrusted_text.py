"""Untrusted JSON read with one policy (`dockyard_common.jsonutil`, Go's encoding/json where
Python differs), image documents read through it (`imagespec.load_json`), and dock's edge: argv
that is not UTF-8 refused up front, every error line escaped as Go's %q escapes.

What broke before: an integer of 5 000 digits raised Python's own ValueError ("Exceeds the limit
(4300 digits)") out of `imagespec.load_json` (an Internal error at import); `1e999` became inf and
`NaN` a float, where Go refuses both; a `\\udcff` escape stayed a lone surrogate that every later
UTF-8 encode failed on ("codec can't encode ...: internal" at `dock run`); an Env of [{"a": 1}]
was "must be an array of strings, not an array"; a message with an ESC sequence reached the
terminal as it was.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import pytest

import dock.cli as cli
from dock.output import for_each
from dockyard_common.errors import InvalidArgument, NotFound
from dockyard_common.goquote import go_escape
from dockyard_common.imagespec import load_json, parse_config, parse_index, parse_manifest
from dockyard_common.jsonutil import MAX_DEPTH, JsonError, json_object, json_value

PYTHON_WORDS = ("Exceeds the limit", "set_int_max_str_digits", "codec", "surrogates not allowed", "recursion",
                "Traceback", "Error", "utf-8-sig")
ESC = "\x1b]0;owned\x07\x1b[2J"


def _refused(data: bytes | str, *words: str) -> str:
    with pytest.raises(JsonError) as info:
        json_value(data, "the thing")
    message = str(info.value)
    assert message.startswith("the thing is not valid JSON: "), message
    for w in words:
        assert w in message, message
    for w in PYTHON_WORDS:
        assert w not in message, message
    return message


# -- the policy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"NaN", b"[Infinity]", b'{"a": -Infinity}', "[1, NaN]"])
def test_nan_and_infinity_are_not_json(data: bytes | str) -> None:
    _refused(data, "is not a JSON value")


@pytest.mark.parametrize(("data", "words"), [
    (b"1e999", "1e999 is out of range"),
    (b"[-1e999]", "-1e999 is out of range"),
    (b'{"n": 1' + b"0" * 5000 + b"}", "(5001 digits) is out of range"),
    (b"-1" + b"0" * 5000, "(5001 digits) is out of range"),
    (b"1" + b"0" * 309, "(310 digits) is out of range"),
    (b"179769313486231581" + b"0" * 291, "is out of range"),  # 309 digits, past the largest float64
    (b"1.8e308", "is out of range"),
    (b"[" + b"9" * 400 + b".5]", "is out of range"),
], ids=["1e999", "-1e999", "5000-digits", "-5000-digits", "310-digits", "309-digits-past-max", "1.8e308",
        "400-digit-float"])
def test_numbers_past_a_float64_are_refused_in_words(data: bytes, words: str) -> None:
    message = _refused(data, words, "larger than a 64-bit float")
    assert len(message) < 200, message  # the number is cut, not quoted whole


def test_numbers_a_float64_holds_are_read() -> None:
    assert json_value(b"1.7976931348623157e308", "x") == 1.7976931348623157e308
    assert json_value(b"179769313486231570" + b"0" * 291, "x") == 179769313486231570 * 10 ** 291
    assert json_value(b"-1" + b"0" * 308, "x") == -(10 ** 308)
    assert json_value(b'["' + b"1" * 5000 + b'", 1e-999, 12, -0.5]', "x") == ["1" * 5000, 0.0, 12, -0.5]


@pytest.mark.parametrize(("data", "value"), [
    (b'"a\\udcffb"', "a\ufffdb"),
    (b'["\\ud800"]', ["\ufffd"]),
    (b'{"\\ud800k": {"v": ["x\\uDFFF", 1]}}', {"\ufffdk": {"v": ["x\ufffd", 1]}}),
    (b'"\\udc00\\ud800\\udc00"', "\ufffd\U00010000"),  # a low half alone, then a pair: as Go reads it
    (b'"\\ud800\\u0041"', "\ufffdA"),
    (b'"\\ud83d\\ude00"', "\U0001f600"),  # a valid pair stays itself
    ('{"Env": ["A=\udcff"]}', {"Env": ["A=\ufffd"]}),  # a str holding surrogateescape'd bytes
    (b'{"k\\udcff": 1, "k\\ufffd": 2}', {"k\ufffd": 2}),  # the later key wins, as in Go
])
def test_lone_surrogates_become_the_replacement_character(data: bytes | str, value: Any) -> None:
    got = json_value(data, "x")
    assert got == value
    json.dumps(got, ensure_ascii=False).encode()  # every later encode works


@pytest.mark.parametrize(("data", "words"), [
    (b'"\xed\xa0\x80"', "not UTF-8 text"),  # a surrogate encoded in UTF-8 bytes is not UTF-8
    (b'{"a": "\xff"}', "not UTF-8 text"),
    (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
    ("\ufeff{}", "byte order mark"),
    ('{"a": 1}'.encode("utf-16"), "not UTF-8 text"),  # Python's json.loads of bytes read UTF-16
])
def test_text_that_is_not_utf8_is_refused(data: bytes | str, words: str) -> None:
    _refused(data, words)


def test_nesting_past_the_limit_is_refused() -> None:
    assert json_value(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, "x") is not None
    assert json_object(b'{"a": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}", "x")
    for depth in (MAX_DEPTH + 1, 900, 100_000):
        _refused(b"[" * depth + b"]" * depth, f"nested too deeply (more than {MAX_DEPTH} levels")
        _refused(b'{"a": ' * depth + b"1" + b"}" * depth, "nested too deeply")
    many = json_value(json.dumps([{"a": [i]} for i in range(5000)]).encode(), "x")  # many, not deep
    assert len(many) == 5000


def test_the_callers_kind_is_raised() -> None:
    with pytest.raises(InvalidArgument, match="spec is not valid JSON: NaN"):
        json_object(b'{"a": NaN}', "spec", InvalidArgument)


# -- image documents -------------------------------------------------------------------------------------

CONFIG = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
          "config": {"Env": ["PATH=/bin"]}}
MANIFEST = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "a" * 64,
                       "size": 2}, "layers": []}
INDEX = {"schemaVersion": 2, "manifests": []}


def _with(doc: dict[str, Any], raw: bytes) -> bytes:
    """`doc` with one more field whose JSON text is `raw`, as written."""
    return json.dumps(doc).encode()[:-1] + b', "x": ' + raw + b"}"


@pytest.mark.parametrize(("raw", "words"), [
    (b"1" + b"0" * 5000, "(5001 digits) is out of range"),
    (b"1e999", "1e999 is out of range"),
    (b"NaN", "NaN is not a JSON value"),
    (b"-Infinity", "-Infinity is not a JSON value"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"[" * 300 + b"]" * 300, "nested too deeply"),
], ids=["5000-digits", "1e999", "NaN", "-Infinity", "5000-deep", "300-deep"])
@pytest.mark.parametrize("kind", ["config", "manifest", "index"])
def test_documents_python_cannot_take_are_invalid_arguments(kind: str, raw: bytes, words: str) -> None:
    parsers: dict[str, Callable[[bytes], object]] = {"config": parse_config, "manifest": parse_manifest,
                                                     "index": parse_index}
    docs: dict[str, dict[str, Any]] = {"config": CONFIG, "manifest": MANIFEST, "index": INDEX}
    parse, doc = parsers[kind], docs[kind]
    with pytest.raises(InvalidArgument) as info:
        parse(_with(doc, raw))
    message = info.value.message
    assert f"{kind if kind != 'config' else 'image config'} is not valid JSON: " in message and words in message
    assert not any(w in message for w in PYTHON_WORDS), message


def test_load_json_reads_surrogate_escapes_as_go_does() -> None:
    config = parse_config(json.dumps({**CONFIG, "config": {"Env": ["S=a\udcffb", "T=\ud800"],
                                                           "Labels": {"\udcff": "\ud800"}}}).encode())
    assert config.config["Env"] == ["S=a\ufffdb", "T=\ufffd"]
    assert config.config["Labels"] == {"\ufffd": "\ufffd"}
    json.dumps(config.raw, ensure_ascii=False).encode()
    assert load_json(b'{"a": 1}', "w") == {"a": 1}
    with pytest.raises(InvalidArgument, match="w is not valid JSON: not UTF-8 text"):
        load_json(b'{"a": "\xed\xb3\xbf"}', "w")


@pytest.mark.parametrize(("run", "words"), [
    ({"Env": [{"a": 1}]}, "field 'config.Env' must be an array of strings, but entry 0 is an object"),
    ({"Cmd": ["true", 5]}, "field 'config.Cmd' must be an array of strings, but entry 1 is a number"),
    ({"Entrypoint": [["sh"]]}, "field 'config.Entrypoint' must be an array of strings, but entry 0 is an array"),
    ({"Env": "A=b"}, "field 'config.Env' must be an array of strings, not a string"),
    ({"Labels": {"n": 1}}, "field 'config.Labels' must be an object of strings, but the value of \"n\" is a number"),
    ({"Labels": {"k\x1b[2J": []}}, "the value of \"k\\x1b[2J\" is an array"),
    ({"Volumes": {"/data": "x"}}, "field 'config.Volumes' must be an object of objects, but the value of "
                                  "\"/data\" is a string"),
])
def test_a_run_config_of_the_wrong_shape_says_what_is_wrong(run: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_config(json.dumps({**CONFIG, "config": run}).encode())
    assert words in info.value.message, info.value.message
    assert "not an array" not in info.value.message and "not an object" not in info.value.message


# -- dock's edge ----------------------------------------------------------------------------------------------


def test_go_escape_escapes_what_is_not_printable_and_nothing_else() -> None:
    assert go_escape('image "x": é ok \\ \'q\'') == 'image "x": é ok \\ \'q\''
    assert go_escape(f"a{ESC}b") == "a\\x1b]0;owned\\a\\x1b[2Jb"
    assert go_escape("one\ntwo\tthree\r") == "one\\ntwo\\tthree\\r"
    assert go_escape("\u202eevil \x00 \x7f \udcff \ud800") == "\\u202eevil \\x00 \\x7f \\xff \\ud800"


def _failing(exc: BaseException) -> Any:
    async def run(_args: argparse.Namespace) -> int:
        raise exc
    return run


@pytest.mark.parametrize("exc", [NotFound(f"image {ESC}x"), FileNotFoundError(2, "No such file", f"/tmp/{ESC}"),
                                 RuntimeError(f"odd {ESC}"), InvalidArgument("line one\nline two"),
                                 SystemExit(f"dock: -v /x{ESC}: host path does not exist")])
def test_every_error_line_is_escaped(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                     exc: Exception) -> None:
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    monkeypatch.setattr(cli, "_run", _failing(exc))
    assert cli.main(["version"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dock: ") and err.count("\n") == 1, err
    assert "\x1b" not in err and "\x07" not in err, err
    assert "\\x1b]0;owned\\a\\x1b[2J" in err or "line one\\nline two" in err, err


def test_a_status_without_words_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_run", _failing(SystemExit(2)))
    with pytest.raises(SystemExit) as info:
        cli.main(["version"])
    assert info.value.code == 2


async def test_for_each_failures_are_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    async def act(name: str) -> str:
        if name == "bad":
            raise NotFound(f"container {ESC}: not found")
        return name

    done, failed = await for_each(["ok", "bad"], act)
    assert done == ["ok"] and failed == 1
    err = capsys.readouterr().err
    assert err == "dock: container \\x1b]0;owned\\a\\x1b[2J: not found\n", err


@pytest.mark.parametrize(("argv", "n", "typed"), [
    (["create", "--label", "a=\udcff", "busybox"], 3, "a=\\xff"),
    (["--address", "/nonexistent/dockyard.sock", "run", "busybox", "echo", "\udcc3("], 6, "\\xc3("),
    (["rm", "x\ud800"], 2, "x\\ud800"),
])
def test_an_argument_that_is_not_utf8_is_refused_before_anything_runs(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], n: int,
        typed: str) -> None:
    monkeypatch.setattr(cli, "_run", _failing(AssertionError("the command ran")))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err == f"dock: '{typed}' is not UTF-8 text (argument {n}): dock's arguments must be valid UTF-8\n", err


def test_utf8_arguments_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[argparse.Namespace] = []

    async def run(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    monkeypatch.setattr(cli, "_run", run)
    assert cli.main(["create", "--label", "ünï=cødé☃", "busybox"]) == 0 and len(seen) == 1


def test_a_change_nested_past_the_limit_is_the_shell_form() -> None:
    """`--change 'CMD [[[...'` 5 000 deep: a RecursionError escaped as an internal error; text
    that is not a JSON array is the shell form, as Docker reads it."""
    from supervisor.build.commit_changes import apply_changes

    assert apply_changes(["CMD " + "[" * 5000], {})["Cmd"][-1] == "[" * 5000


def test_every_dock_error_line_goes_through_say() -> None:
    """dock's error lines quote names, files and daemon words: each is printed escaped by
    `dock.output.say`, never by a print of its own that would pass an ESC sequence on."""
    from pathlib import Path

    import dock

    root = Path(dock.__file__).parent
    # launch.py: the warm launcher imports nothing of dock's (start-up time); its one line quotes
    # only its own words and the zygote's.
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if p.name not in ("output.py", "launch.py") and 'print(f"dock: ' in p.read_text()]
    assert not offenders, offenders


def test_labels_and_frames_nested_too_deeply_are_worded_errors() -> None:
    """A health-check label or an attach control frame nested 5 000 deep: a RecursionError got
    past the `except ValueError` of each reader (an internal error); now jsonutil's refusal."""
    from dockyard_common import attachsock, healthcheck

    with pytest.raises(InvalidArgument, match="not JSON"):
        healthcheck._json_label({"k": "[" * 5000}, "k")
    with pytest.raises(attachsock.FrameError, match="not JSON"):
        attachsock.decode_json(b"[" * 5000)
