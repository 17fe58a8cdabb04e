"""Go's `%q` formatting, so every containerd-style message that quotes a user's string
renders it exactly as containerd would (the daemon's errors, the CLI's reference errors)."""

from __future__ import annotations

_GO_ESCAPES = {"\a": r"\a", "\b": r"\b", "\f": r"\f", "\n": r"\n", "\r": r"\r", "\t": r"\t",
               "\v": r"\v", "\\": r"\\", '"': r"\""}


def go_quote(s: str) -> str:
    """`s` as Go's strconv.Quote (`%q`) renders it: printable runes kept, the rest escaped.

    Lone surrogates (bytes that were not UTF-8, decoded with surrogateescape) render as the
    `\\xNN` byte escape Go uses for invalid UTF-8.
    """
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= cp <= 0xDCFF:
            out.append(f"\\x{cp - 0xDC00:02x}")
        elif ch.isprintable():  # Python's notion matches Go's unicode.IsPrint (L, M, N, P, S, ' ')
            out.append(ch)
        elif cp < 0x80:
            out.append(f"\\x{cp:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def go_escape(s: str) -> str:
    """`s` with each character `%q` would escape escaped as `%q` escapes it, and nothing else:
    printable text, quotes and backslashes stay as they are. For text bound for a terminal that
    is no Go string literal (dock's error line): an ESC sequence in it is shown, never obeyed.

        go_escape('image "x\\x1b[2J": not found')  == 'image "x\\\\x1b[2J": not found'
    """
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else go_quote(ch)[1:-1] for ch in s)
