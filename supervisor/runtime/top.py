"""A container's processes as ps(1) on the daemon's host shows them (docker top's daemon half).

    titles, rows = await top(tasks, "default", "web", ["-ef"])

The task's shim lists its processes (ListPids: host pids, since the daemon sees the host's pid
namespace); `ps` runs with the caller's options (default `-ef`), and only the rows whose PID
column names one of those processes are kept, as dockerd does. The last column (CMD) keeps its
spaces. Errors: NotFound without a task, InvalidArgument when ps refuses the options or its
output has no PID column, Unavailable without a ps on the host.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dockyard_common.errors import InvalidArgument, Unavailable
from supervisor.runtime.manager import TaskManager

DEFAULT_PS_ARGS = ("-ef",)
PS_TIMEOUT = 30.0


async def top(tasks: TaskManager, ns: str, cid: str, ps_args: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    task = tasks.get(ns, cid)  # NotFound: no task
    pids = {p.pid for p in await task.pids()}
    args = list(ps_args) or list(DEFAULT_PS_ARGS)
    for a in args:
        if "\0" in a:
            raise InvalidArgument("ps options: contain a NUL byte")
    try:
        proc = await asyncio.create_subprocess_exec(
            "ps", *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"})
    except FileNotFoundError:
        raise Unavailable("top: no ps(1) on the daemon's host") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PS_TIMEOUT)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode != 0:
        detail = " ".join(err.decode(errors="replace").split())[:300]
        raise InvalidArgument(f"ps {' '.join(args)}: {detail or f'exit status {proc.returncode}'}")
    return parse_ps(out.decode(errors="replace"), pids, args)


def parse_ps(text: str, pids: set[int], args: Sequence[str] = DEFAULT_PS_ARGS) -> tuple[list[str], list[list[str]]]:
    """(titles, rows of the processes in `pids`) of ps output; the last column keeps spaces."""
    lines = text.splitlines()
    titles = lines[0].split() if lines else []
    if "PID" not in titles:
        raise InvalidArgument(f"ps {' '.join(args)}: its output has no PID column")
    at = titles.index("PID")
    rows = []
    for line in lines[1:]:
        fields = line.split()
        if len(fields) <= at:
            continue
        if len(fields) > len(titles):
            fields = [*fields[: len(titles) - 1], " ".join(fields[len(titles) - 1 :])]
        try:
            pid = int(fields[at])
        except ValueError:
            continue
        if pid in pids:
            rows.append(fields)
    return titles, rows
