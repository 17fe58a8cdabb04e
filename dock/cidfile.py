"""Docker's --cidfile: the new container's id written to a file that must not exist yet (so two runs
never share one), removed again when the run fails before it is done."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from dockyard_common.errors import AlreadyExists, InvalidArgument


@contextlib.contextmanager
def written(path: str, cid: str) -> Iterator[None]:
    if not path:
        yield
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        raise AlreadyExists(f"--cidfile {path}: the file exists (a container of another run?)") from None
    except OSError as exc:
        raise InvalidArgument(f"--cidfile {path}: {exc.strerror or 'cannot be written'}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(cid)
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
