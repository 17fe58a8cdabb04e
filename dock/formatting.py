"""`--format` as Docker's CLI reads it: `table` and `json` are ours; anything else is a Go template
(dock/gotemplate/), given globally (`dock --format ... ps`) or after the verb (`dock ps --format ...`).

    dock ps --format '{{.Names}}\\t{{.Status}}'          # one line per container, no header
    dock ps --format 'table {{.ID}}\\t{{.Image}}'        # a header row (CONTAINER ID, IMAGE), aligned
    dock inspect --format '{{.State.Status}}' web       # one line per object

As Docker's formatter: `table TEMPLATE` renders the header by running the template on the
command's header names (`.ID` -> CONTAINER ID) with json/join/upper... leaving them as they are,
then every row, through Go's tabwriter as Docker sets it up (cells at least 10 wide, 3 spaces
between); the two characters `\\t` and `\\n` in the template's text are a tab and a newline.
Commands that take a template say so with `set_defaults(templates=True)` (`add_format_option`);
any other command refuses one rather than print its table regardless.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from dockyard_common.errors import InvalidArgument

if TYPE_CHECKING:
    from dock.gotemplate import Template

TABLE, JSON = "table", "json"
TAB_MINWIDTH, TAB_PADDING = 10, 3  # Docker: tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)


class FormatError(InvalidArgument):
    """A --format value we cannot use: said as it is, without a kind suffix."""

    def __str__(self) -> str:
        return self.message


def add_format_option(p: argparse.ArgumentParser, *, short: bool = False) -> None:
    """`--format` after the verb too (`dock ps --format ...`), as Docker takes it; and mark the
    command as one that renders templates. Without it after the verb, the global one counts.
    `short`: `-f` too, as Docker's inspect, version and info (not where -f is --filter)."""
    p.add_argument("--format", *(["-f"] if short else []), dest="format", default=argparse.SUPPRESS, metavar="FORMAT",
                   action=_FormatAfterVerb,
                   help="table, json, or a Go template: '{{.Field}}...', 'table {{.Field}}\\t...'")
    p.set_defaults(templates=True)


class _FormatAfterVerb(argparse.Action):
    """Stores --format and notes that it came after the verb (`args.format_after_verb`): a command
    whose default depends on where its output goes (dock stats) tells a chosen `table` from the default."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.format_after_verb = True


def is_template(fmt: str) -> bool:
    return fmt not in (TABLE, JSON)


def is_table(fmt: str) -> bool:
    """Docker's IsTable: the format begins with `table`."""
    return fmt.startswith(TABLE)


def check_format(args: argparse.Namespace) -> None:
    """Before anything runs: a template must parse, and only commands that render one take one."""
    fmt = getattr(args, "format", TABLE)
    if not isinstance(fmt, str) or not is_template(fmt):
        return
    if not getattr(args, "templates", False):
        raise FormatError(f"this command takes --format table or json, not a template ({fmt[:60]!r})")
    if "{{" not in fmt and not is_table(fmt):
        raise FormatError(f"--format {fmt[:60]!r}: want table, json, or a Go template such as '{{{{.ID}}}}'")
    parse(fmt)


_CACHE: dict[tuple[str, bool], Template] = {}


def parse(fmt: str, *, listing: bool = True) -> Template:
    """The template of a --format value: for a listing, without `table` and trimmed, `\\t`/`\\n`
    in its text made tab and newline (Docker's preFormat); as it is for inspect."""
    from dock.gotemplate import Template

    key = (fmt, listing)
    if key not in _CACHE:
        source = fmt
        if listing:
            source = (source[len(TABLE):] if is_table(source) else source).strip(" ")
        _CACHE[key] = Template(source, text_escapes=listing)
    return _CACHE[key]


def header_name(field: str) -> str:
    """A header for a field nobody named: `RunningFor` -> `RUNNING FOR`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", field).upper()


class _Header(str):
    """A header cell; called like a method (`.Label "x"`), it is still itself."""

    def __call__(self, *args: Any) -> str:
        return str(self)


class _HeaderRow(Mapping[str, Any]):
    """What a table's header row is rendered from: every field name is a header."""

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.headers = headers

    def __getitem__(self, key: str) -> Any:
        return _Header(self.headers.get(key, header_name(key)))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __iter__(self) -> Any:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)


def render_rows(fmt: str, rows: Iterable[Any], headers: Mapping[str, str]) -> str:
    """Every row through the template, a newline after each; a table: the header first, aligned."""
    from dock.gotemplate import HEADER_FUNCS, TemplateError

    template = parse(fmt)
    lines = [template.execute(row) + "\n" for row in rows]
    if not is_table(fmt):
        return "".join(lines)
    try:
        header = template.execute(_HeaderRow(headers), funcs=HEADER_FUNCS) + "\n"
    except TemplateError:  # a header that does not render (a range over a header cell...): none
        header = ""
    return tabwrite(header + "".join(lines))


