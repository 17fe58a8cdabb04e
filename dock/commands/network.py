"""dock network create|ls|inspect|rm|prune, dock port."""

from __future__ import annotations

import argparse
from typing import Any

from dock.args import containers_arg, parse_labels
from dock.client import Client
from dock.dockerview import network_row, network_view
from dock.formatting import NETWORK_HEADERS, add_format_option, emit_each, emit_rows, is_template
from dock.lookup import resolve_id
from dock.network import NetworkInfo, NetworkUser, check_network_name
from dock.output import emit, emit_json, for_each, labels_text, say
from dockyard_common.errors import InvalidArgument

SHORT_ID = 12


def register(sub: Any) -> None:
    group = sub.add_parser("network", aliases=["networks"], help="manage networks")
    cmds = group.add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    p = cmds.add_parser("create", help="create a bridge network and print its id")
    p.add_argument("--subnet", default="", help="CIDR, e.g. 10.100.0.0/24 (default: a free /16)")
    p.add_argument("--gateway", default="", help="the gateway address (default: the subnet's first)")
    p.add_argument("--internal", action="store_true", help="no route out of the network")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="network label")
    p.add_argument("name")
    p.set_defaults(handler=create)
    p = cmds.add_parser("ls", aliases=["list"], help="list networks (and the files in net.d that are not ones)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only names")
    add_format_option(p)
    p.set_defaults(handler=ls)
    p = cmds.add_parser("inspect", help="show networks and the containers attached to them")
    p.add_argument("names", nargs="+", metavar="NAME")
    add_format_option(p, short=True)
    p.set_defaults(handler=inspect)
    p = cmds.add_parser("rm", aliases=["remove", "delete"], help="remove networks (refused while in use)")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.set_defaults(handler=rm)
    p = cmds.add_parser("prune", help="remove every unused network Dockyard made (not the default one)")
    p.add_argument("--force", "-f", action="store_true", help="accepted for Docker's scripts: there is no prompt")
    p.set_defaults(handler=prune)
    p = sub.add_parser("port", help="list a container's published ports, or where one is published")
    containers_arg(p, "id", help="container name, id or unique id prefix")
    p.add_argument("port", nargs="?", default="", metavar="PORT[/PROTO]", help="e.g. 80 or 53/udp")
    p.set_defaults(handler=port)


def network_json(net: NetworkInfo, users: list[NetworkUser] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": net.name, "id": net.id, "driver": _driver(net), "subnets": net.subnets, "gateway": net.gateway,
        "bridge": net.bridge, "internal": net.internal, "labels": net.labels,
        "created_at": net.created_at.isoformat() if net.created_at else None, "managed": net.managed,
        "path": net.path, "plugins": net.plugins,
    }
    if users is not None:
        out["containers"] = [{"namespace": u.namespace, "id": u.container_id} for u in users]
    return out


def _driver(net: NetworkInfo) -> str:
    """The plugin that makes the interface (Docker's DRIVER column): the conflist's first."""
    return net.plugins[0] if net.plugins else "-"


async def create(client: Client, args: argparse.Namespace) -> int:
    check_network_name(args.name)
    net = await client.networks.create(args.name, subnet=args.subnet, gateway=args.gateway,
                                       internal=args.internal, labels=parse_labels(args.label))
    if args.format == "json":
        emit_json(network_json(net))
    else:
        print(net.id)
    return 0


async def ls(client: Client, args: argparse.Namespace) -> int:
    networks, problems = await client.networks.list()
    for p in problems:  # never hidden, never hiding the others
        say(f"warning: {p.message}")
    if args.format == "json":
        emit_json([network_json(n) for n in networks])
        return 0
    if args.quiet:
        for n in networks:
            print(n.name)
        return 0
    if is_template(args.format):
        emit_rows(args.format, [network_row(network_json(n)) for n in networks], NETWORK_HEADERS)
        return 0
    emit("table", networks, [
        ("NETWORK ID", lambda n: n.id[:SHORT_ID]), ("NAME", lambda n: n.name), ("DRIVER", _driver),
        ("SUBNET", lambda n: ",".join(n.subnets) or "-"), ("GATEWAY", lambda n: n.gateway or "-"),
        ("INTERNAL", lambda n: "yes" if n.internal else "no"), ("LABELS", lambda n: labels_text(n.labels)),
    ])
    return 0


async def inspect(client: Client, args: argparse.Namespace) -> int:
    """As `docker network inspect`: a JSON list; names not found are reported and make it fail."""
    async def one(name: str) -> dict[str, Any]:
        return network_json(*await client.networks.inspect(name))

    found, failed = await for_each(args.names, one)
    if is_template(args.format):
        emit_each(args.format, [network_view(n) for n in found])
    elif found or not failed:
        emit_json(found)
    return failed


async def rm(client: Client, args: argparse.Namespace) -> int:
    async def one(name: str) -> str:
        await client.networks.remove(name)
        return name

    removed, failed = await for_each(args.names, one)
    if args.format == "json":
        emit_json(removed)
    else:
        for name in removed:
            print(name)
    return failed


async def prune(client: Client, args: argparse.Namespace) -> int:
    removed = await client.networks.prune()
    if args.format == "json":
        emit_json(removed)
    else:
        for name in removed:
            print(name)
    return 0


def parse_port_arg(text: str) -> tuple[int, str]:
    """`dock port`'s PORT[/PROTO] (tcp when no protocol is given, as Docker)."""
    number, slash, proto = text.partition("/")
    proto = proto.lower() if slash else "tcp"
    if not number.isascii() or not number.isdigit() or not 1 <= int(number) <= 65535:
        raise InvalidArgument(f"invalid port {text!r}: want PORT[/PROTO], e.g. 80 or 53/udp (port 1-65535)")
    if proto not in ("tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid port {text!r}: protocol {proto!r} is not tcp, udp or sctp")
    return int(number), proto


async def port(client: Client, args: argparse.Namespace) -> int:
    """As `docker port`: `80/tcp -> 0.0.0.0:18080` per mapping, or with PORT only where it is published."""
    wanted = parse_port_arg(args.port) if args.port else None
    cid = await resolve_id(client, args.id)  # "container 'x': not found" before "no ports"
    ports = await client.networks.published_ports(cid)
    if wanted is not None:
        ports = [p for p in ports if (p.container_port, p.protocol) == wanted]
        if not ports:
            say(f"no public port '{wanted[0]}/{wanted[1]}' published for {args.id}")
            return 1
    if args.format == "json":
        emit_json([p.to_json() for p in ports])
        return 0
    for p in ports:
        print(p.host_address() if wanted else f"{p.container_port}/{p.protocol} -> {p.host_address()}")
    return 0
