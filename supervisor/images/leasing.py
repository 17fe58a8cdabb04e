"""A temporary lease for one multi-step job (import, unpack), deleted however the job ends.

    async with temporary_lease(lease_store, ns, on_release=collector.schedule) as lease:
        ...   # everything made with `lease` survives a collection until the block ends

containerd's clients do the same (`client.WithLease`): a lease with a 24-hour expiry. The
lease is labelled as this daemon process's own (`JOB_LABEL` = `INSTANCE`), so a daemon started
after a crash deletes at once the leases of jobs that died with the old one (`release_stale`)
instead of keeping what they wrote for a day, which matters most when that filled the disk.
Creation and deletion are shielded from cancellation: a caller cancelled mid-creation still
gets the lease deleted once it exists.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from dockyard_common.errors import NotFound
from supervisor.metadata import leases
from supervisor.timeutil import now

log = logging.getLogger("dockyard.images")
LEASE_TTL = timedelta(hours=24)
# Marks a lease as a job of the daemon process whose INSTANCE is the value.
JOB_LABEL = "dockyard.io/daemon-job"
INSTANCE = uuid.uuid4().hex


def job_labels() -> dict[str, str]:
    """Labels of a temporary lease of this daemon process: expiry and owner."""
    return {leases.EXPIRE_LABEL: leases.format_rfc3339(now() + LEASE_TTL), JOB_LABEL: INSTANCE}


async def release_stale(store: leases.LeaseStore, on_release: Callable[[], None] = lambda: None) -> int:
    """Delete the temporary leases of earlier daemon processes (nobody can be using them);
    returns how many went. For start-up."""
    gone = 0
    for ns, lease_id, owner in await store.labelled(JOB_LABEL):
        if owner == INSTANCE:
            continue
        try:
            await store.delete(ns, lease_id)
        except NotFound:
            continue
        log.info("deleted lease %s in namespace %s of a job that ended with an earlier daemon", lease_id, ns)
        gone += 1
    if gone:
        on_release()
    return gone


@asynccontextmanager
async def temporary_lease(store: leases.LeaseStore, ns: str,
                          on_release: Callable[[], None] = lambda: None) -> AsyncIterator[str]:
    lease_id = leases.new_id()
    creating = asyncio.ensure_future(
        store.create(ns, lease_id, job_labels()))
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
