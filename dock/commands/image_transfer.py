"""dock images import|export|unpack|inspect|check: the daemon's Transfer service.

    dock images import busybox.tar              # OCI layout or `docker save` tar; "-" = stdin
    dock images import --unpack --all-platforms multi.tar
    dock images export out.tar busybox          # OCI layout + manifest.json (docker load reads it)
    dock images unpack busybox
    dock images inspect busybox                 # Cmd, Entrypoint, Env, WorkingDir, User, layers, size
    dock images check                           # is every image whole, and unpacked?

Import shows a progress bar on a terminal, one line per event otherwise, nothing but the
imported names with --quiet. Image arguments are found as given, then normalized.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from dock.args import parse_labels
from dock.client import Client
from dock.output import emit_json, emit_table, human_size, say, to_jsonable
from dock.registryview import follow
from dock.transfer import (
    BlobProgress,
    ImageInspection,
    ImportedImage,
    ImportResult,
    LayerProgress,
    SentProgress,
    UnpackResult,
)


def add_import(cmds: Any) -> None:
    p = cmds.add_parser("import", help="import an image archive (OCI layout or docker save)")
    p.add_argument("archive", help="the tar file, or - for stdin")
    p.add_argument("--unpack", action="store_true", help="unpack the images into snapshots")
    p.add_argument("--snapshotter", default="", help="snapshotter to unpack into (default: the daemon's)")
    p.add_argument("--platform", default="", help="keep only this platform (os/arch[/variant])")
    p.add_argument("--all-platforms", action="store_true", help="keep every platform of an index")
    p.add_argument("--index-name", default="", help="also name the whole index this")
    p.add_argument("--base-name", default="", help="name bare OCI tags <base-name>:<tag>")
    p.add_argument("--digests", action="store_true", help="also name every manifest <base-name>@<digest>")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="label the images")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the imported names")
    p.set_defaults(handler=import_images)


def add_export(cmds: Any) -> None:
    p = cmds.add_parser("export", help="write images to a tar archive")
    p.add_argument("output", help="the tar file to write, or - for stdout")
    p.add_argument("names", nargs="+", metavar="image")
    p.add_argument("--platform", default="", help="the platform to export from indexes (default: the host's)")
    p.add_argument("--all-platforms", action="store_true", help="export every platform of indexes")
    # not dest="format": that is the global --format (table, json or a template)
    p.add_argument("--oci", dest="archive_format", action="store_const", const="oci", default="docker",
                   help="write only the OCI layout (no docker manifest.json)")
    p.set_defaults(handler=export_images)


def add_unpack(cmds: Any) -> None:
    p = cmds.add_parser("unpack", help="unpack an image into snapshots")
    p.add_argument("name")
    p.add_argument("--snapshotter", default="")
    p.add_argument("--platform", default="")
    p.set_defaults(handler=unpack_image)


def add_inspect(cmds: Any) -> None:
    p = cmds.add_parser("inspect", help="show an image's config and layers")
    p.add_argument("name")
    p.add_argument("--platform", default="")
    p.set_defaults(handler=inspect_image)


def add_check(cmds: Any) -> None:
    p = cmds.add_parser("check", help="check that images have all their content")
    p.add_argument("names", nargs="*", metavar="image", help="images to check (default: all)")
    p.add_argument("--platform", default="")
    p.add_argument("--snapshotter", default="")
    p.set_defaults(handler=check_images)


TRANSFER_SUBCOMMANDS = [add_import, add_export, add_unpack, add_inspect, add_check]


# -- import --------------------------------------------------------------------------------------


class _Lines:
    """Progress as plain lines (not a terminal)."""

    def event(self, ev: object) -> None:
        if isinstance(ev, BlobProgress) and ev.digest:
            print(f"stored {ev.path} {ev.digest} ({human_size(ev.total)})")
        elif isinstance(ev, LayerProgress) and ev.state != "extracting":
            print(f"layer {ev.index + 1}/{ev.total} {ev.layer.digest} {ev.state} ({ev.chain_id})")
        elif isinstance(ev, UnpackResult):
            print(f"unpacked {ev.manifest.digest} as {ev.chain_id} ({ev.snapshotter})")
        elif isinstance(ev, ImportedImage):
            print(f"{'created' if ev.created else 'updated'} {ev.name} {ev.target.digest}")

    def close(self) -> None:
        pass


class _Bar:
    """Progress as a rich bar over the bytes sent, with the events printed above it."""

    def __init__(self, total: int | None) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), transient=True)
        self.task = self.progress.add_task("importing", total=total)
        self.progress.start()

    def event(self, ev: object) -> None:
        if isinstance(ev, SentProgress):
            self.progress.update(self.task, completed=ev.sent)
        elif isinstance(ev, LayerProgress):
            self.progress.update(self.task, description=f"unpacking {ev.index + 1}/{ev.total}")
            if ev.state != "extracting":
                self.progress.console.print(f"layer {ev.index + 1}/{ev.total} {ev.layer.digest[:19]} {ev.state}",
                                            highlight=False)
        elif isinstance(ev, ImportedImage):
            self.progress.console.print(f"{'created' if ev.created else 'updated'} {ev.name}", highlight=False)

    def close(self) -> None:
        self.progress.stop()


async def import_images(client: Client, args: argparse.Namespace) -> int:
    source: Any = sys.stdin.buffer if args.archive == "-" else args.archive
    total = None
    if args.archive != "-":
        try:
            total = await asyncio.to_thread(os.path.getsize, args.archive)
        except OSError as exc:
            say(f"{args.archive}: {exc.strerror}")
            return 1
    quiet = args.quiet or args.format == "json"
    view: _Lines | _Bar | None = None
    if not quiet:
        view = _Bar(total) if sys.stdout.isatty() else _Lines()
    events = client.transfer.import_stream(
        source, index_name=args.index_name, base_name=args.base_name, all_platforms=args.all_platforms,
        platform=args.platform, unpack=args.unpack, snapshotter=args.snapshotter, digests=args.digests,
        labels=parse_labels(args.label))
    result = await follow(events, view, ImportResult)
    if result is None:
        return 1
    if args.format == "json":
        emit_json(result)
    elif args.quiet:
        for img in result.images:
            print(img.name)
    else:
        print(f"imported {len(result.images)} image(s) from a {result.format} archive "
              f"({human_size(result.bytes_read)})")
    return 0


# -- export, unpack --------------------------------------------------------------------------------


async def export_images(client: Client, args: argparse.Namespace) -> int:
    names = [(await client.images.find(n)).name for n in args.names]
    opts = {"platform": args.platform, "all_platforms": args.all_platforms, "format": args.archive_format}
    if args.output == "-":
        await client.transfer.export_to(sys.stdout.buffer, names, **opts)
        sys.stdout.buffer.flush()
    else:
        try:
            written = await client.transfer.export_to(args.output, names, **opts)
        except OSError as exc:
            say(f"{args.output}: {exc.strerror}")
            return 1
        print(f"exported {len(names)} image(s) to {args.output} ({human_size(written)})", file=sys.stderr)
    return 0


async def unpack_image(client: Client, args: argparse.Namespace) -> int:
    name = (await client.images.find(args.name)).name
    result = None
    async for ev in client.transfer.unpack_stream(name, snapshotter=args.snapshotter, platform=args.platform):
        if isinstance(ev, UnpackResult):
            result = ev
        elif args.format != "json" and ev.state != "extracting":
            print(f"layer {ev.index + 1}/{ev.total} {ev.layer.digest} {ev.state}")
    if result is None:
        return 1
    if args.format == "json":
        emit_json(result)
    else:
        print(f"unpacked {name} into {result.snapshotter} as {result.chain_id} "
              f"({result.extracted} extracted, {result.reused} reused)")
    return 0


# -- inspect, check --------------------------------------------------------------------------------


def _field(cfg: dict[str, Any], key: str) -> str:
    value = cfg.get(key)
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(sorted(str(k) for k in value))
    return str(value)


def _object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: the daemon checks config types, but
    what it answers is printed without trusting that (an older daemon, a record made before)."""
    return value if isinstance(value, dict) else {}


