"""Task events from the shim to the daemon: `Events/Forward` over ttrpc to TTRPC_ADDRESS.

`publish(topic, event)` never blocks and never fails: the envelope (timestamped now) joins a
queue that one background task forwards in order, connecting lazily and reconnecting after a
failure. An envelope that still cannot be delivered after `MAX_ATTEMPTS` is dropped (and
logged), as containerd's shim publisher gives up after its retries. `close()` flushes what is
queued (bounded by a timeout) before the shim exits, so the last /tasks/delete is not lost.

Type URLs are bare full names (`containerd.events.TaskExit`), as containerd's typeurl writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message

from dockyard_api.containerd.services.ttrpc.events.v1 import events_pb2
from dockyard_common.ttrpc import TTRPCClient

log = logging.getLogger("dockyard.shim.events")

SERVICE = "containerd.services.events.ttrpc.v1.Events"
NAMESPACE_KEY = "containerd-namespace-ttrpc"
MAX_ATTEMPTS = 8
CALL_TIMEOUT = 5.0


class Publisher:
    def __init__(self, address: str, namespace: str) -> None:
        self.address = address
        self.namespace = namespace
        self._queue: deque[events_pb2.ForwardRequest] = deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._client: TTRPCClient | None = None

    def publish(self, topic: str, event: Message) -> None:
        stamp = timestamp_pb2.Timestamp()
        stamp.FromNanoseconds(time.time_ns())
        env = events_pb2.Envelope(timestamp=stamp, namespace=self.namespace, topic=topic,
                                  event=any_pb2.Any(type_url=event.DESCRIPTOR.full_name,
                                                    value=event.SerializeToString()))
        if not self.address:
            log.debug("no TTRPC_ADDRESS: dropping %s", topic)
            return
        self._queue.append(events_pb2.ForwardRequest(envelope=env))
        self._idle.clear()
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="event-forwarder")

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _run(self) -> None:
        attempts = 0
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            req = self._queue[0]
            try:
                await self._forward(req)
            except Exception as exc:  # a daemon that is away (or a bug): never lose the forwarder
                attempts += 1
                await self._disconnect()
                if attempts >= MAX_ATTEMPTS:
                    log.error("dropping event %s after %d attempts: %s", req.envelope.topic, attempts, exc)
                    self._queue.popleft()
                    attempts = 0
                    continue
                await asyncio.sleep(min(0.05 * 2**attempts, 2.0))
                continue
            self._queue.popleft()
            attempts = 0

    async def _forward(self, req: events_pb2.ForwardRequest) -> None:
        if self._client is None or self._client.closed:
            self._client = await TTRPCClient.connect(self.address, timeout=CALL_TIMEOUT)
        await self._client.call(SERVICE, "Forward", req, empty_pb2.Empty, timeout=CALL_TIMEOUT,
                                metadata={NAMESPACE_KEY: self.namespace})

    async def _disconnect(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (for at most `timeout` seconds), then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout)
            if self._queue:
                log.error("shim exiting with %d undelivered event(s)", len(self._queue))
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()
