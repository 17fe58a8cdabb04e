"""Where a container's log lives (`<root>/logs/<ns>/<id>/`), the `log.json` its bundle gets, and
its removal with the container."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dockyard_common import containerlog as cl
from dockyard_common.errors import InvalidArgument

log = logging.getLogger("dockyard.logs")
UNROTATED = 1 << 62  # max_size of a log the daemon never rotates


@dataclass(frozen=True)
class LogDefaults:
    max_size: int = 10 * 1024 * 1024
    max_file: int = 3


class LogStore:
    def __init__(self, root: Path, defaults: LogDefaults) -> None:
        self.root = root  # <root>/logs
        self.defaults = defaults

    def dir(self, namespace: str, cid: str) -> Path:
        return self.root / namespace / cid

    @staticmethod
    def wanted(labels: Mapping[str, str]) -> bool:
        return labels.get(cl.LABEL_DRIVER) == cl.DRIVER

    def config(self, namespace: str, cid: str, labels: Mapping[str, str]) -> dict[str, object] | None:
        """What the shim is told (None: the container asked for no log). Labels were checked by
        the client; bad ones (another client's) are InvalidArgument here."""
        if not self.wanted(labels):
            return None
        size = labels.get(cl.LABEL_MAX_SIZE)
        count = labels.get(cl.LABEL_MAX_FILE)
        file = labels.get(cl.LABEL_PATH)
        if file is not None:  # the client's file (CRI): rotated only when the labels ask
            return {"path": os.path.dirname(file), "file": os.path.basename(file),
                    "max_size": cl.parse_size(size) if size else UNROTATED,
                    "max_file": cl.parse_max_file(count) if count else 1}
        return {"path": str(self.dir(namespace, cid)),
                "max_size": cl.parse_size(size) if size else self.defaults.max_size,
                "max_file": cl.parse_max_file(count) if count else self.defaults.max_file}

    @staticmethod
    def _checked_file(labels: Mapping[str, str]) -> None:
        file = labels.get(cl.LABEL_PATH)
        if file is not None and (not os.path.isabs(file) or file.endswith("/")
                                 or os.path.basename(file) in (".", "..")):
            raise InvalidArgument(f"label {cl.LABEL_PATH}: {file!r} is not an absolute file path")

    def prepare(self, bundle: Path, namespace: str, cid: str, labels: Mapping[str, str]) -> None:
        """Before the shim starts: tell it (in the bundle) to log, and where."""
        self._checked_file(labels)
        config = self.config(namespace, cid, labels)
        if config is None:
            return
        os.makedirs(str(config["path"]), mode=0o700 if cl.LABEL_PATH not in labels else 0o755, exist_ok=True)
        tmp = bundle / f".{cl.CONFIG_FILE}.tmp"
        tmp.write_text(json.dumps(config))
        os.replace(tmp, bundle / cl.CONFIG_FILE)

    def remove(self, namespace: str, cid: str) -> None:
        """The container is deleted: so is its log (renamed aside first, so a half-removed log is
        never read as the container's)."""
        path = self.dir(namespace, cid)
        if not path.exists():
            return
        doomed = path.with_name(f".deleted-{cid}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)
