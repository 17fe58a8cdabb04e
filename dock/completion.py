"""Shell completion for dock, by argcomplete (the maintained library for argparse CLIs).

The shell calls `dock` itself with `_ARGCOMPLETE` set; `main` then builds the whole parser and
hands it to `complete`, which prints the candidates and exits. Commands mark the arguments that
name containers or images (`containers_arg`, `images_arg` in dock/args.py): those complete from
the daemon, with a short deadline and nothing at all when it does not answer (a prompt must not
hang on a daemon that is down). `dock completion bash` prints the shell's side.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

from dock.client import DEFAULT_ADDRESS, Client

SHELLS = ("bash", "zsh", "fish", "tcsh")
DEADLINE = 2.0  # seconds a completion may wait for the daemon


def _ask(parsed: argparse.Namespace, query: Callable[[Client], Awaitable[list[str]]]) -> list[str]:
    address = getattr(parsed, "address", None) or os.environ.get("DOCKYARD_ADDRESS", DEFAULT_ADDRESS)
    namespace = getattr(parsed, "namespace", None) or os.environ.get("DOCKYARD_NAMESPACE", "default")

    async def run() -> list[str]:
        async with Client(address, namespace, DEADLINE) as client:
            return await asyncio.wait_for(query(client), DEADLINE)

    try:
        return asyncio.run(run())
    except Exception:  # a daemon down or slow: no candidates, never a traceback in the prompt
        return []


def containers(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Container ids (names) of the namespace, and the names renamed ones go by, that start with what was typed."""
    from dock.lookup import NAME_LABEL

    async def query(client: Client) -> list[str]:
        found = await client.containers.list()
        return [c.id for c in found] + [c.labels[NAME_LABEL] for c in found if c.labels.get(NAME_LABEL, c.id) != c.id]
    return [c for c in _ask(parsed_args, query) if c.startswith(prefix)]


def images(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """Image names, and their short forms (`busybox:latest` for docker.io/library/busybox:latest)."""
    async def query(client: Client) -> list[str]:
        return [i.name for i in await client.images.list()]
    out: list[str] = []
    for name in _ask(parsed_args, query):
        out.append(name)
        out.append(name.removeprefix("docker.io/library/").removeprefix("docker.io/"))
    return sorted({n for n in out if n.startswith(prefix)})


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit (argcomplete's protocol)."""
    import argcomplete

    argcomplete.autocomplete(parser, always_complete_options=False)  # options once a - is typed


def shell_code(shell: str) -> str:
    import argcomplete

    return str(argcomplete.shellcode(["dock"], shell=shell))
