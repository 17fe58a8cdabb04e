"""Client-streaming uploads: a first request, then the data in chunks, with progress.

Import, build and copy-in all send one options message and then a tar in pieces while the
daemon streams answers back; this is that loop once."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Generic, TypeVar

import grpc

from dockyard_common.errors import DockyardError, InvalidArgument

if TYPE_CHECKING:
    from dock.client import Client

CHUNK = 1 << 20  # per message; far below the 16 MiB message cap

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes] | AsyncIterable[bytes] | Iterable[bytes]

Request = TypeVar("Request")


@dataclass
class Sent:
    """Bytes of the source this client has sent so far (for a progress bar)."""

    sent: int


async def chunks(source: Source) -> AsyncIterator[bytes]:
    """The source in CHUNK pieces (the last one shorter), whatever it comes as; file reads run
    off the event loop."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        for i in range(0, len(data), CHUNK):
            yield data[i:i + CHUNK]
        return
    if isinstance(source, str | os.PathLike):
        f = await asyncio.to_thread(open, source, "rb")
        try:
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
        finally:
            f.close()
        return
    if hasattr(source, "read"):
        while chunk := await asyncio.to_thread(source.read, CHUNK):  # type: ignore[union-attr]
            yield chunk
        return
    # Pieces are gathered into CHUNK-sized messages: a tar written file by file comes out of its
    # pipe a few KiB at a time, and a message costs the same on both sides whatever its size
    # (20,000 small files were ~1,800 messages, most of the upload's time).
    buf = bytearray()
    if isinstance(source, AsyncIterable):
        async for piece in source:
            buf += piece
            while len(buf) >= CHUNK:
                yield bytes(buf[:CHUNK])
                del buf[:CHUNK]
    else:
        for piece in source:
            buf += piece
            while len(buf) >= CHUNK:
                yield bytes(buf[:CHUNK])
                del buf[:CHUNK]
    if buf:
        yield bytes(buf)


@dataclass
class Upload(Generic[Request]):
    """`method(requests)` is a stream-stream call that takes `first` (and `more`), then
    `chunk(data)` per piece."""

    method: Callable[..., Any]
    first: Request
    chunk: Callable[[bytes], Request]
    more: Sequence[Request] = ()

    async def run(self, client: Client, source: Source) -> AsyncIterator[Sent | Any]:
        """Yield Sent progress and the daemon's answers as they come. A failure reading the
        source is raised as itself, not as the cancelled call it causes; leaving early cancels."""
        sent = asyncio.Queue[int]()
        failed: list[BaseException] = []

        async def requests() -> AsyncIterator[Request]:
            yield self.first
            for request in self.more:
                yield request
            total = 0
            try:
                async for data in chunks(source):
                    yield self.chunk(data)
                    total += len(data)
                    sent.put_nowait(total)
            except Exception as exc:  # grpc cancels the call; the caller should see this instead
                failed.append(exc)
                raise

        call = self.method(requests(), metadata=client.metadata(), timeout=client.timeout)
        try:
            async for message in call:
                while not sent.empty():
                    yield Sent(sent.get_nowait())
                yield message
        except grpc.aio.AioRpcError as exc:
            if failed:
                raise failed[0] from None
            raise client._error(exc) from None
        except asyncio.CancelledError:
            if failed:
                raise failed[0] from None
            raise
        finally:
            call.cancel()


def local_error(exc: BaseException, what: str = "") -> BaseException:
    """A failure reading local files, as the user's error: `what` then the path and the reason."""
    if isinstance(exc, DockyardError):
        return exc
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return InvalidArgument(f"{what}{where}{exc.strerror or exc}")
    return InvalidArgument(f"{what}{exc}")
