"""The stats hub: shims push cgroup samples in, client streams take them out.

Words:
- *source*: one task's feed of samples, keyed (namespace, container id). It exists from the
  task's creation (or its recovery after a restart) to its deletion, and is *ended* once its
  final sample (``end``) went out: the init exited, or the task went away without one.
- *subscription*: one client stream: a namespace, a `Selector` (ids, filters, all) and an
  interval. It holds the sources it selects; a task that starts later joins it.
- *control*: whoever starts and stops a shim's sampler (`SamplerControl`, the runtime's side).

One sampler per source, however many subscriptions: the hub asks the control to sample at the
smallest interval any of its subscribers wants, and to stop when none is left. A subscriber that
asked for a longer interval gets every sample at least its interval after the one before.

Slow readers never slow anything down. A subscription keeps at most one unsent sample per source
(a newer one replaces it) and at most `backlog` in all (the oldest goes); each replaced or
discarded sample counts in `dropped`, which every delivery carries. End markers are never
discarded. `push` never blocks and never fails.

Lifecycle and errors: `subscribe` raises InvalidArgument for a bad selector or interval and
NotFound for a listed id with no container; iterate the subscription until you stop, then
`close()` it (or use ``async with``). `close()` of the hub (daemon shutdown) ends every
subscription with Unavailable, so clients know to reconnect.

The hub speaks dataclasses: a sample's stats stay serialised (`Sample.payload`), opaque here.

    sub = await hub.subscribe("default", Selector(all=True), interval_ms=1000)
    async with sub:
        async for delivery in sub:          # or: samples, dropped = await sub.batch(linger)
            print(delivery.sample.id, delivery.dropped)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from dockyard_common.errors import DockyardError, InvalidArgument, NotFound, Unavailable
from supervisor.filters import Adaptor, Filter, adaptor_from, parse_all
from supervisor.network.counters import Counters

log = logging.getLogger("dockyard.stats")

DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 3_600_000
BACKLOG = 1024  # unsent samples a subscription may hold before the oldest go
# A sample this share of an interval early still counts as on time: the shim's timer jitters.
_SLACK = 0.1
CONTROL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Sample:
    namespace: str
    id: str
    timestamp_ns: int
    seq: int
    end: bool = False
    payload: bytes = b""  # a serialised dockyard.shim.v1.Sample; b"" for an end marker made here
    # A networked container's interface counters (loopback left out), read by the daemon as the
    # sample came in; None for a container without a network of its own (or an end marker).
    network: Mapping[str, Counters] | None = None


@dataclass(frozen=True)
class Delivery:
    sample: Sample
    dropped: int  # this subscription's dropped samples so far


@dataclass(frozen=True)
class Selector:
    """Which containers a subscription streams: any of ids, filters or all selects one."""

    ids: frozenset[str] = frozenset()
    filters: tuple[str, ...] = ()
    all: bool = False
    _match: Filter | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.ids or self.filters or self.all):
            raise InvalidArgument("stats stream needs container ids, filters or all")
        if any(not i for i in self.ids):
            raise InvalidArgument("container id must not be empty")
        texts = [t for t in self.filters if t]
        if texts:
            object.__setattr__(self, "_match", parse_all(texts))

    @property
    def needs_fields(self) -> bool:
        return self._match is not None

    def selects(self, cid: str, fields: Adaptor | None) -> bool:
        if self.all or cid in self.ids:
            return True
        if self._match is None:
            return False
        return self._match.match(fields or adaptor_from({"id": cid}))


class SamplerControl(Protocol):
    """The runtime's side: start or retime (watch) and stop (unwatch) a task's sampler."""

    async def watch(self, namespace: str, cid: str, interval_ms: int) -> None: ...

    async def unwatch(self, namespace: str, cid: str) -> None: ...


# The filter fields of a container (id, image, runtime.name, labels.*); NotFound when it is gone.
Describe = Callable[[str, str], Awaitable[Adaptor]]
# A container's network counters now (None: no network of its own). Called in the event loop
# per sample delivered: it must be quick and must not block.
NetworkCounters = Callable[[str, str], Mapping[str, Counters] | None]


class _Source:
    def __init__(self, namespace: str, cid: str) -> None:
        self.namespace = namespace
        self.id = cid
        self.subs: set[Subscription] = set()
        self.ended = False
        self.removed = False
        self.applied = 0  # the interval the shim samples at; 0: not sampling; -1: unknown
        self.failed_at = 0  # the interval a watch failed for (not retried until it changes)
        self.reconciling: asyncio.Task[None] | None = None
        self.last_seq = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.id)

    def wanted(self) -> int:
        if self.ended or self.removed or not self.subs:
            return 0
        return min(s.interval_ms for s in self.subs)


class Subscription:
    """One stream's view: an async iterator of Deliveries; never blocks the hub."""

    def __init__(self, hub: StatsHub, namespace: str, selector: Selector, interval_ms: int,
                 backlog: int = BACKLOG) -> None:
        self.hub = hub
        self.namespace = namespace
        self.selector = selector
        self.interval_ms = interval_ms
        self.backlog = backlog
        self.sources: set[_Source] = set()
        self.dropped = 0
        self.delivered = 0
        # Unsent samples, one per source (a newer one replaces it), plus its end marker apart:
        # the last ordinary sample is not lost to the final one that follows it closely.
        self._pending: OrderedDict[tuple[_Source, bool], Sample] = OrderedDict()
        self._due: dict[_Source, int] = {}  # when each source's next sample is due (ns)
        self._ready = asyncio.Event()
        self._error: DockyardError | None = None
        self._closed = False

    # -- the hub's side (synchronous: never blocks) ---------------------------------------

    def offer(self, src: _Source, sample: Sample) -> None:
        if self._closed:
            return
        if sample.end:
            self._due.pop(src, None)
        elif 0 < src.applied < self.interval_ms:
            # Sampled faster for another subscriber: take the samples on this one's own grid of
            # wall-clock multiples of its interval (samplers tick on the same grid).
            step = self.interval_ms * 1_000_000
            due = self._due.get(src)
            if due is not None and sample.timestamp_ns < due - step * _SLACK:
                return
            self._due[src] = (round(sample.timestamp_ns / step) + 1) * step
        key = (src, sample.end)
        if key in self._pending:
            self.dropped += 1  # an unsent one of the same container: the newer wins
        elif len(self._pending) >= self.backlog:
            self._discard_oldest()
        self._pending[key] = sample
        self._ready.set()

    def _discard_oldest(self) -> None:
        for key, queued in self._pending.items():
            if not queued.end:
                del self._pending[key]
                self.dropped += 1
                return

    def end(self, error: DockyardError | None) -> None:
        self._error = error
        self._closed = True
        self._ready.set()

    # -- the reader's side ----------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Delivery:
        while not self._pending:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        _src, sample = self._pending.popitem(last=False)
        self.delivered += 1
        return Delivery(sample, self.dropped)

    async def batch(self, linger: float = 0.0) -> tuple[list[Sample], int]:
        """(samples, dropped so far): everything pending once one is, after `linger` seconds
        more for others arriving with it. Raises as iteration does at the end."""
        first = await self.__anext__()
        if linger > 0 and not self._closed:
            await asyncio.sleep(linger)
        samples = [first.sample, *self._pending.values()]
        self.delivered += len(self._pending)
        self._pending.clear()
        return samples, self.dropped

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Leave the hub; the sources lose a subscriber (and their sampler, if it was the last)."""
        if not self._closed:
            self.end(None)
        self.hub._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class StatsHub:
    def __init__(self, describe: Describe | None = None, backlog: int = BACKLOG,
                 network: NetworkCounters | None = None) -> None:
        self.describe = describe
        self.backlog = backlog
        self.network = network
        self.control: SamplerControl | None = None
        self._sources: dict[tuple[str, str], _Source] = {}
        self._subs: set[Subscription] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._closed = False

    def bind(self, control: SamplerControl) -> None:
        self.control = control

    # -- tasks come and go (the task manager tells us) ------------------------------------

    def task_changed(self, namespace: str, cid: str, present: bool) -> None:
        """The task manager's observer: a task appeared (create, recovery) or went (delete, dead shim)."""
        if present:
            self.task_added(namespace, cid)
        else:
            self.task_removed(namespace, cid)

    def task_added(self, namespace: str, cid: str) -> None:
        old = self._sources.get((namespace, cid))
        if old is not None:
            self._remove(old)
        src = _Source(namespace, cid)
        self._sources[src.key] = src
        if any(s.namespace == namespace for s in self._subs):
            self._spawn(self._join(src))

    async def _join(self, src: _Source) -> None:
        subs = [s for s in self._subs if s.namespace == src.namespace]
        fields = await self._fields(src) if any(s.selector.needs_fields for s in subs) else None
        if src.removed:
            return
        for sub in subs:
            if sub in self._subs and sub.selector.selects(src.id, fields):
                self._attach(sub, src)
        self._reconcile(src)

    def task_removed(self, namespace: str, cid: str) -> None:
        src = self._sources.get((namespace, cid))
        if src is not None:
            self._remove(src)

    def _remove(self, src: _Source) -> None:
        """The task is gone: subscribers get an end marker unless its final sample came."""
        self._sources.pop(src.key, None)
        if not src.ended:
            src.ended = True
            marker = Sample(src.namespace, src.id, time.time_ns(), 0, end=True)
            for sub in list(src.subs):
                sub.offer(src, marker)
        src.removed = True
        for sub in list(src.subs):
            sub.sources.discard(src)
        src.subs.clear()
        src.applied = 0  # the shim's sampler went with its task

    # -- samples come in (the shims' sink) ------------------------------------------------

    def push(self, sample: Sample) -> None:
        src = self._sources.get((sample.namespace, sample.id))
        if src is None or src.ended:
            return  # a task we do not know (yet), or a late sample after its end
        src.last_seq = sample.seq
        if not src.subs:
            # Samples nobody asked for: a sampler a previous daemon started. Stop it.
            if src.applied == 0:
                src.applied = -1
                self._reconcile(src)
            return
        if self.network is not None and not sample.end and sample.network is None:
            # read only for samples someone takes, at the moment the cgroup's were taken
            sample = replace(sample, network=self.network(sample.namespace, sample.id))
        for sub in list(src.subs):
            sub.offer(src, sample)
        if sample.end:
            src.ended = True
            src.applied = 0  # the shim stops sampling after the final sample
            for sub in list(src.subs):
                sub.sources.discard(src)
            src.subs.clear()

    # -- subscriptions --------------------------------------------------------------------

    async def subscribe(self, namespace: str, selector: Selector, interval_ms: int = 0) -> Subscription:
        if self._closed:
            raise Unavailable("daemon shutting down")
        interval_ms = interval_ms or DEFAULT_INTERVAL_MS
        if not MIN_INTERVAL_MS <= interval_ms <= MAX_INTERVAL_MS:
            raise InvalidArgument(f"interval_ms {interval_ms} is outside {MIN_INTERVAL_MS}..{MAX_INTERVAL_MS}")
        if self.describe is not None:
            for cid in sorted(selector.ids):
                await self.describe(namespace, cid)  # NotFound for a container that does not exist
        sub = Subscription(self, namespace, selector, interval_ms, self.backlog)
        self._subs.add(sub)
        candidates = [s for s in self._sources.values() if s.namespace == namespace and not s.ended]
        if selector.needs_fields:
            found = await asyncio.gather(*(self._fields(s) for s in candidates))
        else:
            found = [None] * len(candidates)
        if self._closed:
            sub.end(Unavailable("daemon shutting down"))
            return sub
        for src, fields in zip(candidates, found, strict=True):
            if not src.ended and not src.removed and selector.selects(src.id, fields):
                self._attach(sub, src)
                self._reconcile(src)
        return sub

    def _attach(self, sub: Subscription, src: _Source) -> None:
        sub.sources.add(src)
        src.subs.add(sub)

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)
        for src in list(sub.sources):
            src.subs.discard(sub)
            self._reconcile(src)
        sub.sources.clear()

    async def _fields(self, src: _Source) -> Adaptor | None:
        if self.describe is None:
            return None
        try:
            return await self.describe(src.namespace, src.id)
        except NotFound:
            return None

    # -- the samplers ---------------------------------------------------------------------

    def _reconcile(self, src: _Source) -> None:
        """Bring the shim's sampler to what the subscribers want, one call at a time."""
        if src.reconciling is None or src.reconciling.done():
            src.reconciling = self._spawn(self._apply(src))

    async def _apply(self, src: _Source) -> None:
        while self.control is not None:
            want = src.wanted()
            if want == src.applied or (want and want == src.failed_at):
                return
            try:
                if want:
                    await asyncio.wait_for(self.control.watch(src.namespace, src.id, want), CONTROL_TIMEOUT)
                else:
                    await asyncio.wait_for(self.control.unwatch(src.namespace, src.id), CONTROL_TIMEOUT)
            except (DockyardError, TimeoutError) as exc:
                if not src.removed:
                    log.warning("stats of %s/%s: %s at %d ms failed: %s", src.namespace, src.id,
                                "watch" if want else "unwatch", want, exc)
                src.applied, src.failed_at = (0, want) if want else (0, 0)
                return
            if src.removed:
                return
            src.applied, src.failed_at = want, 0

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        job = asyncio.ensure_future(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)
        return job

    # -- shutdown -------------------------------------------------------------------------

    async def close(self) -> None:
        """End every subscription (Unavailable: the client should reconnect), stop the samplers."""
        self._closed = True
        for sub in list(self._subs):
            sub.end(Unavailable("daemon shutting down"))
            self._unsubscribe(sub)
        if self._jobs:
            await asyncio.wait(list(self._jobs), timeout=CONTROL_TIMEOUT)
        for job in list(self._jobs):
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job
