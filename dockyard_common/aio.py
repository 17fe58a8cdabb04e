"""asyncio helpers the programs share."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import io
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import IO, TypeVar

T = TypeVar("T")
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux); Python names it only on some builds


async def uninterrupted(work: Awaitable[T], on_cancel: Callable[[], object] | None = None) -> T:
    """Await `work` to its end even when the caller is cancelled meanwhile: then `on_cancel` runs
    (e.g. setting a worker thread's stop flag), `work` is awaited out, and the cancellation is
    raised. A thread cannot be interrupted, so whoever cleans up after a cancellation (removes a
    snapshot, a directory) must not race work still inside it."""
    job = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(job)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        with contextlib.suppress(BaseException):
            await job
        raise


class BlockingReader(io.RawIOBase):
    """A file-like blocking reader over an async iterator of byte chunks, for a worker thread
    (tar extraction, layer apply) while the chunks arrive on the event loop `loop`."""

    def __init__(self, chunks: AsyncIterable[bytes], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._chunks = aiter(chunks)
        self._loop = loop
        self._buf = b""
        self._eof = False
        self._cancelled = False
        self._pending: concurrent.futures.Future[bytes] | None = None
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """From any thread: a read waiting for a chunk, and every later read, raise
        ReaderCancelled (a worker blocked on a client that sends nothing more can end)."""
        with self._lock:
            self._cancelled = True
            pending = self._pending
        if pending is not None:
            pending.cancel()

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        while not self._buf and not self._eof:
            with self._lock:
                if self._cancelled:
                    raise ReaderCancelled("the read was cancelled")
                self._pending = asyncio.run_coroutine_threadsafe(_next_chunk(self._chunks), self._loop)
            try:
                self._buf = self._pending.result()
            except StopAsyncIteration:
                self._eof = True
            except concurrent.futures.CancelledError:
                raise ReaderCancelled("the read was cancelled") from None
            finally:
                self._pending = None
        if n is None or n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def readable(self) -> bool:
        return True


class ReaderCancelled(OSError):
    """A BlockingReader's read after `cancel` (an OSError: readers of a stream expect those)."""


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    return await anext(chunks)


async def piped(write: Callable[[IO[bytes]], object], *, pipe_size: int = 0,
                error: Callable[[BaseException], BaseException] | None = None) -> AsyncIterator[bytes]:
    """What `write` writes, in pieces: it runs in a thread writing into a pipe, so memory stays
    flat whatever it writes; leaving the iteration early ends the writer (EPIPE). An error of
    the writer is raised (as `error` makes it, if given) once what it wrote has been read."""
    r, w = os.pipe()
    if pipe_size:
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, _F_SETPIPE_SZ, pipe_size)
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            with os.fdopen(w, "wb") as out:
                write(out)
        except BrokenPipeError:  # the reader stopped
            pass
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=writer, name="piped-writer", daemon=True)
    thread.start()
    try:
        while piece := await asyncio.to_thread(os.read, r, max(pipe_size, 64 << 10)):
            yield piece
        await asyncio.to_thread(thread.join)
        if failed:
            raise (error(failed[0]) if error is not None else failed[0])
    finally:
        os.close(r)  # a writer still writing gets EPIPE and ends
