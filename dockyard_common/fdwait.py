"""Waiting for one descriptor to become readable, with poll(2).

select(2) refuses descriptors past 1023 (Python raises ValueError), and the daemon holds ~3
descriptors a running container with its open-files limit raised to match (supervisor/
__main__.py), so a pidfd or pipe it opens late may be numbered past select's range.
"""

from __future__ import annotations

import select


def readable(fd: int, timeout: float | None) -> bool:
    """Whether `fd` is readable, or hung up, within `timeout` seconds (0: right now; None: wait
    as long as it takes). A signal whose handler returns does not end the wait (PEP 475)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else timeout * 1000))
