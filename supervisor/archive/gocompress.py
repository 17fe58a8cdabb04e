"""Layer compression through `dockyard-compress`: containerd's encoders, containerd's bytes.

A layer's digest is taken over its compressed bytes, and encoders differ in the bytes they
write for the same tar: zlib's deflate is not Go's compress/flate, libzstd is not klauspost's
zstd. containerd compresses with the Go ones, so for the same change to get the same layer
digest here, the daemon pipes the tar through `libexec/dockyard-compress` (a few lines of Go
over those encoders, built at install). Why not a port: docs/design-notes.md.

Contract
--------
- `find_helper()` -> the helper's path (on PATH), or None.
- `PipedCompressor(out, kind, helper)`: a writable stream; what is written is compressed into
  `out` (a thread copies the helper's output there). `close()` finishes the stream and raises
  what went wrong (the out stream's own OSError as is, e.g. ENOSPC; a failing helper as
  Internal). Leaving its `with` block on an exception ends the helper without waiting for it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
from types import TracebackType
from typing import BinaryIO

from dockyard_common.errors import Internal

HELPER = "dockyard-compress"
_CHUNK = 1 << 20


def find_helper() -> str | None:
    return shutil.which(HELPER)


class PipedCompressor:
    """`kind` ("gzip" or "zstd") compression of everything written, into `out`."""

    def __init__(self, out: BinaryIO, kind: str, helper: str) -> None:
        self._out = out
        self._proc = subprocess.Popen([helper, kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, close_fds=True)
        self._failure: BaseException | None = None
        self._copier = threading.Thread(target=self._copy, name="dockyard-compress-out", daemon=True)
        self._copier.start()
        self._closed = False

    def _copy(self) -> None:
        assert self._proc.stdout is not None
        try:
            while chunk := self._proc.stdout.read(_CHUNK):
                self._out.write(chunk)
        except BaseException as exc:  # handed to the writing thread in close()
            self._failure = exc
            self._proc.kill()  # or the helper blocks on a full pipe and the writer on its stdin
        finally:
            self._proc.stdout.close()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(data)
        except BrokenPipeError:  # the helper is gone: say why (its error, or the out stream's)
            self._closed = True
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
            self._finish()
            raise Internal("layer compression failed: the compressor stopped early") from None
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # _finish says why the helper went away
            self._proc.stdin.close()
        self._finish()

    def _finish(self) -> None:
        assert self._proc.stderr is not None
        self._copier.join()
        stderr = self._proc.stderr.read()
        self._proc.stderr.close()
        code = self._proc.wait()
        if self._failure is not None:
            raise self._failure
        if code != 0:
            reason = stderr.decode(errors="replace").strip() or f"exit status {code}"
            raise Internal(f"layer compression failed: {reason}")

    def abort(self) -> None:
        """End the helper and its copier without finishing the stream."""
        if self._closed:
            return
        self._closed = True
        self._proc.kill()
        for stream in (self._proc.stdin, self._proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._copier.join()
        self._proc.wait()

    def __enter__(self) -> PipedCompressor:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
