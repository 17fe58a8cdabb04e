"""Go's text/template, the part Docker users write in `--format`, evaluated in Python.

    Template('{{range .Mounts}}{{.Source}} {{end}}').execute({"Mounts": [{"Source": "/a"}]})  # "/a "

Written by hand: PyPI has no maintained pure-Python implementation (the packages there wrap Go
through cgo and need a Go toolchain at install). What is here, with Go's semantics:

- text and actions `{{ }}`, trim markers `{{- ` and ` -}}`, comments `{{/* */}}`;
- field chains `.A.B` on dicts (a missing key is `<no value>` and stays so down the chain) and on
  dataclasses (a missing field is an error); names are case-sensitive; a callable value is a
  method (`.Label "key"`); `$`, `$x := p`, `$x = p`, `range $i, $v := p`;
- pipelines `a | b` (the value goes last into the next command), parenthesised pipelines,
  literals (Go strings with escapes, raw strings, characters, numbers, true, false, nil);
- `if`/`else if`/`else`/`end`, `range` (lists, dicts in sorted key order, integers; `else`,
  `break`, `continue`), `with`/`else with`;
- Go's functions `and or not len index slice print printf println eq ne lt le gt ge html js
  urlquery call`, Docker's `json join split lower upper title truncate pad`.

Not here: `define`/`template`/`block`, complex numbers. Strings are indexed, sliced, measured
(`len`) and truncated by character, not by UTF-8 byte as Go does. Errors are `TemplateError`
("template: LINE:COL: ..."). Work is bounded: nesting depth, evaluation steps and output size.

The package, in the order a template goes through it: errors.py (TemplateError, the bounds),
lexer.py (source -> tokens), parser.py (tokens -> tree), evaluator.py (tree + data
-> text), values.py (Go's view of Python values: type names, truth, %v, json), printf.py (fmt's
Sprintf/Sprint/Sprintln), gofuncs.py and dockerfuncs.py (the functions), template.py (Template).
"""

from dock.gotemplate.dockerfuncs import HEADER_FUNCS
from dock.gotemplate.errors import MAX_DEPTH, MAX_OUTPUT, MAX_STEPS, TemplateError
from dock.gotemplate.gofuncs import AND, OR
from dock.gotemplate.printf import go_sprintf
from dock.gotemplate.template import BUILTINS, Template, render
from dock.gotemplate.values import MISSING, NO_VALUE, Struct, go_float, go_print, to_json, truth, type_name

__all__ = [
    "AND", "BUILTINS", "HEADER_FUNCS", "MAX_DEPTH", "MAX_OUTPUT", "MAX_STEPS", "MISSING", "NO_VALUE", "OR",
    "Struct", "Template", "TemplateError", "go_float", "go_print", "go_sprintf", "render", "to_json", "truth",
    "type_name",
]
