"""dock system df [-v]: the disk the namespace's images, containers, volumes and build cache use.

As `docker system df`. Where the numbers come from (the daemon's API; sizes in dock/diskusage.py):
- Images: content store Info sizes of their blobs plus the Usage of their unpacked layer
  snapshots, each blob and layer once; ACTIVE: images some container was made from (any state,
  prune's rule: `users_by_image`); RECLAIMABLE: what only the other images hold.
- Containers: the Usage of each container's own snapshot (its writable layer); ACTIVE: those
  prune would not remove (running, paused, or to be restarted); RECLAIMABLE: the others' layers.
- Local Volumes: their bytes on disk (Volumes/List with sizes); LINKS: containers naming them;
  RECLAIMABLE: the volumes no container names.
- Build Cache: the daemon's records and cache directories (Builder/ListCache).

`--format TEMPLATE` renders the summary's lines with Docker's fields (.Type .TotalCount .Active
.Size .Reclaimable); with -v, as Docker's, it runs once on .Images .Containers .Volumes
.BuildCache, lists of rows with the fields of each section (dock/dockerview.py).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

from dock.build import BuildAPI, CacheUsage
from dock.client import Client
from dock.commands.images import users_by_image
from dock.commands.prune import stopped
from dock.dfview import ContainerRow, ImageRow, Report, Summary, VolumeRow, print_summary, print_verbose, report_json
from dock.diskusage import image_footprints, snapshot_sizes, total
from dock.dockerview import df_row, df_verbose_view
from dock.formatting import DF_HEADERS, emit_rows, is_table, is_template, parse
from dock.lookup import name_of
from dock.ps import command_of, process_started, state_of, status_text, with_last_exit
from dock.snapshots import DEFAULT_SNAPSHOTTER
from dock.tasks import Process
from dock.volumes import VolumeInfo
from dockyard_common import volumelabels
from dockyard_common.errors import Unimplemented
from dockyard_common.types import Container

LIVE = ("running", "paused")  # states with a process whose start time `ps` shows


async def system_df(client: Client, args: argparse.Namespace) -> int:
    template = is_template(args.format)
    report = await gather(client)
    if template and args.verbose:  # Docker's: the template once, on the four lists
        print(parse(args.format).execute(df_verbose_view(report, datetime.now(UTC), trunc=is_table(args.format))))
    elif template:
        emit_rows(args.format, [df_row(s) for s in report.summary], DF_HEADERS)
    elif args.format == "json":
        report_json(report, args.verbose)
    elif args.verbose:
        print_verbose(report, datetime.now(UTC))
    else:
        print_summary(report.summary)
    return 0


async def _cache(client: Client) -> CacheUsage:
    try:
        return await BuildAPI(client).list_cache()
    except Unimplemented:  # a daemon without the build service keeps no build cache
        return CacheUsage([], 0, 0)


async def gather(client: Client) -> Report:
    """Everything at once: five listings, then the sizes of images and containers side by side."""
    images, containers, tasks, volumes, cache = await asyncio.gather(
        client.images.list(), client.containers.list(), client.tasks.list(),
        client.volumes.list(with_size=True), _cache(client))
    task_of = {t.id: t for t in tasks}
    (prints, sizes), layers = await asyncio.gather(
        image_footprints(client, images),
        snapshot_sizes(client, [_rw(c) for c in containers if c.snapshot_key]))
    users = users_by_image(containers)
    image_rows = [ImageRow(i.name, i.target.digest, i.created_at, prints[i.name].size, prints[i.name].shared,
                           len(users.get(i.name, []))) for i in images]
    used = [prints[i.name].items for i in images if i.name in users]
    images_size = total((p.items for p in prints.values()), sizes)
    container_rows = _containers(containers, task_of, layers)
    volume_rows = _volumes(volumes, containers)
    return Report([
        Summary("Images", len(images), len(used), images_size, images_size - total(used, sizes)),
        Summary("Containers", len(container_rows), sum(r.active for r in container_rows),
                sum(r.size for r in container_rows), sum(r.size for r in container_rows if not r.active)),
        Summary("Local Volumes", len(volume_rows), sum(r.links > 0 for r in volume_rows),
                sum(r.size for r in volume_rows), sum(r.size for r in volume_rows if not r.links)),
        Summary("Build Cache", len(cache.records), sum(r.in_use for r in cache.records), cache.size,
                cache.reclaimable, percent=False),
    ], image_rows, container_rows, volume_rows, cache.records)


def _rw(c: Container) -> tuple[str, str]:
    return c.snapshotter or DEFAULT_SNAPSHOTTER, c.snapshot_key


def _containers(containers: list[Container], tasks: dict[str, Process],
                layers: dict[tuple[str, str], int]) -> list[ContainerRow]:
    now = datetime.now(UTC)
    rows = []
    for c in containers:
        task = with_last_exit(c, tasks.get(c.id))
        started = process_started(task.pid) if task is not None and state_of(task) in LIVE else None
        rows.append(ContainerRow(c.id, name_of(c), c.image, command_of(c),
                                 len(volumelabels.names_in(c.labels)), layers.get(_rw(c), 0), c.created_at,
                                 status_text(task, started, now), not stopped(c, task)))
    return rows


def _volumes(volumes: list[VolumeInfo], containers: list[Container]) -> list[VolumeRow]:
    links: dict[str, int] = {}
    for c in containers:
        for name in volumelabels.names_in(c.labels):
            links[name] = links.get(name, 0) + 1
    return [VolumeRow(v.name, links.get(v.name, 0), v.size or 0) for v in volumes]

