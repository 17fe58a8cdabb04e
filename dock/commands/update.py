"""dock update: change the resources and restart policy of containers (docker update).

    dock update --memory 512m --cpus 1.5 web      # the running task's cgroup at once, and its spec
    dock update --pids-limit 200 --cpu-shares 512 --cpuset-cpus 0-1 web db
    dock update --restart on-failure:3 web        # the restart policy labels

A live task (running, paused or created) gets the new limits through Tasks/Update; the
container record's spec gets them too, so the next start (`dock start`, `dock restart`, the
daemon's restart policy) keeps them. The kernel has the last word: a memory limit below what the
container uses now fails, and then the record is left as it was.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, replace
from typing import Any

from dock import runflags
from dock.args import containers_arg, int_in, positive_float
from dock.client import Client
from dock.commands.verbs import each, task_of
from dock.containers import oci_spec_any
from dock.lookup import resolve
from dock.oci import parse_bytes, with_cpus, with_memory_limit, with_pids_limit
from dock.tasks import Status
from dockyard_common import autoremove, restartpolicy
from dockyard_common.errors import InvalidArgument
from dockyard_common.jsonutil import json_object
from dockyard_common.ocispec import Spec, resources_of
from dockyard_common.types import Container


def register(sub: Any) -> None:
    p = sub.add_parser("update", help="change containers' resources (live) and restart policy")
    p.add_argument("--memory", "-m", default=None, metavar="BYTES", help="memory limit, e.g. 268435456 or 1g")
    p.add_argument("--memory-swap", default=None, metavar="BYTES",
                   help="memory and swap together, e.g. 1g (-1: unlimited swap); needs a memory limit")
    p.add_argument("--cpus", type=positive_float, default=None, help="CPU quota in CPUs, e.g. 0.5")
    p.add_argument("--cpu-shares", type=int_in(2, 262144), default=None, metavar="N", help="relative CPU weight")
    p.add_argument("--cpuset-cpus", default="", metavar="CPUS", help="the CPUs it may run on, e.g. 0-1,3")
    p.add_argument("--pids-limit", type=int_in(-1), default=None, metavar="N",
                   help="most processes at once (-1: no limit)")
    p.add_argument("--restart", default=None, metavar="POLICY",
                   help="no, always, unless-stopped or on-failure[:max-retries]")
    containers_arg(p, "refs", nargs="+", metavar="CONTAINER")
    p.set_defaults(handler=update)


@dataclass(frozen=True)
class Changes:
    """What `dock update` was asked to change; None (or "") leaves it as it is."""

    memory: int | None = None
    memory_swap: int | None = None  # memory + swap; -1: unlimited swap
    cpus: float | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str = ""
    pids_limit: int | None = None
    restart: restartpolicy.Policy | None = None

    @property
    def resources(self) -> bool:
        return any(v not in (None, "") for v in (self.memory, self.memory_swap, self.cpus, self.cpu_shares,
                                                 self.cpuset_cpus, self.pids_limit))


def parse_changes(args: argparse.Namespace) -> Changes:
    """The flags, checked once before any container is touched."""
    changes = Changes(
        memory=parse_bytes(args.memory) if args.memory is not None else None,
        memory_swap=runflags.parse_memory_swap(args.memory_swap),
        cpus=args.cpus, cpu_shares=args.cpu_shares,
        cpuset_cpus=runflags.parse_cpuset(args.cpuset_cpus) if args.cpuset_cpus else "",
        pids_limit=args.pids_limit,
        restart=restartpolicy.parse(args.restart) if args.restart is not None else None)
    if not changes.resources and changes.restart is None:
        raise InvalidArgument("dock update: give at least one of --memory, --memory-swap, --cpus, --cpu-shares, "
                              "--cpuset-cpus, --pids-limit or --restart")
    return changes


def apply_resources(spec: Spec, changes: Changes) -> dict[str, Any]:
    """Set `changes` in `spec`'s linux.resources, checked as `dock run` checks its flags; returns
    the sections of linux.resources that changed, whole (what Tasks/Update is given: the shim
    writes what they name, so the limits that belong together, memory and swap, go together)."""
    memory_before = resources_of(spec).get("memory") or {}
    swap = memory_before.get("swap")
    if changes.memory is not None:
        with_memory_limit(spec, changes.memory)
        if changes.memory_swap is None and isinstance(swap, int) and 0 < swap < changes.memory:
            raise InvalidArgument(f"--memory {changes.memory} is above the container's memory+swap limit {swap}: "
                                  "update --memory-swap at the same time")
    if changes.cpus is not None:
        with_cpus(spec, changes.cpus)
    if changes.pids_limit is not None:
        with_pids_limit(spec, changes.pids_limit)
    runflags.apply(spec, runflags.RunFlags(cpu_shares=changes.cpu_shares, cpuset_cpus=changes.cpuset_cpus,
                                           memory_swap=changes.memory_swap))
    touched = {"memory": changes.memory is not None or changes.memory_swap is not None,
               "cpu": changes.cpus is not None or changes.cpu_shares is not None or bool(changes.cpuset_cpus),
               "pids": changes.pids_limit is not None}
    resources = resources_of(spec)
    return {section: copy.deepcopy(resources[section]) for section, changed in touched.items() if changed}


def restart_labels(c: Container, ref: str, policy: restartpolicy.Policy) -> tuple[dict[str, str], list[str]]:
    """The container's labels with `policy` in place of its restart policy, and the field paths
    Containers/Update needs (a path whose label is gone removes it)."""
    if policy.restarts and autoremove.LABEL in c.labels:
        raise InvalidArgument(f"cannot give container {ref} the restart policy {policy}: it is removed when it "
                              "exits (--rm)")
    names = (restartpolicy.POLICY_LABEL, restartpolicy.STATUS_LABEL)
    labels = {k: v for k, v in c.labels.items() if k not in names} | restartpolicy.labels_for(policy)
    return labels, [f"labels.{name}" for name in names]


async def update_container(client: Client, ref: str, changes: Changes) -> str:
    c = await resolve(client, ref)
    paths: list[str]
    record, paths = c, []  # the fields Containers/Update is to store
    if changes.restart is not None:  # checked before anything changes
        labels, paths = restart_labels(c, ref, changes.restart)
        record = replace(record, labels=labels)
    if changes.resources:
        if c.spec is None:
            raise InvalidArgument(f"container {ref} has no spec to update")
        spec = json_object(c.spec.value, f"container {ref}'s spec", InvalidArgument)
        sections = apply_resources(spec, changes)
        task = await task_of(client, c.id)
        if task is not None and task.status != Status.STOPPED:  # live limits first: the kernel may refuse them
            await client.tasks.update(c.id, sections)
        record, paths = replace(record, spec=oci_spec_any(spec)), [*paths, "spec"]
    await client.containers.update(record, paths)
    return ref


async def update(client: Client, args: argparse.Namespace) -> int:
    changes = parse_changes(args)
    return await each(args.refs, lambda ref: update_container(client, ref, changes))
