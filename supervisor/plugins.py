"""The daemon's component registry, as Introspection/Plugins reports it.

Each component the server wires registers itself here with containerd's plugin type
names, so `ctr plugins ls` describes what really runs (and what failed to start).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Plugin:
    type: str
    id: str
    requires: list[str] = field(default_factory=list)
    exports: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    platforms: list[tuple[str, str, str]] = field(default_factory=list)  # (os, arch, variant)
    init_error: str = ""  # why it could not start; "skip plugin: ..." when it was not wanted


class PluginRegistry:
    def __init__(self) -> None:
        self._plugins: list[Plugin] = []

    def add(self, plugin: Plugin) -> Plugin:
        self._plugins.append(plugin)
        return plugin

    def all(self) -> list[Plugin]:
        return list(self._plugins)

    def ok(self, type_: str, id_: str) -> bool:
        return any(p.type == type_ and p.id == id_ and not p.init_error for p in self._plugins)
