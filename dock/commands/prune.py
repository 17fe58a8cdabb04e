"""dock container prune, dock image prune, dock system prune: what no one uses, removed (Docker's).

    dock container prune [-f] [--filter label=K[=V]]   # every container not running (nor coming back)
    dock image prune [-a] [-f] [--filter label=K[=V]]  # dangling images (-a: every image no container uses)
    dock system prune [-a] [--volumes] [-f] [--filter label=K[=V]]   # all of the above, unused networks,
                                                       # dangling build cache (none of it with a label filter)

Dangling images are those a build made without a name (`dockyard-dangling@sha256:...`, as Docker's
containerd store names them `moby-dangling@`). A container whose restart policy will start it again
(backing off between runs) is not stopped, so prune leaves it, as Docker leaves a restarting one.
The registration is the groups' own (containers.py, images.py, system.py); the work is here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from dock.build import BuildAPI
from dock.client import Client
from dock.commands.images import image_users
from dock.commands.verbs import task_of
from dock.commands.volumes import prune_filters
from dock.network import DEFAULT_NETWORK
from dock.output import confirm, emit_json, for_each, human_size
from dock.ps import state_of
from dock.runner import remove_container
from dock.tasks import Process
from dockyard_common import restartpolicy
from dockyard_common.errors import FailedPrecondition, NotFound
from dockyard_common.reference import is_dangling
from dockyard_common.types import Container

AT_ONCE = 8  # removals in flight at once


def label_matcher(filters: Sequence[str]) -> Callable[[dict[str, str]], bool]:
    """Docker's prune filters `label=K[=V]` / `label!=K[=V]` (all must hold) as a test of labels."""
    carrying, not_carrying = prune_filters(list(filters))

    def has(labels: dict[str, str], want: str) -> bool:
        key, eq, value = want.partition("=")
        return key in labels and (not eq or labels[key] == value)

    return lambda labels: all(has(labels, w) for w in carrying) and not any(has(labels, w) for w in not_carrying)


async def _stopped(client: Client, c: Container) -> bool:
    return stopped(c, await task_of(client, c.id))


def stopped(c: Container, task: Process | None) -> bool:
    """Not running, and not to be started again by the daemon's restart monitor (`task`: the
    container's, None when it has none)."""
    if state_of(task) not in ("created", "exited"):
        return False
    if task is None and restartpolicy.STARTED_AT_LABEL not in c.labels:
        return True  # never started
    status_text = c.labels.get(restartpolicy.EXIT_STATUS_LABEL, "0")
    status = task.exit_status if task is not None else int(status_text) if status_text.isdigit() else 0
    return not restartpolicy.should_restart(restartpolicy.State.of(c.labels), status)


async def prune_containers(client: Client, filters: Sequence[str] = ()) -> list[str]:
    """Remove every stopped container (and its snapshot) that `filters` match; their ids."""
    matches = label_matcher(filters)
    candidates = {c.id: c for c in await client.containers.list() if matches(c.labels)}

    async def remove(cid: str) -> str:
        if not await _stopped(client, candidates[cid]):
            return ""
        try:
            await remove_container(client, cid)
        except NotFound:  # removed meanwhile (an --rm container's daemon-side removal)
            return ""
        return cid

    removed, _ = await for_each(list(candidates), remove, at_once=AT_ONCE)  # a failure is said on stderr
    return [cid for cid in removed if cid]


async def prune_images(client: Client, *, all: bool, filters: Sequence[str] = ()) -> list[str]:
    """Remove the dangling images no container uses (`all`: every image no container uses); their names."""
    matches = label_matcher(filters)
    used = await image_users(client)
    removed = []
    for img in await client.images.list():
        if img.name in used or not matches(img.labels) or not (all or is_dangling(img.name)):
            continue
        try:
            await client.images.delete(img.name)
        except NotFound:
            continue
        removed.append(img.name)
    return removed


def _report(heading: str, removed: list[str]) -> None:
    if removed:
        print(f"Deleted {heading}:")
        for name in removed:
            print(name)
        print()


def _show(args: argparse.Namespace, key: str, heading: str, removed: list[str]) -> None:
    if args.format == "json":
        emit_json({key: removed})
    else:
        _report(heading, removed)


async def container_prune(client: Client, args: argparse.Namespace) -> int:
    label_matcher(args.filter)  # a bad filter fails before the question
    if not args.force and not confirm("This will remove all stopped containers."):
        return 0
    _show(args, "containers_deleted", "Containers", await prune_containers(client, args.filter))
    return 0


async def image_prune(client: Client, args: argparse.Namespace) -> int:
    label_matcher(args.filter)
    what = "all images without at least one container associated to them" if args.all else "all dangling images"
    if not args.force and not confirm(f"This will remove {what}."):
        return 0
    _show(args, "images_deleted", "Images", await prune_images(client, all=args.all, filters=args.filter))
    return 0


async def prune_networks(client: Client, filters: Sequence[str] = ()) -> list[str]:
    """Remove the unused networks Dockyard made that `filters` match (not the default one); their names."""
    if not filters:
        return await client.networks.prune()  # one call: the daemon knows which are in use
    matches = label_matcher(filters)
    networks, _ = await client.networks.list()
    removed = []
    for net in networks:
        if not net.managed or net.name == DEFAULT_NETWORK or not matches(net.labels):
            continue
        try:
            await client.networks.remove(net.name)
        except (NotFound, FailedPrecondition):  # gone meanwhile, or in use: not unused
            continue
        removed.append(net.name)
    return removed


async def system_prune(client: Client, args: argparse.Namespace) -> int:
    carrying, not_carrying = prune_filters(args.filter)  # a bad filter fails before the question
    what = ["all stopped containers", "all networks not used by at least one container",
            "all anonymous volumes not used by at least one container" if args.volumes else "",
            "all images without at least one container associated to them" if args.all else "all dangling images",
            "all dangling build cache"]
    if not args.force and not confirm("This will remove:\n" + "\n".join(f"  - {w}" for w in what if w)):
        return 0
    result: dict[str, Any] = {"containers_deleted": await prune_containers(client, args.filter)}
    result["networks_deleted"] = await prune_networks(client, args.filter)
    space = 0
    if args.volumes:
        result["volumes_deleted"], space = await client.volumes.prune(all=False, labels=carrying,
                                                                      labels_not=not_carrying)
    result["images_deleted"] = await prune_images(client, all=args.all, filters=args.filter)
    result["build_cache_deleted"] = []
    if not args.filter:  # build cache records carry no labels: a label filter matches none (as Docker's)
        pruned = await BuildAPI(client).prune(all=False)
        result["build_cache_deleted"] = pruned.removed
        space += pruned.reclaimed_bytes
    result["space_reclaimed"] = space
    if args.format == "json":
        emit_json(result)
        return 0
    for key, heading in (("containers_deleted", "Containers"), ("networks_deleted", "Networks"),
                         ("volumes_deleted", "Volumes"), ("images_deleted", "Images"),
                         ("build_cache_deleted", "build cache objects")):
        _report(heading, list(result.get(key) or []))
    print(f"Total reclaimed space: {human_size(space)}")
    return 0