def emit_rows(fmt: str, rows: Iterable[Any], headers: Mapping[str, str], out: TextIO | None = None) -> None:
    (out or sys.stdout).write(render_rows(fmt, rows, headers))


def emit_each(fmt: str, items: Iterable[Any], out: TextIO | None = None) -> None:
    """As `docker inspect --format`: the template as written, once per object, each on its line."""
    (out or sys.stdout).write("".join(render_one(fmt, item) + "\n" for item in items))


def render_one(fmt: str, item: Any) -> str:
    """One object through the template as written (inspect's, and events' as Docker's: no `table`,
    no `\\t` made a tab), without a newline."""
    return parse(fmt, listing=False).execute(item)


def tabwrite(text: str, minwidth: int = TAB_MINWIDTH, padding: int = TAB_PADDING) -> str:
    """Go's text/tabwriter (padchar ' ', no flags): tab-terminated cells aligned in column blocks,
    a column as wide as its widest cell plus `padding`, at least `minwidth`; the last cell of a
    line is not part of any column."""
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(line0: int, line1: int) -> None:
        for line in lines[line0:line1]:
            parts = []
            for j, cell in enumerate(line):
                parts.append(cell)
                if j < len(widths) and j < len(line) - 1:
                    parts.append(" " * (widths[j] - len(cell)))
            out.append("".join(parts))

    def format_block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)  # the lines before the block
            line0 = this
            width = minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            format_block(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    format_block(0, len(lines))
    return "\n".join(out)


# -- the field names Docker's templates know, per command --------------------------------------------------

PS_HEADERS = {
    "ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND", "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED", "Ports": "PORTS", "State": "STATE", "Status": "STATUS", "Size": "SIZE",
    "Names": "NAMES", "Labels": "LABELS", "Label": "LABEL", "Mounts": "MOUNTS", "Networks": "NETWORKS",
    "LocalVolumes": "LOCAL VOLUMES",
}
IMAGES_HEADERS = {
    "ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG", "Digest": "DIGEST", "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT", "Size": "SIZE", "Containers": "CONTAINERS", "Labels": "LABELS",
}
NETWORK_HEADERS = {
    "ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
    "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT", "Subnet": "SUBNET", "Gateway": "GATEWAY",
}
VOLUME_HEADERS = {
    "Name": "VOLUME NAME", "Driver": "DRIVER", "Scope": "SCOPE", "Mountpoint": "MOUNTPOINT", "Labels": "LABELS",
    "Links": "LINKS", "Size": "SIZE", "CreatedAt": "CREATED AT",
}
HISTORY_HEADERS = {
    "ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY",
    "Size": "SIZE", "Comment": "COMMENT",
}
STATS_HEADERS = {
    "Container": "CONTAINER", "ID": "CONTAINER ID", "Name": "NAME", "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT",
    "MemPerc": "MEM %", "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
}
DF_HEADERS = {
    "Type": "TYPE", "TotalCount": "TOTAL", "Active": "ACTIVE", "Size": "SIZE", "Reclaimable": "RECLAIMABLE",
}


def labels_csv(labels: Mapping[str, str]) -> str:
    """Docker's `.Labels` cell: k=v pairs joined by commas (sorted here, so it is stable)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def go_time(when: Any) -> str:
    """A time as Go's time.Time.String() (Docker's CreatedAt): `2024-05-01 10:00:00 +0000 UTC`, local zone."""
    if when is None:
        return ""
    local = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %z ") + (local.tzname() or "")


DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def docker_size(n: float, precision: int = 3, *, base: int = 1000, units: tuple[str, ...] = DECIMAL_UNITS) -> str:
    """go-units' HumanSizeWithPrecision(n, 3), Docker's sizes: decimal units, `4.27MB`, `0B`;
    `precision` 4 is its HumanSize (docker system df)."""
    i = 0
    value = float(n)
    while value >= base and i < len(units) - 1:
        value /= base
        i += 1
    text = f"{value:.{precision}g}"
    if "e" in text:
        text = f"{value:.0f}"
    return f"{text}{units[i]}"


def docker_bytes(n: float) -> str:
    """go-units' BytesSize (docker stats' MEM USAGE / LIMIT): binary units, `1.5MiB`, `7.6GiB`."""
    return docker_size(n, 4, base=1024, units=BINARY_UNITS)


def go_rfc3339(when: datetime | None) -> str:
    """A time as Go's time.RFC3339 in the local zone (docker history's CreatedAt): `2024-05-01T10:00:00Z`."""
    if when is None:
        return ""
    local = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone().replace(microsecond=0)
    text = local.isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text
