"""dock pull|push|tag|login|logout: registry transfers done by the daemon.

    dock pull busybox                               # docker.io/library/busybox:latest, unpacked
    dock pull --plain-http 127.0.0.1:5000/team/app:1 --platform linux/arm64
    dock pull --user alice 127.0.0.1:5000/private/app     # password asked for (or alice:pw)
    dock tag busybox 127.0.0.1:5000/team/busybox:1
    dock push --plain-http 127.0.0.1:5000/team/busybox:1
    dock login -u alice --password-stdin 127.0.0.1:5000 < pw.txt
    dock logout 127.0.0.1:5000

Credentials live where Docker keeps them (~/.docker/config.json `auths`, or
$DOCKER_CONFIG/config.json; or in the credential helper its `credsStore`/`credHelpers`
name): `login` checks them with the registry (through the daemon) and stores them; `pull`
and `push` send this user's stored credentials for the registry (or --user's) with the
request. Progress: one bar per blob on a terminal, one line per
state change otherwise, only the result with --quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import AsyncIterator
from typing import Any

from dock.args import int_in
from dock.client import Client
from dock.output import emit_json, human_size
from dock.registry import RegistryEvent, TransferDone
from dock.registryview import follow, progress_view, pulled_line, stored_credentials
from dockyard_common import credentials as credfile
from dockyard_common.errors import InvalidArgument

MAX_PASSWORD = 1 << 20  # bytes of a password or token on stdin


def _remote_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plain-http", action="store_true", help="talk plain HTTP to the registry")
    p.add_argument("--skip-verify", "-k", action="store_true", help="do not verify the registry's TLS certificate")
    p.add_argument("--user", "-u", default="", metavar="USER[:PASSWORD]",
                   help="credentials to use (default: those stored by dock login)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the result")


def register(sub: Any) -> None:
    p = sub.add_parser("pull", help="pull an image from a registry")
    p.add_argument("ref")
    p.add_argument("--platform", default="", help="os/arch[/variant] (default: the daemon host's)")
    p.add_argument("--all-platforms", action="store_true", help="fetch every platform of an index")
    p.add_argument("--no-unpack", dest="unpack", action="store_false", help="only fetch the content")
    p.add_argument("--snapshotter", default="", help="snapshotter to unpack into (default: the daemon's)")
    _remote_flags(p)
    p.set_defaults(handler=pull)

    p = sub.add_parser("push", help="push an image to a registry")
    p.add_argument("ref", help="where to push (and, unless --local, the image to push)")
    p.add_argument("--local", default="", help="the local image to push (default: REF)")
    p.add_argument("--platform", default="", help="push only this platform's manifest of an index")
    p.add_argument("--chunk-size", type=int_in(0), default=0, metavar="BYTES",
                   help="upload blobs in chunks of this size (default: one request per blob)")
    _remote_flags(p)
    p.set_defaults(handler=push)

    p = sub.add_parser("tag", help="give an image another name")
    p.add_argument("source")
    p.add_argument("target")
    p.add_argument("--force", "-f", action="store_true", help="move TARGET if it names another image")
    p.set_defaults(handler=tag)

    p = sub.add_parser("login", help="log in to a registry (credentials stored as Docker stores them)")
    p.add_argument("server", metavar="REGISTRY")
    p.add_argument("--username", "-u", default="")
    p.add_argument("--password", "-p", default="", help="(insecure: visible to other users; use --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--plain-http", action="store_true")
    p.add_argument("--skip-verify", "-k", action="store_true")
    p.set_defaults(handler=login)

    p = sub.add_parser("logout", help="forget the stored credentials for a registry")
    p.add_argument("server", metavar="REGISTRY")
    p.set_defaults(handler=logout)


def _read_secret(prompt: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


async def _credentials(args: argparse.Namespace) -> tuple[str, str]:
    """--user U[:P] (P asked for when missing), else what `dock login` stored for the registry."""
    if args.user:
        user, sep, secret = args.user.partition(":")
        if not user:
            raise InvalidArgument("--user needs a username")
        if not sep:
            secret = _read_secret(f"Password for {user}: ")
        return user, secret
    return await stored_credentials(args.ref)


async def _run(args: argparse.Namespace, events: AsyncIterator[RegistryEvent]) -> TransferDone | None:
    quiet = args.quiet or args.format == "json"
    return await follow(events, None if quiet else progress_view(sys.stdout), TransferDone)


async def pull(client: Client, args: argparse.Namespace) -> int:
    user, secret = await _credentials(args)
    events = client.registry.pull_stream(args.ref, platform=args.platform, all_platforms=args.all_platforms,
                                         unpack=args.unpack, snapshotter=args.snapshotter,
                                         plain_http=args.plain_http, skip_verify=args.skip_verify,
                                         username=user, secret=secret)
    done = await _run(args, events)
    if done is None:
        return 1
    if args.format == "json":
        emit_json(done)
    elif args.quiet:
        print(done.name)
    else:
        print(pulled_line(done))
    return 0


async def push(client: Client, args: argparse.Namespace) -> int:
    user, secret = await _credentials(args)
    events = client.registry.push_stream(args.ref, local=args.local, platform=args.platform,
                                         plain_http=args.plain_http, skip_verify=args.skip_verify,
                                         username=user, secret=secret, chunk_size=args.chunk_size)
    done = await _run(args, events)
    if done is None:
        return 1
    if args.format == "json":
        emit_json(done)
    elif args.quiet:
        print(done.target.digest)
    else:
        print(f"pushed {done.name} {done.target.digest} ({human_size(done.bytes_transferred)} sent)")
    return 0


async def tag(client: Client, args: argparse.Namespace) -> int:
    tagged = await client.registry.tag(args.source, args.target, force=args.force)
    if args.format == "json":
        emit_json(tagged)
    else:
        print(tagged.name)
    return 0


async def login(client: Client, args: argparse.Namespace) -> int:
    username = args.username
    if not username:
        stored = await asyncio.to_thread(credfile.load, args.server)
        if sys.stdin.isatty() and not args.password_stdin:
            default = f" ({stored.username})" if stored else ""
            typed = (await asyncio.to_thread(input, f"Username{default}: ")).strip()
            username = typed or (stored.username if stored else "")
        if not username:
            raise InvalidArgument("login: a username is required (-u)")
    if args.password_stdin:
        if args.password:
            raise InvalidArgument("login: --password and --password-stdin are mutually exclusive")
        password = sys.stdin.read(MAX_PASSWORD + 1)  # a token is a few KB; /dev/zero must not hang dock
        if len(password) > MAX_PASSWORD:
            raise InvalidArgument(f"login: the password on stdin is longer than {MAX_PASSWORD >> 20} MiB")
        password = password.rstrip("\r\n")
    elif args.password:
        password = args.password
    elif sys.stdin.isatty():
        password = await asyncio.to_thread(getpass.getpass, "Password: ")
    else:
        raise InvalidArgument("login: no password: use --password-stdin, or run on a terminal")
    if not password:
        raise InvalidArgument("login: the password must not be empty")
    server = await client.registry.login(args.server, username, password, plain_http=args.plain_http,
                                         skip_verify=args.skip_verify)
    path = await asyncio.to_thread(credfile.store, server, credfile.Credentials(username, password))
    print(f"credentials stored in {path}", file=sys.stderr)
    print("Login Succeeded")
    return 0


async def logout(client: Client, args: argparse.Namespace) -> int:
    host = credfile.registry_host(args.server)
    if await asyncio.to_thread(credfile.erase, args.server):
        print(f"Removing login credentials for {host}")
    else:
        print(f"Not logged in to {host}")
    return 0