def _lines(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [] if value is None or value == "" else [str(value)]


def print_inspection(info: ImageInspection) -> None:
    config = _object(info.config)
    run = _object(config.get("config"))
    rows = [("Name", info.name), ("Target", f"{info.target.digest} ({info.target.media_type})"),
            ("Manifest", info.manifest.digest), ("Config", info.config_descriptor.digest),
            ("Platform", info.platform), ("Platforms", ", ".join(info.platforms) or "-"),
            ("Created", _field(config, "created")),
            ("Size", f"{human_size(info.size)} ({info.size} bytes, compressed)"),
            ("Unpacked", ", ".join(info.unpacked) or "no")]
    rows += [(key, _field(run, key)) for key in ("Entrypoint", "Cmd", "WorkingDir", "User", "ExposedPorts",
                                                  "Volumes", "StopSignal")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print("Env")
    for line in _lines(run.get("Env")):
        print(f"  {line}")
    labels = run.get("Labels")
    if labels:
        print("Labels")
        if isinstance(labels, dict):
            for k, v in sorted(labels.items(), key=lambda kv: str(kv[0])):
                print(f"  {k}={v}")
        else:
            print(f"  {labels}")
    print("Layers")
    emit_table(list(enumerate(info.layers)), [
        ("  #", lambda row: f"  {row[0]}"),
        ("DIGEST", lambda row: row[1].descriptor.digest),
        ("SIZE", lambda row: human_size(row[1].descriptor.size)),
        ("DIFF ID", lambda row: row[1].diff_id),
    ])


async def inspect_image(client: Client, args: argparse.Namespace) -> int:
    name = (await client.images.find(args.name)).name
    info = await client.transfer.inspect(name, platform=args.platform)
    if args.format == "json":
        emit_json(to_jsonable(info))
    else:
        print_inspection(info)
    return 0


async def check_images(client: Client, args: argparse.Namespace) -> int:
    names = [(await client.images.find(n)).name for n in args.names]
    results = await client.transfer.check(names, platform=args.platform, snapshotter=args.snapshotter)
    if args.format == "json":
        emit_json(results)
    else:
        emit_table(results, [
            ("REF", lambda r: r.name),
            ("DIGEST", lambda r: r.target.digest),
            ("STATUS", lambda r: ("complete" if r.complete else "incomplete") +
             (f" ({len(r.missing)} missing)" if r.missing else "") + (f": {r.error}" if r.error else "")),
            ("SIZE", lambda r: f"{human_size(r.present_size)}/{human_size(r.total_size)}"),
            ("PLATFORMS", lambda r: ",".join(r.platforms) or "-"),
            ("UNPACKED", lambda r: str(r.unpacked).lower()),
        ])
    return 0 if all(r.complete for r in results) else 1
