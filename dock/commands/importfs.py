"""dock import: Docker's `import`, a root filesystem tarball made into a one-layer image
(dock/rootfsimport.py: the daemon's commit of a container from scratch does the image).

    dock import rootfs.tar app:1                     # or - for stdin, or an http(s) URL
    dock import -c 'CMD ["/bin/sh"]' -c 'ENV A=1' -m "from the vendor" rootfs.tar.gz app:2

Prints the new image's id (its config digest), as Docker's; `--format json`: name, target,
config, layer and diff ID.
"""

from __future__ import annotations

import argparse
from typing import Any

from dock.client import Client
from dock.output import emit_json


def register(sub: Any) -> None:
    p = sub.add_parser("import", help="make an image of a root filesystem tarball")
    p.add_argument("--change", "-c", action="append", default=[], metavar="INSTRUCTION",
                   help="apply a Dockerfile instruction to the image config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                        "USER, WORKDIR, VOLUME or STOPSIGNAL (repeatable)")
    p.add_argument("--message", "-m", default="", help='the history comment (default "Imported from -")')
    p.add_argument("source", metavar="file|URL|-",
                   help="a tar archive of a root filesystem (plain, gzip, zstd, bzip2 or xz), - for stdin")
    p.add_argument("ref", nargs="?", default="", metavar="REPOSITORY[:TAG]",
                   help="the image's name (default: none, an untagged image)")
    p.set_defaults(handler=import_tarball)


async def import_tarball(client: Client, args: argparse.Namespace) -> int:
    from dock.rootfsimport import import_rootfs

    result = await import_rootfs(client, args.source, args.ref, changes=args.change, message=args.message)
    if args.format == "json":
        emit_json(result)
    else:
        print(result.config.digest)
    return 0
