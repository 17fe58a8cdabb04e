"""Container logs: where they live and what the shim is told (`store`), reading them (`reader`).

The shim writes them (format: dockyard_common/containerlog.py); the daemon only reads, so nothing
here is in the path of a container's output.
"""

from supervisor.logs.reader import ReadOptions, read_log
from supervisor.logs.store import LogDefaults, LogStore

__all__ = ["LogDefaults", "LogStore", "ReadOptions", "read_log"]
