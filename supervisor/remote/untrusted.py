"""A registry's own words in the daemon's messages.

Error documents, reason phrases, challenge parameters and URLs come from the registry (or a
token server, or blob storage it sends us to) and reach a user's terminal through `dock`'s error
line and the daemon's log. `shown` escapes what is not printable, as Go's %q does, so an ESC
sequence from a registry is text (`\\x1b[2J`), not a command to the terminal, and bounds the length.

    shown("denied\\x1b]0;owned\\x07")   == "denied\\\\x1b]0;owned\\\\a"
"""

from __future__ import annotations

from dockyard_common.goquote import go_quote

SHOWN = 200  # characters of a registry's own words kept in a message


def shown(text: object, limit: int = SHOWN) -> str:
    """`text` fit for a message: unprintable characters escaped, cut to `limit` characters."""
    value = str(text)
    cut = len(value) > limit
    value = value[:limit]
    if not value.isprintable():
        value = go_quote(value)[1:-1]
    return value + ("..." if cut else "")
