"""dock: the command-line client. Each command group lives in dock/commands/<group>.py; the
parser that finds them is dock/parser.py.

Kept light: `python3 -m dock.cli` (and scripts/install's `dock`) run `launch`, which hands the
command to a warm child when it can (dock/launch.py) before anything heavy is imported."""

from __future__ import annotations

import os
import sys

from dock.launch import try_warm

TYPE_CHECKING = False  # not typing's: importing typing costs the launcher's start
if TYPE_CHECKING:
    import argparse


async def _run(args: argparse.Namespace) -> int:
    from dock.client import Client
    from dock.formatting import check_format

    check_format(args)  # a --format template parses, and this command takes one, before anything runs
    async with Client(args.address, args.namespace, args.timeout) as client:
        result = await args.handler(client, args)
        return int(result or 0)


# Set (to anything but "" or "0") to see the traceback of an unexpected error.
DEBUG_ENV = "DOCK_DEBUG"


def launch() -> int:
    """The `dock` command: in a warm child when one can be had (dock/launch.py), else here."""
    argv = sys.argv[1:]
    try:
        code = try_warm(argv)
        if code is not None:
            return code
        if sys.flags.no_site:  # started as `python -S` (scripts/install's launcher): grpc is in site-packages
            import site

            site.main()
        return main(argv)
    except KeyboardInterrupt:  # ^C before the command's own handling began
        return 130


def main(argv: list[str] | None = None) -> int:
    """Run one command in this process (cold: it imports what the command needs)."""
    import asyncio

    from dock.parser import GROUPS, build_parser
    from dockyard_common.errors import DockyardError

    if "_ARGCOMPLETE" in os.environ:  # the shell asks what TAB could mean: dock/completion.py
        from dock.completion import complete

        complete(build_parser(groups=list(GROUPS)))  # exits
    argv = sys.argv[1:] if argv is None else argv
    for n, arg in enumerate(argv, 1):
        # argv's bytes that are not UTF-8 arrive as lone surrogates (surrogateescape): every
        # name, id and value dock sends is UTF-8 text, so refuse them here, once, before any
        # command has begun (a label of one failed deep in `create`, naming only the value).
        if not arg.isascii() and not _utf8(arg):
            _say(f"'{_as_typed(arg)}' is not UTF-8 text (argument {n}): dock's arguments must be valid UTF-8")
            return 1
    args = build_parser(argv).parse_args(argv)
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    if not debug:  # Python's warnings (an unawaited coroutine at ^C) are no user's business
        import warnings

        warnings.simplefilter("ignore")
    try:
        return asyncio.run(_run(args))
    except DockyardError as exc:
        _say(str(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        if not isinstance(exc.code, str):  # argparse's usage errors (2), a command's own status
            raise
        _say(exc.code.removeprefix("dock: "))  # `raise SystemExit("dock: ...")`: the same one line
        return 1
    except BrokenPipeError:  # `dock ... | head`: the reader is gone, nothing left to say
        _quiet_stdout()
        return 141
    except UnicodeEncodeError as exc:  # text bound for the daemon, not UTF-8 (from a file, say)
        _say(f"'{_as_typed(exc.object)}' is not UTF-8 text (names, ids and values sent to the daemon must be)")
        return 1
    except OSError as exc:  # a local file or device of the command's (not the daemon's answer): as it is
        _say(_describe(exc))
        return 1
    except Exception as exc:  # a bug or an answer we could not read: one line, never a traceback
        if debug:
            import traceback

            traceback.print_exc()
        _say(f"unexpected error: {_describe(exc)} (set {DEBUG_ENV}=1 for details)")
        return 1


def _say(message: str) -> None:
    from dock.output import say

    say(message)


def _utf8(text: str) -> bool:
    from dockyard_common.jsonutil import utf8_encodable  # only for a non-ASCII argument: start-up stays light

    return utf8_encodable(text)


def _describe(exc: BaseException) -> str:
    """What went wrong, in words: the message without Python's exception name."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    text = " ".join(str(exc).split())
    return text[:300] if text else "no details"


def _as_typed(text: str | bytes) -> str:
    """The bytes the user typed (argv's undecodable bytes are surrogates), printable."""
    data = text if isinstance(text, bytes) else None
    if isinstance(text, str):
        try:
            data = text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            data = text.encode("utf-8", "backslashreplace")
    return (data or b"").decode("utf-8", "backslashreplace")[:100]


def _quiet_stdout() -> None:
    # Python would complain once more when it flushes stdout at exit.
    import contextlib

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(launch())
