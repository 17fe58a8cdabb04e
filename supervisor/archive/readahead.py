"""Read a stream ahead on a thread of its own, so decompressing and hashing overlap the writes.

zlib, zstd and hashlib release the GIL on large buffers, and the applier spends its time in
system calls that release it too: with the producer on its own thread, a layer's bytes are
inflated and digested on one core while the files are written on the other.

    with ReadAhead(reader.read) as ahead:
        consume(ahead.read)       # chunks of about `chunk` bytes; b"" at the end
        ahead.finish()            # read the rest (tar padding) too, then stop

Whatever `read` raises is raised again from `ahead.read` (in order: after the chunks read
before it). Leaving the block without `finish()` (an error in the consumer) stops the
producer at its next chunk and waits for it, so `read` is never called after the block.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Self

CHUNK = 1 << 20
DEPTH = 4  # chunks buffered: enough to ride out a slow file create, little memory

_END = b""


class ReadAhead:
    def __init__(self, read: Callable[[int], bytes], *, chunk: int = CHUNK, depth: int = DEPTH) -> None:
        self._read = read
        self._chunk = chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False  # the consumer saw the end (or an error)
        self._thread = threading.Thread(target=self._produce, name="layer-read-ahead", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a producer waiting for room
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def read(self, n: int = -1) -> bytes:
        """The next chunk (its size is the producer's, whatever `n` asks); b"" at the end."""
        if self._done:
            return _END
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if not item:
            self._done = True
        return item

    def finish(self) -> None:
        """Consume to the end of the stream (its producer digests what it reads)."""
        while self.read():
            pass

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._read(self._chunk)
                self._put(data)
                if not data:
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
