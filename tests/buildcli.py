"""`dock build` and friends against a test daemon, for the build tests: a subprocess of this
checkout, its JSON progress read back.

    cli = BuildCLI(d.address)
    built = cli.build(ctx, "-t", "app:1")            # --progress json
    built.manifest_digest, built.cached("RUN")       # was the (first) RUN step reused?
    manifest = json.loads(cli.blob(built.manifest_digest))
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.daemon import REPO


@dataclass
class Built:
    events: list[dict[str, Any]]

    @property
    def manifest_digest(self) -> str:
        digest = next(e for e in self.events if e["type"] == "result")["manifest_digest"]
        assert isinstance(digest, str) and digest.startswith("sha256:"), digest
        return digest

    def cached(self, prefix: str) -> bool:
        """Whether the first step whose text starts with `prefix` came from the cache."""
        step = next(e["step"] for e in self.events if e["type"] == "step" and e.get("text", "").startswith(prefix))
        return any(e["type"] == "cached" and e["step"] == step for e in self.events)

    def output(self) -> str:
        return "".join(e.get("data", "") for e in self.events if e["type"] == "output")


@dataclass
class BuildCLI:
    address: str

    def run(self, *args: str, env: dict[str, str] | None = None, stdin: bytes = b"",
            timeout: float = 300) -> subprocess.CompletedProcess[bytes]:
        """`dock ARGS`; the environment without SOURCE_DATE_EPOCH or DOCK_DEBUG unless `env` sets them."""
        full = {**os.environ, "PYTHONPATH": str(REPO), "DOCKYARD_ADDRESS": self.address}
        full.pop("SOURCE_DATE_EPOCH", None)
        full.pop("DOCK_DEBUG", None)
        full.update(env or {})
        res = subprocess.run([sys.executable, "-m", "dock.cli", *args], input=stdin, capture_output=True, env=full,
                             timeout=timeout, cwd=REPO)
        assert b"Traceback" not in res.stderr, res.stderr
        return res

    def ok(self, *args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> str:
        res = self.run(*args, env=env, stdin=stdin)
        assert res.returncode == 0, (f"dock {shlex.join(args)}: rc {res.returncode}\n{res.stdout!r}\n"
                                     f"{res.stderr.decode(errors='replace')}")
        return res.stdout.decode(errors="replace")

    def fails(self, *args: str) -> str:
        """stderr (one line) of a dock command that must fail with rc 1."""
        res = self.run(*args)
        err = res.stderr.decode(errors="replace").strip()
        assert res.returncode == 1 and len(err.splitlines()) == 1, (res.returncode, err)
        return err

    def build(self, ctx: Path, *args: str, env: dict[str, str] | None = None) -> Built:
        out = self.ok("build", "--progress", "json", *args, str(ctx), env=env)
        return Built([json.loads(line) for line in out.splitlines() if line.startswith("{")])

    def blob(self, digest: str) -> bytes:
        res = self.run("content", "get", digest)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def has_blob(self, digest: str) -> bool:
        return self.run("content", "get", digest).returncode == 0
