"""The cgroup directories a foreign shim leaves under our parent: a namespace's goes with its last task;
and a task's OOM kill counter (`oom_kills`), read by the daemon for Docker's State.OOMKilled.

Dockyard's shim removes the empty levels above a container's cgroup itself when it deletes it
(`dockyard_common.cgroups.prune_parents`, which the daemon uses too). A foreign shim
(containerd's runc shim) removes only the container's own cgroup, so `dockyard/<namespace>/`
would stay behind: the daemon prunes after such a task is deleted.

Races: a task being created at the same moment in the same namespace needs that directory. The
daemon knows every task it is creating (`hold`), and prunes synchronously on the event loop,
so no create it started can fall between its check and the rmdir; a level a create still needs
is kept. A cgroup that holds anything refuses rmdir (EBUSY), which ends the walk: nothing that
is in use goes. Only directories under `<hierarchy>/dockyard/` are ever touched.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
from typing import Any

from dockyard_common.cgroups import (
    CGROUP_ROOT,
    PARENT,
    host_version,
    normalize_path,
    prune_parents,
    v1_mounts,
    v2_mountpoint,
)
from dockyard_common.errors import DockyardError
from dockyard_common.jsonutil import JsonError, json_value

log = logging.getLogger("dockyard.runtime")


def cgroup_rel(spec: Any, namespace: str, cid: str, *, foreign: bool) -> str | None:
    """The task's cgroup relative to our parent (`default/web`), or None if it is not plain.

    Our shim places `linux.cgroupsPath` (default `/<namespace>/<id>`) under the parent; for a
    foreign shim the spec was already rewritten to `/dockyard/...` (`bundle.confine_cgroup`).
    """
    linux = spec.get("linux") if isinstance(spec, dict) else None
    path = linux.get("cgroupsPath") if isinstance(linux, dict) else None
    if not isinstance(path, str) or not path:
        path = f"/{namespace}/{cid}"
    try:
        rel = normalize_path(path)
    except DockyardError:
        return None
    if foreign:
        head, _, rest = rel.partition("/")
        if head != PARENT or not rest:
            return None  # not under our parent: not ours to prune
        rel = rest
    return rel


def read_cgroup_rel(config: str, namespace: str, cid: str, *, foreign: bool) -> str | None:
    """`cgroup_rel` of a bundle's config.json (None when it cannot be read)."""
    try:
        with open(config, "rb") as f:
            spec = json_value(f.read(), config)
    except (OSError, JsonError):
        return None
    return cgroup_rel(spec, namespace, cid, foreign=foreign)


@functools.cache
def _memory_counters() -> tuple[str, str]:
    """(our parent in the memory hierarchy, the file with its `oom_kill` counter); mounted at boot,
    so found once (an OSError is not cached)."""
    if host_version() == 2:
        return os.path.join(CGROUP_ROOT, PARENT), "memory.events"
    mount = v1_mounts().get("memory")
    if mount is None:
        raise FileNotFoundError("no cgroup v1 memory hierarchy is mounted")
    return os.path.join(mount, PARENT), "memory.oom_control"


def oom_kills(rel: str | None) -> int:
    """How many processes the kernel's OOM killer killed in the cgroup `rel` (below our parent;
    `cgroup_rel`) since it was made: `oom_kill` of memory.events (v2) or memory.oom_control (v1,
    kernel 4.13+). The shim makes the cgroup at a task's create and removes it at its delete, so
    this counts the current run. 0 when the cgroup is gone or unreadable. Blocking: small reads."""
    if not rel:
        return 0
    try:
        parent, name = _memory_counters()
        with open(os.path.join(parent, rel, name)) as f:
            text = f.read()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value) if value.strip().isdigit() else 0
    return 0


def _ancestors(rel: str) -> list[str]:
    """`a/b/c` -> [`a/b`, `a`]: the levels above a cgroup, deepest first."""
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


class CgroupPruner:
    """Removes the empty levels above deleted tasks' cgroups, never one a create needs."""

    def __init__(self, root: str = CGROUP_ROOT) -> None:
        self.root = root
        self._busy: collections.Counter[str] = collections.Counter()  # levels creates need

    @functools.cached_property
    def tops(self) -> list[str]:
        """Our parent in every hierarchy (a foreign runc makes its cgroup in each v1 one, and
        in the unified one of a hybrid host).

        Found once, on the first prune (an OSError is not cached, so the next one retries):
        the hierarchies are mounted at boot, and reading mountinfo on every prune would block
        the event loop for nothing.
        """
        if host_version(self.root) == 2:
            return [os.path.join(self.root, PARENT)]
        mounts = set(v1_mounts().values())
        if (unified := v2_mountpoint()) is not None:
            mounts.add(unified)
        return sorted(os.path.join(m, PARENT) for m in mounts)

    def hold(self, rel: str | None) -> list[str]:
        """Keep the levels above `rel` while a task is being created in it; give the result
        to `release` when the create is over."""
        levels = _ancestors(rel) if rel else []
        self._busy.update(levels)
        return levels

    def release(self, levels: list[str]) -> None:
        self._busy.subtract(levels)
        self._busy += collections.Counter()  # drop the zeros

    def prune(self, rel: str | None) -> None:
        """rmdir the empty levels above the (deleted) cgroup `rel`, deepest first.

        Synchronous on purpose (a few rmdirs): run on the event loop, it cannot interleave
        with a create registering itself.
        """
        if not rel:
            return
        try:
            tops = self.tops
        except OSError as exc:
            log.debug("cgroup prune of %s: %s", rel, exc)
            return
        for top in tops:
            try:
                prune_parents(os.path.join(top, rel), top, keep=lambda level: self._busy[level] > 0)
            except DockyardError:
                continue  # not inside `top`: not ours
