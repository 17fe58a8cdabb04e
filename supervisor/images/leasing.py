"""A temporary lease for one multi-step job (import, unpack), deleted however the job ends.

    async with temporary_lease(lease_store, ns, on_release=collector.schedule) as lease:
        ...   # everything made with `lease` survives a collection until the block ends

containerd's clients do the same (`client.WithLease`): a lease with a 24-hour expiry, so even a
crashed daemon's leftovers go eventually. Creation and deletion are shielded from cancellation:
a caller cancelled mid-creation still gets the lease deleted once it exists.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from supervisor.errors import NotFound
from supervisor.metadata import leases
from supervisor.timeutil import now

log = logging.getLogger("dockyard.images")
LEASE_TTL = timedelta(hours=24)


@asynccontextmanager
async def temporary_lease(store: leases.LeaseStore, ns: str,
                          on_release: Callable[[], None] = lambda: None) -> AsyncIterator[str]:
    lease_id = leases.new_id()
    creating = asyncio.ensure_future(
        store.create(ns, lease_id, {leases.EXPIRE_LABEL: leases.format_rfc3339(now() + LEASE_TTL)}))
    try:
        await asyncio.shield(creating)
    except asyncio.CancelledError:
        await asyncio.shield(_release_after(store, ns, lease_id, creating, on_release))
        raise
    try:
        yield lease_id
    finally:
        await asyncio.shield(_release(store, ns, lease_id, on_release))


async def _release_after(store: leases.LeaseStore, ns: str, lease_id: str, creating: asyncio.Future[leases.Lease],
                         on_release: Callable[[], None]) -> None:
    try:
        await creating
    except BaseException:
        return  # never made
    await _release(store, ns, lease_id, on_release)


async def _release(store: leases.LeaseStore, ns: str, lease_id: str, on_release: Callable[[], None]) -> None:
    try:
        await store.delete(ns, lease_id)
    except NotFound:
        pass
    except Exception:  # it expires by itself; the job's own outcome matters more
        log.exception("could not delete temporary lease %s", lease_id)
    on_release()
