"""The Build RPC's handler (supervisor/services/build.py) with a stand-in executor: the order of
what it sends, errors as a last message and then a status, the size limit on the context, and the
private directory removed however the call ends. The real executor and daemon:
tests/integration/test_build_rpc.py."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from dockyard_api.dockyard.build.v1 import build_pb2 as pb
from dockyard_common.errors import FailedPrecondition
from supervisor.archive.context import ContextLimits
from supervisor.build.api import BuildEvent, BuildRequest, BuildResult, Progress
from supervisor.build.cachekey import SourceMemo
from supervisor.build.cacheprune import CacheUsage, PruneOptions, PruneReport
from supervisor.services.build import BuildService

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the context applier sets owners")


class Aborted(Exception):
    pass


class FakeContext:
    def __init__(self) -> None:
        self.sent: list[pb.BuildResponse] = []
        self.status: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("containerd-namespace", "default"),)

    async def write(self, message: pb.BuildResponse) -> None:
        self.sent.append(message)

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.status = (code, details)
        raise Aborted(details)


class FakeExecutor:
    def __init__(self, fail: Exception | None = None, block: asyncio.Event | None = None) -> None:
        self.fail = fail
        self.block = block
        self.seen: list[tuple[str, list[str], BuildRequest]] = []
        self.started = asyncio.Event()
        self.pruned: tuple[str, PruneOptions] | None = None

    async def build(self, namespace: str, context_dir: Path, request: BuildRequest,
                    progress: Progress, sources: SourceMemo | None = None) -> BuildResult:
        self.seen.append((namespace, sorted(p.name for p in context_dir.iterdir()), request))
        self.started.set()
        await progress(BuildEvent("step", 1, 1, "0", "FROM scratch"))
        if self.block is not None:
            await self.block.wait()
        if self.fail is not None:
            raise self.fail
        await progress(BuildEvent("done", 1, 1, text="ok"))
        return BuildResult("sha256:m", "sha256:c", ("docker.io/library/app:1",))

    async def prune(self, namespace: str, options: PruneOptions) -> PruneReport:
        self.pruned = (namespace, options)
        return PruneReport(("sha256:k", "cachemount:x"), 1234)

    async def cache_usage(self, namespace: str) -> CacheUsage:
        return CacheUsage((), 0, 0)


def context_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


async def requests(options: pb.BuildOptions, data: bytes, chunk: int = 700) -> AsyncIterator[pb.BuildRequest]:
    yield pb.BuildRequest(options=options)
    for i in range(0, len(data), chunk):
        yield pb.BuildRequest(chunk=data[i:i + chunk])


def kinds(ctx: FakeContext) -> list[str]:
    return [str(m.WhichOneof("response")) for m in ctx.sent]


OPTIONS = pb.BuildOptions(dockerfile=b"FROM scratch\n", tags=["app:1"], build_args=[pb.KeyValue(key="A", value="1")])


async def call(service: BuildService, reqs: AsyncIterator[pb.BuildRequest], ctx: FakeContext) -> None:
    handler: Any = service.Build
    await handler(reqs, ctx)


async def test_events_in_order_then_the_result(tmp_path: Path) -> None:
    executor = FakeExecutor()
    ctx = FakeContext()
    await call(BuildService(executor, tmp_path), requests(OPTIONS, context_tar()), ctx)
    assert kinds(ctx) == ["context", "event", "event", "result"]
    assert ctx.sent[0].context.entries == 1
    assert [m.event.kind for m in ctx.sent[1:3]] == ["step", "done"]
    assert ctx.sent[3].result.tags == ["docker.io/library/app:1"]
    ns, files, request = executor.seen[0]
    assert (ns, files, request.tags, request.build_args) == ("default", ["hello.txt"], ("app:1",), (("A", "1"),))
    assert list(tmp_path.iterdir()) == []


async def test_executor_error_is_a_last_message_then_the_status(tmp_path: Path) -> None:
    ctx = FakeContext()
    with pytest.raises(Aborted):
        await call(BuildService(FakeExecutor(fail=FailedPrecondition("step 1 exited with code 3")), tmp_path),
                   requests(OPTIONS, context_tar()), ctx)
    assert kinds(ctx) == ["context", "event", "error"]
    assert ctx.sent[-1].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert ctx.status == (grpc.StatusCode.FAILED_PRECONDITION, "step 1 exited with code 3: failed precondition")
    assert list(tmp_path.iterdir()) == []


async def test_context_size_limit(tmp_path: Path) -> None:
    ctx = FakeContext()
    executor = FakeExecutor()
    with pytest.raises(Aborted, match="larger than 1000 bytes"):
        await call(BuildService(executor, tmp_path, ContextLimits(max_bytes=1000)),
                   requests(OPTIONS, context_tar()), ctx)
    assert ctx.status is not None and ctx.status[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert not executor.seen
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("messages", [
    [pb.BuildRequest(chunk=b"x")],
    [pb.BuildRequest(options=OPTIONS), pb.BuildRequest(options=OPTIONS)],
    [],
], ids=["chunk-first", "options-twice", "nothing"])
async def test_protocol_errors(tmp_path: Path, messages: list[pb.BuildRequest]) -> None:
    async def reqs() -> AsyncIterator[pb.BuildRequest]:
        for m in messages:
            yield m

    ctx = FakeContext()
    with pytest.raises(Aborted, match="options"):
        await call(BuildService(FakeExecutor(), tmp_path), reqs(), ctx)
    assert ctx.status is not None and ctx.status[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert kinds(ctx)[-1] == "error"
    assert list(tmp_path.iterdir()) == []


async def test_cancelled_mid_build_removes_the_context(tmp_path: Path) -> None:
    executor = FakeExecutor(block=asyncio.Event())
    task = asyncio.create_task(call(BuildService(executor, tmp_path), requests(OPTIONS, context_tar()),
                                    FakeContext()))
    await executor.started.wait()
    assert [p.name.startswith("build-context-") for p in tmp_path.iterdir()] == [True]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert list(tmp_path.iterdir()) == []


async def test_prune_options_and_report(tmp_path: Path) -> None:
    executor = FakeExecutor()
    handler: Any = BuildService(executor, tmp_path).Prune
    resp = await handler(pb.PruneRequest(all=True, unused_for_seconds=3600, keep_storage=10), FakeContext())
    assert (list(resp.removed), resp.reclaimed_bytes) == (["sha256:k", "cachemount:x"], 1234)
    assert executor.pruned == ("default", PruneOptions(all=True, unused_for=timedelta(hours=1), keep_storage=10))
    ctx = FakeContext()
    with pytest.raises(Aborted, match="must not be negative"):
        await handler(pb.PruneRequest(keep_storage=-1), ctx)
    assert ctx.status is not None and ctx.status[0] == grpc.StatusCode.INVALID_ARGUMENT
