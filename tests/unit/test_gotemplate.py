"""dock/gotemplate.py: Go's text/template as Docker users write it, expectations from Go's behaviour."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from dock.gotemplate import HEADER_FUNCS, MAX_OUTPUT, Template, TemplateError, go_sprintf, render, to_json


def r(source: str, data: Any = None, **kw: Any) -> str:
    return Template(source, **kw).execute(data)


def err(source: str, data: Any = None) -> str:
    with pytest.raises(TemplateError) as info:
        r(source, data)
    text = str(info.value)
    assert text.startswith("template: ") and "\n" not in text
    return text


@dataclass
class Box:
    Name: str
    Size: int


# -- text, actions, trimming, comments ------------------------------------------------------------------


def test_text_only_and_empty() -> None:
    assert r("") == ""
    assert r("plain text, no actions") == "plain text, no actions"
    assert r("a { b } c }}") == "a { b } c }}"


def test_trim_markers() -> None:
    assert r("a  {{- 1 -}}  b") == "a1b"
    assert r("a \n\t{{- 1}} b") == "a1 b"
    assert r("a {{1 -}}\n\n b") == "a 1b"
    assert r("{{-3}}") == "-3"  # not a trim marker: a number
    assert r("x {{- /* c */ -}} y") == "xy"


def test_comments() -> None:
    assert r("a{{/* anything {{ here */}}b") == "ab"
    assert "unclosed comment" in err("a{{/* no end")
    assert "comment ends before closing delimiter" in err("{{/* c */ .A}}")


# -- fields, variables ----------------------------------------------------------------------------------


def test_field_chains_on_maps() -> None:
    data = {"State": {"Status": "running", "Pid": 42}, "Name": "/web"}
    assert r("{{.State.Status}} {{.State.Pid}} {{.Name}}", data) == "running 42 /web"


def test_missing_map_key_is_no_value_down_the_chain() -> None:
    assert r("{{.Nope}}|{{.Nope.Deeper}}|{{.A.B}}", {"A": {}}) == "<no value>|<no value>|<no value>"
    assert r("{{.A}}", {"A": None}) == "<no value>"


def test_names_are_case_sensitive() -> None:
    assert r("{{.name}}", {"Name": "x"}) == "<no value>"


def test_fields_of_objects_and_missing_field_is_error() -> None:
    assert r("{{.Name}}:{{.Size}}", Box("b", 3)) == "b:3"
    assert "can't evaluate field Nope in type Box" in err("{{.Nope}}", Box("b", 3))
    assert "can't evaluate field Size in type string" in err("{{.Name.Size}}", {"Name": "x"})
    assert "can't evaluate field upper in type string" in err("{{.upper}}", "text")  # no Python attributes


def test_methods_take_arguments() -> None:
    row = {"Label": lambda key: {"app": "web"}.get(key, ""), "X": 1}
    assert r('{{.Label "app"}}|{{.Label "none"}}|{{"app" | .Label}}', row) == "web||web"
    assert "not a method but has arguments" in err('{{.X "a"}}', row)
    assert "wrong number of args" in err("{{.Label}}", row)


def test_variables() -> None:
    data = {"Name": "n", "L": [1, 2]}
    assert r("{{$x := .Name}}{{$x}}{{$x = \"m\"}}{{$x}}", data) == "nm"
    assert r("{{range .L}}{{$.Name}}{{.}}{{end}}", data) == "n1n2"
    assert r("{{with $y := .Name}}{{$y}}{{end}}", data) == "n"
    assert "undefined variable" in err("{{$nope}}")
    assert "undefined variable" in err("{{range .L}}{{$v := 1}}{{end}}{{$v}}", data)
    assert "undefined variable" in err("{{$z = 1}}")


def test_pipelines_and_parentheses() -> None:
    data = {"M": {"k": {"Name": "deep"}}, "S": "Hello"}
    assert r("{{.S | lower | printf \"%s!\"}}", data) == "hello!"
    assert r('{{(index .M "k").Name}}', data) == "deep"
    assert r("{{len (print .S .S)}}", data) == "10"
    assert "non executable command in pipeline stage 2" in err('{{.S | "x"}}', data)


def test_literals() -> None:
    assert r(r'{{"a\tb\u00e9\x41\101\\"}}') == "a\tbéAA\\"
    assert r("{{`raw \\n {{ here`}}") == "raw \\n {{ here"
    assert r("{{'a'}} {{0x1F}} {{0o17}} {{017}} {{1_000}} {{-2}} {{+3}} {{1.5}} {{.5}}") == \
        "97 31 15 15 1000 -2 3 1.5 0.5"
    assert r("{{true}} {{false}} {{print nil}}") == "true false <nil>"
    assert "nil is not a command" in err("{{nil}}")


def test_go_float_printing() -> None:
    assert r("{{1.0}} {{1e6}} {{1234567.0}} {{123456.0}} {{0.00001}} {{0.0001}} {{3.25}}") == \
        "1 1e+06 1.234567e+06 123456 1e-05 0.0001 3.25"


# -- control flow -----------------------------------------------------------------------------------------


def test_if_else_chain() -> None:
    t = Template('{{if eq .S "running"}}R{{else if eq .S "exited"}}E{{else}}?{{end}}')
    assert [t.execute({"S": s}) for s in ("running", "exited", "paused")] == ["R", "E", "?"]
    assert r("{{if .A}}y{{else}}n{{end}}", {"A": []}) == "n"
    assert r("{{if and .A .B}}y{{end}}{{if or .C .B}}z{{end}}", {"A": 1, "B": "x", "C": 0}) == "yz"
    assert r("{{if not .A}}empty{{end}}", {"A": {}}) == "empty"


def test_range_lists_maps_ints_else_break_continue() -> None:
    data = {"L": ["a", "b", "c"], "M": {"z": 1, "a": 2, "m": 3}, "E": []}
    assert r("{{range $i, $v := .L}}{{$i}}{{$v}} {{end}}", data) == "0a 1b 2c "
    assert r("{{range $k, $v := .M}}{{$k}}={{$v}},{{end}}", data) == "a=2,m=3,z=1,"
    assert r("{{range .E}}x{{else}}none{{end}}", data) == "none"
    assert r("{{range .Missing}}x{{else}}none{{end}}", data) == "none"
    assert r("{{range 3}}{{.}}{{end}}") == "012"
    assert r('{{range .L}}{{if eq . "b"}}{{continue}}{{end}}{{if eq . "c"}}{{break}}{{end}}{{.}}{{end}}',
             data) == "a"
    assert "range can't iterate over hi" in err("{{range .S}}{{end}}", {"S": "hi"})
    assert "outside {{range}}" in err("{{break}}")


def test_with() -> None:
    assert r("{{with .A}}{{.B}}{{else}}none{{end}}", {"A": {"B": 1}}) == "1"
    assert r("{{with .A}}{{.B}}{{else}}none{{end}}", {}) == "none"
    assert r("{{with .A}}a{{else with .B}}{{.}}{{end}}", {"B": "b"}) == "b"


# -- functions --------------------------------------------------------------------------------------------


def test_comparisons() -> None:
    assert r("{{eq 1 1}} {{eq 1 2 3 1}} {{ne \"a\" \"b\"}} {{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1.5 2}}") == \
        "true true true true true true false"
    assert "incompatible types for comparison" in err('{{eq 1 "1"}}')
    assert "invalid type for comparison" in err("{{lt true false}}")
    assert r('{{eq .Missing "x"}}', {}) == "false"


def test_len_index_slice() -> None:
    data = {"L": [1, 2, 3], "M": {"a": "x"}, "N": {"a": 1}, "S": "héllo"}
    assert r('{{len .L}} {{len .M}} {{len .S}} {{index .L 1}} {{index .M "a"}} [{{index .M "b"}}]', data) == \
        "3 1 5 2 x []"
    assert r('{{index .N "b"}}', data) == "<no value>"
    assert r("{{slice .L 1 2}} {{slice .S 1 3}} {{slice .L}}", data) == "[2] él [1 2 3]"
    assert "index out of range: 5" in err("{{index .L 5}}", data)
    assert "len of type int" in err("{{len 3}}")
    assert "index of untyped nil" in err("{{index .Nope 1}}", {})


def test_print_functions() -> None:
    assert r('{{print "a" 1 2 "b"}}') == "a1 2b"
    assert r('{{println "a" 1}}') == "a 1\n"
    assert r("{{.}}", {"b": [1, "x"], "a": None}) == "map[a:<nil> b:[1 x]]"


def test_printf_verbs() -> None:
    assert go_sprintf("%s|%5s|%-5s|%.2s", ["ab", "ab", "ab", "abc"]) == "ab|   ab|ab   |ab"
    assert go_sprintf("%d|%5d|%-5d|%05d|%+d|%x|%X|%o|%b|%c", [42, 42, 42, -42, 3, 255, 255, 8, 5, 65]) == \
        "42|   42|42   |-0042|+3|ff|FF|10|101|A"
    assert go_sprintf("%q|%v|%t|%f|%.1f|%e|%g|%x", ["a\"b\n", [1, "a"], True, 3.5, 2.25, 1234.5, 0.5, "hi"]) == \
        '"a\\"b\\n"|[1 a]|true|3.500000|2.2|1.234500e+03|0.5|6869'
    assert go_sprintf("%*d|%%", [4, 7]) == "   7|%"
    assert go_sprintf("%[2]s %[1]s", ["a", "b"]) == "b a"
    assert go_sprintf("%T %T %T %T", [1, "s", {"a": 1}, None]) == "int string map[string]interface {} <nil>"
    assert go_sprintf("%d", ["x"]) == "%!d(string=x)"
    assert go_sprintf("%s %s", ["x"]) == "x %!s(MISSING)"
    assert go_sprintf("%s", ["x", 1]) == "x%!(EXTRA int=1)"
    assert go_sprintf("%", []) == "%!(NOVERB)"


def test_docker_functions() -> None:
    data = {"L": ["a", "b"], "S": "a,b,c", "M": {"b": 1, "a": [1, None], "f": 1.0}}
    assert r('{{join .L ", "}}|{{split .S ","}}|{{len (split .S ",")}}', data) == "a, b|[a b c]|3"
    assert r('{{lower "ÀB"}} {{upper "àb"}} {{title "hello wide world"}}') == "àb ÀB Hello Wide World"
    assert r('{{truncate "abcdef" 3}}|{{truncate "ab" 3}}|{{pad "x" 2 1}}|{{pad "" 2 1}}') == "abc|ab|  x |"
    assert r("{{json .M}}", data) == '{"a":[1,null],"b":1,"f":1}'
    assert r("{{json .S}} {{json .Missing}}", data) == '"a,b,c" null'
    assert to_json({"h": "<&>", "u": "é"}) == '{"h":"<&>","u":"é"}'
    assert r("{{json .}}", {"Label": lambda k: k, "ID": "x"}) == '{"ID":"x"}'  # methods are not data


def test_header_functions_leave_headers_alone() -> None:
    t = Template("{{json .A}}\t{{truncate .B 1}}\t{{upper .C}}")
    assert t.execute({"A": "AA", "B": "BBB", "C": "c"}, funcs=HEADER_FUNCS) == "AA\tBBB\tc"


def test_text_escapes_only_in_text() -> None:
    assert r(r"{{.A}}\t{{.B}}\n", {"A": 1, "B": 2}, text_escapes=True) == "1\t2\n"
    assert r(r"{{.A}}\t{{.B}}", {"A": 1, "B": 2}) == r"1\t2"


def test_fields_used() -> None:
    assert Template("{{.A}} {{range .B}}{{.C}}{{end}} {{$.D}} {{.E.F}}").fields() == {"A", "B", "C", "D", "E"}
    assert Template("{{json .}}").fields() is None
    assert Template("{{$}}").fields() is None


def test_non_ascii() -> None:
    data = {"名前": "値", "S": "ünïcödé ✓"}
    assert r("{{.名前}} {{.S}} {{printf \"%q\" .S}} {{len .S}}", data) == '値 ünïcödé ✓ "ünïcödé ✓" 9'
    assert r("→{{.S}}←", data) == "→ünïcödé ✓←"


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("source", "message"), [
    ("{{.A", "1:1: unclosed action"),
    ("ok\n  {{.A | }}", "2:10: missing value for command"),
    ("{{}}", "missing value for command"),
    ("{{if .A}}x", "unexpected EOF"),
    ("{{end}}", "unexpected {{end}}"),
    ("{{else}}", "unexpected {{else}}"),
    ('{{"abc}}', "unterminated quoted string"),
    ("{{`abc}}", "unterminated raw quoted string"),
    ("{{nofunc 1}}", "function 'nofunc' not defined"),
    ("{{(.A}}", "unclosed left paren"),
    ("{{.A)}}", "unexpected right paren"),
    ("{{1.2.3}}", "bad number syntax"),
    ("{{template \"x\"}}", "{{template}} is not supported"),
    ('{{"\\q"}}', "invalid escape"),
    ("{{.A .B}}", "A is not a method but has arguments"),
    ("{{1 2}}", "can't give argument to non-function 1"),
    ("{{.A;}}", "unexpected ';' in action"),
    ("{{$x, $y := .A}}", "too many declarations"),
    ('{{printf 1}}', "error calling printf"),
])
def test_errors_are_one_line_with_position(source: str, message: str) -> None:
    assert message in err(source, {"A": 1, "B": 2})


def test_execution_error_names_the_node() -> None:
    text = err("{{.Name.X}}", {"Name": "n"})
    assert text.startswith("template: 1:3: executing at <.Name.X>:")


# -- adversarial ------------------------------------------------------------------------------------------


def test_deep_nesting_is_refused_not_a_crash() -> None:
    assert "nested deeper" in err("{{if 1}}" * 5000 + "{{end}}" * 5000)
    assert "nested deeper" in err("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}")
    assert r("{{if 1}}" * 50 + "x" + "{{end}}" * 50) == "x"


def test_huge_ranges_stop() -> None:
    start = time.monotonic()
    assert "steps" in err("{{range 1000000000000}}{{end}}")
    assert "steps" in err("{{range $i := 100000}}{{range 100000}}{{end}}{{end}}")
    assert time.monotonic() - start < 30


def test_output_is_bounded() -> None:
    assert "larger than" in err('{{range 100000}}{{printf "%1000d" 1}}{{end}}')
    assert "too large" in err('{{printf "%999999999999d" 1}}')
    assert "pad" in err('{{pad "x" 999999999999 1}}')
    doubling = "{{$s := \"xxxxxxxxxxxxxxxx\"}}{{range 40}}{{$s = print $s $s}}{{end}}"
    assert "larger than" in err(doubling)
    assert len(r("{{range 1000}}abc{{end}}")) == 3000
    assert MAX_OUTPUT >= 1024 * 1024


def test_long_inputs_do_not_hang() -> None:
    assert r("{{.A}}" * 20000, {"A": "x"}) == "x" * 20000
    assert "unclosed action" in err("{{" + " " * 100000)
    assert "unterminated quoted string" in err('{{"' + "a" * 100000)
    assert r("{{" + ".A" * 10000 + "}}", {"A": None}) == "<no value>"


def test_render_shortcut() -> None:
    assert render("{{.}}", "x") == "x"
