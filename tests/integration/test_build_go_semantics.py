"""Differential: our Go-semantics code against Go itself, on many generated cases.

- `dockyard_common.gomatch.match` (COPY/ADD wildcards) against Go's `path/filepath.Match`;
- `dockyard_common.dockerignore.Matcher` against moby's `patternmatcher` (what the docker CLI
  applies to a build context), Debian's golang-github-moby-patternmatcher-dev.

A small Go program (`go_build_semantics/main.go`) answers a JSON batch of cases; it is built in
GOPATH mode against /usr/share/gocode with Debian's golang-go, in a temporary GOPATH and
GOCACHE, without network. The cases are generated from a fixed seed over an alphabet rich in
the characters that matter (`*`, `**`, `?`, classes, escapes, `!`, `/`, `.`), plus hand-picked ones.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard_common.dockerignore import Matcher, go_clean
from dockyard_common.errors import InvalidArgument
from dockyard_common.gomatch import check, match

GO_SOURCE = Path(__file__).resolve().parent / "go_build_semantics" / "main.go"
GOCODE = Path("/usr/share/gocode")
PACKAGE = "dockyard/buildsemantics"

PATTERN_TOKENS = ["a", "b", "ab", ".", "..", "/", "*", "**", "?", "[ab]", "[!a]", "[^b]", "[a-c]", "\\*", "\\?",
                  "\\[", "x.y", "[", "]", "-", "!"]
PATHS = ["a", "b", "ab", "ba", "abc", "a/b", "a/b/c", "b/a", "a/a/a", "ab/b", ".a", "a.b", "x.y", "x/y.z", "*",
         "a*b", "?", "[", "]", "-", "c", "a/b/c/d", "b/ab", "aa/bb/cc"]


@pytest.fixture(scope="module")
def go_answers() -> Iterator[Any]:
    go = shutil.which("go")
    assert go is not None, "go is missing: bash scripts/install installs golang-go"
    assert (GOCODE / "src/github.com/moby/patternmatcher").is_dir(), \
        "moby's patternmatcher is missing: bash scripts/install installs golang-github-moby-patternmatcher-dev"
    base = Path(tempfile.mkdtemp(prefix="dy-gosem-"))
    try:
        package = base / "gopath" / "src" / PACKAGE
        package.mkdir(parents=True)
        shutil.copy2(GO_SOURCE, package / "main.go")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base), "GO111MODULE": "off",
            "GOPATH": f"{base / 'gopath'}:{GOCODE}", "GOCACHE": str(base / "cache"), "GOFLAGS": "",
            "GOENV": "off", "GOPROXY": "off", "CGO_ENABLED": "0", "TMPDIR": str(base),
        }
        binary = base / "semantics"
        built = subprocess.run([go, "build", "-o", str(binary), PACKAGE], env=env, capture_output=True, text=True,
                               timeout=600, check=False)
        assert built.returncode == 0, built.stderr

        def ask(cases: dict[str, Any]) -> Any:
            done = subprocess.run([str(binary)], input=json.dumps(cases), capture_output=True, text=True,
                                  timeout=120, check=False)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        yield ask
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _patterns(rng: random.Random, n: int) -> list[str]:
    out: set[str] = set()
    for length in (1, 2, 3):
        out.update("".join(p) for p in itertools.product(PATTERN_TOKENS[:12], repeat=length) if length < 3)
    while len(out) < n:
        out.add("".join(rng.choice(PATTERN_TOKENS) for _ in range(rng.randint(1, 5))))
    return sorted(out)


def _ours_match(pattern: str, name: str) -> bool | None:
    try:
        return match(pattern, name)
    except InvalidArgument:
        return None


def test_filepath_match_agrees_with_go(go_answers: Any) -> None:
    rng = random.Random(1303)
    cases = [(p, n) for p in _patterns(rng, 700) for n in rng.sample(PATHS, 8)]
    cases += [("[]a]", "]"), ("[a-]", "a"), ("[\\]]", "]"), ("a\\", "a"), ("[^]", "x"), ("*[", "a"), ("[x", "y"),
              ("\\", ""), ("[\\", "a"), ("[a-b-c]", "b"), ("[--z]", "a"), ("", ""), ("", "a")]
    answers = go_answers({"match": cases, "ignore": []})["match"]
    # Go's error for a malformed pattern depends on how far a match gets (and on the Go release):
    # where Go errs we must err, and where we err on a name Go answered, the pattern must be one
    # Go rejects for some name (we always reject it).
    mismatches: list[tuple[Any, ...]] = []
    for (p, n), go in zip(cases, answers, strict=True):
        ours = _ours_match(p, n)
        if ours is None and go is not None:
            if any(_ours_match(p, other) is not None for other in PATHS):
                mismatches.append((p, n, go, ours))
        elif go != ours:
            mismatches.append((p, n, go, ours))
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ (pattern, name, go, ours): {mismatches[:20]}"


def _ours_ignore(patterns: list[str], paths: list[str]) -> list[bool] | None:
    try:
        m = Matcher(patterns)
    except InvalidArgument:
        return None
    return [m.excluded(p) for p in paths]


def _malformed(pattern: str) -> bool:
    try:
        check(go_clean(pattern.strip()).removeprefix("!"))
    except InvalidArgument:
        return True
    return False


def test_dockerignore_agrees_with_moby(go_answers: Any) -> None:
    rng = random.Random(1313)
    pool = _patterns(rng, 400)
    batches = [{"patterns": [p], "paths": PATHS} for p in pool]
    for _ in range(600):
        chosen = [rng.choice(pool) for _ in range(rng.randint(2, 4))]
        chosen = [("!" + p if rng.random() < 0.35 else p) for p in chosen]
        batches.append({"patterns": chosen, "paths": PATHS})
    batches += [
        {"patterns": ["**"], "paths": PATHS}, {"patterns": ["**/"], "paths": PATHS},
        {"patterns": ["a/**"], "paths": PATHS}, {"patterns": ["**a"], "paths": PATHS},
        {"patterns": ["*", "!a/b", "a"], "paths": PATHS}, {"patterns": ["!"], "paths": PATHS},
        {"patterns": ["  a  ", "", "./b/"], "paths": PATHS}, {"patterns": ["/a/../b"], "paths": PATHS},
    ]
    answers = go_answers({"match": [], "ignore": batches})["ignore"]
    mismatches: list[tuple[Any, ...]] = []
    for batch, go in zip(batches, answers, strict=True):
        ours = _ours_ignore(batch["patterns"], batch["paths"])
        go_error = go is None or any(a is None for a in go)
        if ours is None or go_error:
            # Go 1.19 validates a pattern only as far as matching "." reads it, so it may keep a
            # malformed one that no path reaches; we refuse it, as newer Go's New does.
            stricter = ours is None and not go_error and any(_malformed(p) for p in batch["patterns"])
            if not (ours is None and go_error) and not stricter:
                mismatches.append((batch["patterns"], "error", go, ours))
            continue
        for path, g, o in zip(batch["paths"], go, ours, strict=True):
            if g != o:
                mismatches.append((batch["patterns"], path, g, o))
    assert not mismatches, f"{len(mismatches)} differ (patterns, path, go, ours): {mismatches[:20]}"
