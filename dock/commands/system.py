"""dock version, dock info, dock plugins ls, dock system prune|df|info."""

from __future__ import annotations

import argparse
from typing import Any

from dock.args import add_prune_options
from dock.client import Client
from dock.formatting import add_format_option, emit_each, is_template
from dock.output import emit, emit_json, to_jsonable
from dockyard_common.version import REVISION, VERSION


def register(sub: Any) -> None:
    p = sub.add_parser("version", help="client and daemon versions")
    add_format_option(p, short=True)
    p.set_defaults(handler=version)
    p = sub.add_parser("info", help="what the daemon is and where it keeps its state")
    add_format_option(p, short=True)
    p.set_defaults(handler=info)
    system = sub.add_parser("system", help="the daemon as a whole").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True)
    p = system.add_parser("prune", help="remove stopped containers, unused networks, dangling images and build cache")
    p.add_argument("--all", "-a", action="store_true", help="every image no container uses, not only dangling ones")
    p.add_argument("--volumes", action="store_true", help="anonymous volumes no container uses too")
    add_prune_options(p)
    p.set_defaults(handler=system_prune)
    p = system.add_parser("df", help="disk used by images, containers, volumes and build cache")
    p.add_argument("--verbose", "-v", action="store_true", help="each image, container, volume and cache record")
    add_format_option(p)
    p.set_defaults(handler=system_df)
    p = system.add_parser("info", help="the same as dock info")
    add_format_option(p, short=True)
    p.set_defaults(handler=info)
    plugins = sub.add_parser("plugins", help="the daemon's components").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True)
    p = plugins.add_parser("ls", aliases=["list"], help="list components")
    p.add_argument("--detailed", "-d", action="store_true", help="show exports, capabilities, errors")
    p.add_argument("filters", nargs="*", help="containerd filters, e.g. type==io.containerd.grpc.v1")
    p.set_defaults(handler=plugins_ls)


async def version(client: Client, args: argparse.Namespace) -> int:
    server = await client.version()
    if args.format == "json":
        emit_json({"client": {"version": VERSION, "revision": REVISION}, "server": server})
        return 0
    if is_template(args.format):  # Docker's {{.Server.Version}}, {{.Client.Version}}; ours in lower case too
        ours = {"client": {"version": VERSION, "revision": REVISION}, "server": to_jsonable(server)}
        emit_each(args.format, [{**ours, "Client": {"Version": VERSION, "GitCommit": REVISION},
                                 "Server": {"Version": server.version, "GitCommit": server.revision,
                                            "UUID": server.uuid}}])
        return 0
    print(f"Client:\n  Version:  {VERSION}\n  Revision: {REVISION}\n")
    print(f"Server:\n  Version:  {server.version}\n  Revision: {server.revision}\n  UUID: {server.uuid}")
    return 0


_INFO_LABELS = {"ksm": "Shim page merging"}


def _camel(key: str) -> str:
    """`cgroup_driver` -> `CgroupDriver`, the way Docker's info fields are spelled."""
    return "".join(part[:1].upper() + part[1:] for part in key.split("_"))


async def info(client: Client, args: argparse.Namespace) -> int:
    data = await client.info()
    if args.format == "json":
        emit_json(data)
        return 0
    if is_template(args.format):  # the fields of --format json, also by Docker-style names (.Root -> root)
        ours = to_jsonable(data)
        emit_each(args.format, [{**ours, **{_camel(k): v for k, v in ours.items()}, "ServerVersion": data.version,
                                 "DockerRootDir": data.root, "Driver": data.default_snapshotter}])
        return 0
    for key, value in vars(data).items():
        shown = ", ".join(value) if isinstance(value, list) else value
        label = _INFO_LABELS.get(key) or key.replace("_", " ").capitalize()
        print(f"{label + ':':22} {shown}")
    return 0


async def plugins_ls(client: Client, args: argparse.Namespace) -> int:
    found = await client.plugins(args.filters)
    if args.format == "json" or not args.detailed:
        emit(args.format, found, [
            ("TYPE", lambda p: p.type), ("ID", lambda p: p.id),
            ("PLATFORMS", lambda p: ",".join(p.platforms) or "-"), ("STATUS", lambda p: p.status),
        ])
        return 0
    for p in found:
        print(f"Type:          {p.type}\nID:            {p.id}")
        if p.requires:
            print("Requires:\n" + "".join(f"               {r}\n" for r in p.requires), end="")
        if p.exports:
            print("Exports:\n" + "".join(f"               {k}  {v}\n" for k, v in p.exports.items()), end="")
        if p.capabilities:
            print("Capabilities:  " + ", ".join(p.capabilities))
        if p.error:
            print(f"Error:         {p.error}")
        print()
    return 0


async def system_df(client: Client, args: argparse.Namespace) -> int:
    from dock.commands import df  # pulls in prune's modules (verbs, runner): only for this command

    return await df.system_df(client, args)


async def system_prune(client: Client, args: argparse.Namespace) -> int:
    from dock.commands import prune  # the prune module pulls in verbs and runner: only for this command

    return await prune.system_prune(client, args)
