"""How registry transfers show their progress: a line per state change, or rich bars on a terminal
(`dock pull`, `dock push`, the pull of a `dock run`); `follow` reads a transfer's event stream into a
view (also `dock images import`'s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol, TextIO, TypeVar

from dock.output import human_size
from dock.registry import BlobProgress, RegistryEvent, Resolved, TransferDone, credentials_for
from dock.transfer import LayerProgress, UnpackResult

R = TypeVar("R")



class ProgressView(Protocol):
    def event(self, ev: Any) -> None: ...

    def close(self) -> None: ...


class LineProgress:
    """One line per state change (not a terminal)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.states: dict[str, str] = {}

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def event(self, ev: RegistryEvent) -> None:
        if isinstance(ev, Resolved):
            self._say(f"{ev.name}: resolved to {ev.target.digest} ({ev.target.media_type}) on {ev.host}")
        elif isinstance(ev, BlobProgress):
            if self.states.get(ev.ref) == ev.state:
                return
            self.states[ev.ref] = ev.state
            if ev.state == "resuming":
                self._say(f"{ev.ref}: resuming at {human_size(ev.offset)} of {human_size(ev.total)}")
            elif ev.state != "waiting":
                self._say(f"{ev.ref}: {ev.state} ({human_size(ev.total)})")
        elif isinstance(ev, LayerProgress) and ev.state != "extracting":
            self._say(f"layer {ev.index + 1}/{ev.total} {ev.layer.digest}: {ev.state}")
        elif isinstance(ev, UnpackResult):
            self._say(f"unpacked into {ev.snapshotter} as {ev.chain_id}")

    def close(self) -> None:
        pass


class BarProgress:
    """A rich progress bar per blob (a terminal)."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TextColumn("{task.fields[state]}"), console=Console(file=out))
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def event(self, ev: RegistryEvent) -> None:
        if isinstance(ev, Resolved):
            self.progress.console.print(f"{ev.name}: {ev.target.digest}")
        elif isinstance(ev, BlobProgress):
            task = self.tasks.get(ev.ref)
            if task is None:
                kind, _, digest = ev.ref.partition("-")
                label = f"{kind} {digest.removeprefix('sha256:')[:12]}"
                task = self.tasks[ev.ref] = self.progress.add_task(label, total=ev.total or None, state=ev.state)
            self.progress.update(task, completed=ev.offset, state=ev.state)
        elif isinstance(ev, LayerProgress) and ev.state != "extracting":
            self.progress.console.print(f"layer {ev.index + 1}/{ev.total} {ev.layer.digest[:19]} {ev.state}")

    def close(self) -> None:
        self.progress.stop()


def progress_view(out: TextIO) -> ProgressView:
    return BarProgress(out) if out.isatty() else LineProgress(out)


async def follow(events: AsyncIterator[Any], view: ProgressView | None, result: type[R]) -> R | None:
    """Show a transfer's events in `view` (None: quietly); its `result` event (TransferDone of a
    pull or push, ImportResult of an import), None if it sent none."""
    done = None
    try:
        async for ev in events:
            if isinstance(ev, result):
                done = ev
            elif view is not None:
                view.event(ev)
    finally:
        if view is not None:
            view.close()
    return done


def pulled_line(done: TransferDone) -> str:
    return (f"pulled {done.name} {done.target.digest} ({human_size(done.bytes_transferred)} fetched"
            + (f", unpacked into {done.snapshotter}" if done.chain_id else "") + ")")


async def stored_credentials(ref: str) -> tuple[str, str]:
    """What `dock login` stored for the registry of `ref`, else anonymous ("", "")."""
    # (a thread: a credential helper may take a while to answer)
    creds = await asyncio.to_thread(credentials_for, ref)
    return (creds.username, creds.secret) if creds is not None else ("", "")
