"""Dockyard's own version, reported by Version/Version and `dock version`."""

from __future__ import annotations

from importlib import metadata

try:
    VERSION = metadata.version("dockyard")
except metadata.PackageNotFoundError:  # running from a source tree that was not installed
    VERSION = "0.1.0+source"

REVISION = "dockyard"
