"""RUN with here-documents: the command a RUN step runs when its shell form carries heredocs.

    argv, script = run_argv(["/bin/sh", "-c"], ins)

As buildkit's dockerfile frontend does it (the Dockerfile reference, "Here-Documents"):
- The command is only a heredoc (`RUN <<EOF`, `RUN <<-"EOF"`): its text is the script. One
  starting with `#!` is written to a file (mode 0755, `SCRIPT_DIR/<name>`, mounted read-only
  for the step) and run itself, so the kernel runs its interpreter; any other text runs as
  `SHELL + [text]` (`/bin/sh -c <text>`), so a heredoc works whatever the shell supports.
- Anything else (`RUN <<EOF bash`, `RUN python3 <<EOF`, `RUN cat <<A >a && cat <<B >b`, ...):
  the command line, then each heredoc's text and its delimiter line, goes to the shell as one
  script, and the shell does the redirections.
- The builder never expands variables in a RUN's heredocs: the shell does, from the step's
  environment, unless the delimiter is quoted (buildkit ignores the quoting in the first case,
  and so do we). `<<-` has had its leading tabs removed by the parser (dockerfile.py).
The exec (JSON) form takes no heredocs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from supervisor.build.dockerfile import Heredoc, Instruction

SCRIPT_DIR = "/dev/pipes"  # buildkit's: under /dev's tmpfs, so nothing of it reaches the layer
SCRIPT_MODE = 0o755
# The whole command is one heredoc word: `<<EOF`, `<<-EOF`, `<<"EOF"`, `<<'EOF'` (buildkit's
# ParseHeredoc: one word after the operator, or it is no heredoc of its own).
_ONLY_HEREDOC = re.compile(r"\s*\d*<<-?\s*([\"']?)([^\s\"'<]+)\1\s*")


@dataclass(frozen=True)
class Script:
    """A heredoc run as an executable file: `SCRIPT_DIR/name` holding `content`."""

    name: str
    content: str

    @property
    def path(self) -> str:
        return f"{SCRIPT_DIR}/{self.name}"


def run_argv(shell: list[str], ins: Instruction) -> tuple[list[str], Script | None]:
    """The argv of a RUN with heredocs, and the script file it runs (or None)."""
    if ins.json:
        raise ins.error("RUN: heredocs are only allowed in the shell form")
    line = " ".join(ins.args)
    only = _ONLY_HEREDOC.fullmatch(line)
    if only is not None and len(ins.heredocs) == 1 and only.group(2) == ins.heredocs[0].name:
        h = ins.heredocs[0]
        if h.content.startswith("#!"):
            if "/" in h.name or h.name in (".", ".."):
                raise ins.error(f"RUN: heredoc name {h.name!r} cannot name a script file")
            script = Script(h.name, h.content)
            return [script.path], script
        return [*shell, h.content], None
    return [*shell, line + "".join(_document(h) for h in ins.heredocs)], None


def _document(h: Heredoc) -> str:
    return f"\n{h.content}{h.name}"
