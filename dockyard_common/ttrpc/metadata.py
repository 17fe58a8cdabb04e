"""Request metadata: string keys with one or more string values, like ttrpc's MD.

Keys are case-insensitive (stored lower-case); containerd sends the namespace under
`containerd-namespace-ttrpc`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

from dockyard_api.ttrpc import ttrpc_pb2

MetadataLike = Mapping[str, str | Sequence[str]]


class Metadata(Mapping[str, list[str]]):
    def __init__(self, items: MetadataLike | Iterable[tuple[str, str]] = ()) -> None:
        self._values: dict[str, list[str]] = {}
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            if isinstance(value, str):
                self.append(key, value)
            else:
                for v in value:
                    self.append(key, v)

    def append(self, key: str, value: str) -> None:
        self._values.setdefault(key.lower(), []).append(value)

    def get_first(self, key: str) -> str | None:
        """The first value for key, or None (ttrpc's GetMetadataValue)."""
        values = self._values.get(key.lower())
        return values[0] if values else None

    def __getitem__(self, key: str) -> list[str]:
        return self._values[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Metadata({self._values!r})"

    def to_pairs(self) -> list[ttrpc_pb2.KeyValue]:
        return [ttrpc_pb2.KeyValue(key=k, value=v) for k, values in self._values.items() for v in values]

    @classmethod
    def from_pairs(cls, pairs: Iterable[ttrpc_pb2.KeyValue]) -> Metadata:
        return cls((kv.key, kv.value) for kv in pairs)
