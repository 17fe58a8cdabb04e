"""Pulling the image of a `dock run` (or `dock containers create`) as Docker does, `--pull POLICY`:

    missing   pull when the image is not in the store (the CLI's default)
    always    pull every time, so a tag that moved on the registry is followed
    never     only what is in the store (what an SDK RunRequest does unless it asks)

The pull is `dock pull REF` without options (the daemon's Registry/Pull, unpacked; a loopback
registry that speaks plain HTTP is found to, as Docker does; this user's credentials from
`dock login` sent along), its progress on stderr so stdout keeps only what the command prints.
The progress views are dock/registryview.py's, as `dock pull`'s.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TextIO

from dockyard_common.errors import DockyardError, InvalidArgument

if TYPE_CHECKING:  # the pull's modules (registry, transfer: ~30 ms) load only when a run pulls
    from dock.client import Client
    from dock.registry import RegistryEvent, TransferDone
    from dock.registryview import ProgressView

MISSING, ALWAYS, NEVER = "missing", "always", "never"
POLICIES = (MISSING, ALWAYS, NEVER)


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise InvalidArgument(f"--pull {policy!r}: want one of {', '.join(POLICIES)}")
    return policy


def add_pull_option(p: argparse.ArgumentParser) -> None:
    """`--pull` of `dock run` and `dock containers create` (the CLI's default: missing, as Docker's)."""
    p.add_argument("--pull", choices=POLICIES, default=MISSING,
                   help="pull the image before the run: missing (when it is not in the store; default), "
                        "always, never (progress on stderr)")


# -- the pull of a run ----------------------------------------------------------------------------


class _Announced:
    """Docker's "Unable to find image 'X' locally", said only once the registry answers, so a
    pull that cannot even start fails in one line."""

    def __init__(self, out: TextIO, notice: str) -> None:
        self.out = out
        self.notice = notice
        self.view: ProgressView | None = None

    def event(self, ev: RegistryEvent) -> None:
        if self.view is None:
            if self.notice:
                print(self.notice, file=self.out, flush=True)
            from dock.registryview import progress_view

            self.view = progress_view(self.out)
        self.view.event(ev)

    def close(self) -> None:
        if self.view is not None:
            self.view.close()


async def pull_for_run(client: Client, ref: str, *, platform: str, snapshotter: str, missing: bool,
                       out: TextIO | None = None) -> TransferDone:
    """Pull `ref` as `dock pull --platform PLATFORM REF` would, unpacked into `snapshotter`, the
    progress on `out` (stderr). `missing`: because the store lacks it (said so, and said in
    the error when the pull fails)."""
    from dock.registry import TransferDone
    from dock.registryview import follow, pulled_line, stored_credentials
    from dockyard_common.codes import code_for, error_from_status

    out = sys.stderr if out is None else out
    user, secret = await stored_credentials(ref)
    events = client.registry.pull_stream(ref, platform=platform, snapshotter=snapshotter, username=user,
                                         secret=secret)
    view = _Announced(out, f"Unable to find image '{ref}' locally" if missing else "")
    try:
        done = await follow(events, view, TransferDone)
    except DockyardError as exc:
        # The daemon's kind of error (its base kind: a subclass may want other arguments), in words
        # that say it was the pull of this run that failed.
        why = f"not found locally, and pulling it failed: {exc}" if missing else f"pulling it failed: {exc}"
        raise error_from_status(code_for(exc), f'image "{ref}": {why}') from None
    if done is None:
        raise InvalidArgument(f'image "{ref}": the daemon\'s pull ended without a result')
    print(pulled_line(done), file=out, flush=True)
    return done
