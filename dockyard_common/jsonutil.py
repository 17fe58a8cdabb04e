"""Decoding JSON that came from outside (a client, a registry, a file) into errors users can read.

`json.loads` fails in three ways, one of which is not a ValueError: input nested deeper than
the interpreter's recursion limit (`[[[[...]]]]`) raises RecursionError, whose text names
Python's internals. Every decode of untrusted JSON goes through here so that none is missed.
"""

from __future__ import annotations

import json
from typing import Any


class JsonError(ValueError):
    """`data` is not the JSON expected; the message names what it was and is fit for users."""


def json_value(data: bytes | str, what: str, error: type[Exception] = JsonError) -> Any:
    """`data` decoded; `error(message)` naming `what` when it is not valid JSON.

    `error` lets each caller raise its own domain's kind (InvalidArgument in the daemon, ...).
    """
    try:
        return json.loads(data)
    except RecursionError:
        raise error(f"{what} is not valid JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise error(f"{what} is not valid JSON: not UTF-8 text") from None
    except ValueError as exc:  # JSONDecodeError: its text says where
        raise error(f"{what} is not valid JSON: {exc}") from None


def json_object(data: bytes | str, what: str, error: type[Exception] = JsonError) -> dict[str, Any]:
    """`data` decoded as a JSON object; `error(message)` naming `what` for anything else."""
    value = json_value(data, what, error)
    if not isinstance(value, dict):
        raise error(f"{what} must be a JSON object")
    return value
