"""What `dock system df` prints: Docker's summary table and its `-v` sections, and the JSON.

    print_summary([Summary("Images", 3, 1, 5_000_000, 2_000_000)])
    # TYPE    TOTAL    ACTIVE    SIZE       RECLAIMABLE
    # Images  3        1         4.8 MiB    1.9 MiB (40%)

RECLAIMABLE carries the share of SIZE as Docker's CLI prints it: whole percent rounded down, and
none when SIZE is 0 or for the build cache (Docker prints none there either).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dock.build import CacheRecord
from dock.output import Column, emit_json, emit_table, human_size
from dock.ps import ago, command_text, image_text
from dockyard_common.errors import InvalidArgument
from dockyard_common.reference import Reference, familiar, is_dangling, parse

SHORT_ID = 12
NONE = "<none>"


@dataclass
class Summary:
    type: str  # Images, Containers, Local Volumes, Build Cache
    total: int
    active: int
    size: int
    reclaimable: int
    percent: bool = True  # print the share of size (not for the build cache)


@dataclass
class ImageRow:
    name: str
    id: str  # the target's digest
    created_at: datetime | None
    size: int
    shared_size: int
    containers: int

    @property
    def unique_size(self) -> int:
        return self.size - self.shared_size


@dataclass
class ContainerRow:
    id: str
    name: str
    image: str
    command: list[str]
    local_volumes: int
    size: int  # the writable layer
    created_at: datetime | None
    status: str
    active: bool


@dataclass
class VolumeRow:
    name: str
    links: int
    size: int


@dataclass
class Report:
    summary: list[Summary]
    images: list[ImageRow]
    containers: list[ContainerRow]
    volumes: list[VolumeRow]
    build_cache: list[CacheRecord]


def reclaimable_text(s: Summary) -> str:
    """`1.9 MiB (40%)`: the percent floored as Docker's integer division floors it."""
    if s.percent and s.size > 0:
        return f"{human_size(s.reclaimable)} ({s.reclaimable * 100 // s.size}%)"
    return human_size(s.reclaimable)


def repository_tag(name: str) -> tuple[str, str]:
    """An image name as `docker images` splits it: `busybox`, `latest`; `<none>` where there is none."""
    if is_dangling(name):
        return NONE, NONE
    try:
        ref = parse(name)
    except InvalidArgument:
        return name, NONE
    return familiar(Reference(ref.domain, ref.path)), ref.tag or NONE


def short_id(digest: str) -> str:
    return digest.partition(":")[2][:SHORT_ID] if ":" in digest else digest[:SHORT_ID]


def print_summary(rows: list[Summary]) -> None:
    _table(rows, [("TYPE", lambda s: s.type), ("TOTAL", lambda s: s.total), ("ACTIVE", lambda s: s.active),
                      ("SIZE", lambda s: human_size(s.size)), ("RECLAIMABLE", reclaimable_text)])


def _table(rows: Sequence[Any], columns: Sequence[Column]) -> None:
    emit_table(rows, columns, out=sys.stdout)  # the stream print() writes to now, so the two stay in order


def print_verbose(report: Report, now: datetime) -> None:
    print("Images space usage:\n")
    _table(report.images, [
        ("REPOSITORY", lambda r: repository_tag(r.name)[0]), ("TAG", lambda r: repository_tag(r.name)[1]),
        ("IMAGE ID", lambda r: short_id(r.id)), ("CREATED", lambda r: ago(r.created_at, now)),
        ("SIZE", lambda r: human_size(r.size)), ("SHARED SIZE", lambda r: human_size(r.shared_size)),
        ("UNIQUE SIZE", lambda r: human_size(r.unique_size)), ("CONTAINERS", lambda r: r.containers)])
    print("\nContainers space usage:\n")
    _table(report.containers, [
        ("CONTAINER ID", lambda r: r.id[:SHORT_ID]), ("IMAGE", lambda r: image_text(r.image)),
        ("COMMAND", lambda r: command_text(r.command)), ("LOCAL VOLUMES", lambda r: r.local_volumes),
        ("SIZE", lambda r: human_size(r.size)), ("CREATED", lambda r: ago(r.created_at, now)),
        ("STATUS", lambda r: r.status), ("NAMES", lambda r: r.name)])
    print("\nLocal Volumes space usage:\n")
    _table(report.volumes, [("VOLUME NAME", lambda r: r.name), ("LINKS", lambda r: r.links),
                                ("SIZE", lambda r: human_size(r.size))])
    cache = next((s for s in report.summary if s.type == "Build Cache"), None)
    print(f"\nBuild cache usage: {human_size(cache.size if cache else 0)}\n")
    _table(report.build_cache, [
        ("CACHE ID", lambda r: short_cache_id(r.id)), ("CACHE TYPE", lambda r: r.type),
        ("SIZE", lambda r: human_size(r.size)), ("CREATED", lambda r: ago(r.created_at, now)),
        ("LAST USED", lambda r: ago(r.last_used, now)), ("IN USE", lambda r: "true" if r.in_use else "false"),
        ("SHARED", lambda r: "true" if r.shared else "false")])


def short_cache_id(cache_id: str) -> str:
    """A record key's first 12 hex digits; a cache directory keeps its `cachemount:` prefix."""
    prefix = "cachemount:" if cache_id.startswith("cachemount:") else ""
    return prefix + short_id(cache_id.removeprefix(prefix))


def report_json(report: Report, verbose: bool) -> None:
    """Bytes as numbers; the items only with -v, as the table."""
    out: dict[str, Any] = {"summary": [dataclasses.asdict(s) for s in report.summary]}
    for s in out["summary"]:
        del s["percent"]
    if verbose:
        out["images"] = [{**dataclasses.asdict(r), "unique_size": r.unique_size,
                          "repository": repository_tag(r.name)[0], "tag": repository_tag(r.name)[1]}
                         for r in report.images]
        out["containers"] = report.containers
        out["volumes"] = report.volumes
        out["build_cache"] = report.build_cache
    emit_json(_times(out))


def _times(obj: Any) -> Any:
    """ISO 8601 for datetimes, anywhere in the tree (to_jsonable keeps them as they are)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _times(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {k: _times(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_times(v) for v in obj]
    return obj.isoformat() if isinstance(obj, datetime) else obj
