"""containerd.services.content.v1.Content over the namespaced content store.

Write follows containerd's server, message for message (see shared/reference/ctr-calls.md):
the first message names the ref (and maybe `total`/`expected`) and opens the writer, which
fails the stream with ALREADY_EXISTS when the namespace already has `expected`; then every
request gets exactly one response: STAT reports the ingest, WRITE appends `data` at `offset`
(0 with bytes written restarts the ingest; any other offset must be the current one, else
OUT_OF_RANGE), COMMIT appends any data, then verifies and records the blob and ends the call.
`total` and `expected` are taken from any message. A half-close without COMMIT keeps the
ingest for a later resume, as does a client cancelling; the writer is always closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from dockyard_api.containerd.events import content_pb2 as events_pb
from dockyard_api.containerd.services.content.v1 import content_pb2 as pb
from dockyard_api.containerd.services.content.v1 import content_pb2_grpc as pb_grpc
from dockyard_common.errors import AlreadyExists, InvalidArgument, NotFound, OutOfRange
from supervisor.content.store import Info, Status
from supervisor.events import Exchange
from supervisor.metadata.content import NamespacedContentStore
from supervisor.services.context import lease_of, namespace_of
from supervisor.services.events import publish
from supervisor.services.status import rpc, rpc_bidi, rpc_stream

READ_CHUNK = 1 << 20  # containerd's buffer; well under the 16 MiB message cap of clients
LIST_BATCH = 100  # infos per List response, as containerd batches them


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts(value: datetime) -> timestamp_pb2.Timestamp:
    # Timestamp.FromDatetime, without its slower arithmetic: Info is answered on every ctr run.
    since = (value if value.tzinfo is not None else value.replace(tzinfo=UTC)) - _EPOCH
    return timestamp_pb2.Timestamp(seconds=since.days * 86400 + since.seconds, nanos=since.microseconds * 1000)


def _info_pb(info: Info) -> pb.Info:
    return pb.Info(digest=info.digest, size=info.size, created_at=_ts(info.created_at),
                   updated_at=_ts(info.updated_at), labels=info.labels)


def _status_pb(st: Status) -> pb.Status:
    return pb.Status(started_at=_ts(st.started_at), updated_at=_ts(st.updated_at), ref=st.ref,
                     offset=st.offset, total=st.total, expected=st.expected)


class ContentService(pb_grpc.ContentServicer):
    def __init__(self, store: NamespacedContentStore, events: Exchange) -> None:
        self.store = store
        self.events = events

    @rpc
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        return pb.InfoResponse(info=_info_pb(await self.store.info(namespace_of(context), request.digest)))

    @rpc
    async def Update(self, request: pb.UpdateRequest, context: grpc.aio.ServicerContext) -> pb.UpdateResponse:
        info = await self.store.update(namespace_of(context), request.info.digest, dict(request.info.labels),
                                       list(request.update_mask.paths))
        return pb.UpdateResponse(info=_info_pb(info))

    @rpc_stream
    async def List(self, request: pb.ListContentRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[pb.ListContentResponse]:
        found = await self.store.list(namespace_of(context), list(request.filters))
        for start in range(0, len(found), LIST_BATCH):
            yield pb.ListContentResponse(info=[_info_pb(i) for i in found[start:start + LIST_BATCH]])

    @rpc
    async def Delete(self, request: pb.DeleteContentRequest, context: grpc.aio.ServicerContext
                     ) -> empty_pb2.Empty:
        ns = namespace_of(context)
        await self.store.delete(ns, request.digest)
        publish(self.events, ns, "/content/delete", events_pb.ContentDelete(digest=request.digest))
        return empty_pb2.Empty()

    @rpc_stream
    async def Read(self, request: pb.ReadContentRequest, context: grpc.aio.ServicerContext
                   ) -> AsyncIterator[pb.ReadContentResponse]:
        ns = namespace_of(context)
        info = await self.store.info(ns, request.digest)
        offset = max(request.offset, 0)
        if offset > info.size:
            raise OutOfRange(f"read past object length {info.size} bytes")
        # `size` is how much to read, not the blob's size: 0 (or too much) means to the end.
        size = request.size
        if size <= 0 or offset + size > info.size:
            size = info.size - offset
        end = offset + size
        async with await self.store.reader(ns, request.digest) as r:
            while offset < end:
                data = await r.read_at(offset, min(READ_CHUNK, end - offset))
                if not data:
                    break
                yield pb.ReadContentResponse(offset=offset, data=data)
                offset += len(data)

    @rpc
    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusResponse:
        return pb.StatusResponse(status=_status_pb(await self.store.status(namespace_of(context), request.ref)))

    @rpc
    async def ListStatuses(self, request: pb.ListStatusesRequest, context: grpc.aio.ServicerContext
                           ) -> pb.ListStatusesResponse:
        found = await self.store.list_statuses(namespace_of(context), list(request.filters))
        return pb.ListStatusesResponse(statuses=[_status_pb(s) for s in found])

    @rpc
    async def Abort(self, request: pb.AbortRequest, context: grpc.aio.ServicerContext) -> empty_pb2.Empty:
        await self.store.abort(namespace_of(context), request.ref)
        return empty_pb2.Empty()

    @rpc_bidi
    async def Write(self, requests: AsyncIterator[pb.WriteContentRequest], context: grpc.aio.ServicerContext
                    ) -> AsyncIterator[pb.WriteContentResponse]:
        incoming = aiter(requests)
        req = await anext(incoming, None)
        if req is None:
            return
        # Checked after the first read, so the client's first write never races our status.
        ns = namespace_of(context)
        if not req.ref:
            raise InvalidArgument("first message must have a reference")
        ref, total, expected = req.ref, req.total, req.expected
        writer = await self.store.writer(ns, ref, total=total, expected=expected, lease=lease_of(context))
        first = True
        try:
            while True:
                if req.expected:
                    expected = req.expected
                    # Checked again on later messages: another writer may have recorded it meanwhile.
                    if not first and await self.store.exists(ns, expected):
                        await writer.close()
                        try:
                            await self.store.abort(ns, ref)
                        except NotFound:
                            pass
                        raise AlreadyExists(f"content {expected}")
                if req.total < 0:
                    raise InvalidArgument(f"total {req.total} must not be negative")
                if req.total > 0:
                    total = req.total
                first = False
                st = writer.status()
                resp = pb.WriteContentResponse(action=req.action, offset=st.offset, total=total or st.total)
                if req.action == pb.STAT:
                    resp.digest = writer.digest()
                    resp.started_at.FromDatetime(st.started_at)
                    resp.updated_at.FromDatetime(st.updated_at)
                elif req.action in (pb.WRITE, pb.COMMIT):
                    if req.offset < 0:
                        raise InvalidArgument(f"write @{req.offset}: offset must not be negative")
                    if req.offset > 0 and req.offset != st.offset:
                        raise OutOfRange(f"write @{req.offset} must occur at current offset {st.offset}")
                    if req.offset == 0 and st.offset > 0:
                        await writer.truncate(0)  # the client starts over
                        resp.offset = 0
                    data = req.data  # each access copies the bytes out of the message: once only
                    if data:
                        resp.offset = await writer.write(data, resp.offset)
                    if req.action == pb.COMMIT:
                        await writer.commit(total, expected, dict(req.labels))
                    resp.digest = writer.digest()
                else:
                    raise InvalidArgument(f"unknown write action {req.action}")
                yield resp
                if req.action == pb.COMMIT:
                    return
                req = await anext(incoming, None)
                if req is None:
                    return  # half-closed without commit: the ingest stays for a resume
        finally:
            await writer.close()
