"""dock completion SHELL: the shell code that makes TAB complete dock's commands, options,
container names and image names (`eval "$(dock completion bash)"`, e.g. in ~/.bashrc)."""

from __future__ import annotations

import argparse
from typing import Any

from dock.client import Client
from dock.completion import SHELLS, shell_code


def register(sub: Any) -> None:
    p = sub.add_parser("completion", help="print shell completion code (eval \"$(dock completion bash)\")")
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(handler=completion)


async def completion(client: Client, args: argparse.Namespace) -> int:
    print(shell_code(args.shell), end="")
    return 0
