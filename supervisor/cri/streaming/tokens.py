"""One-time tokens for streaming URLs: a token names one request, is good for one connection and
expires unused after TOKEN_TTL seconds (containerd's and kubelet's cache behaves alike)."""

from __future__ import annotations

import secrets
import time
from typing import Generic, TypeVar

T = TypeVar("T")

TOKEN_TTL = 60.0
MAX_PENDING = 1000  # unused tokens kept at once; the oldest go first


class TokenStore(Generic[T]):
    def __init__(self, ttl: float = TOKEN_TTL) -> None:
        self.ttl = ttl
        self._pending: dict[str, tuple[float, T]] = {}

    def issue(self, request: T) -> str:
        now = time.monotonic()
        self._pending = {k: v for k, v in self._pending.items() if v[0] > now}
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]
        token = secrets.token_urlsafe(12)
        self._pending[token] = (now + self.ttl, request)
        return token

    def take(self, token: str) -> T | None:
        """The request `token` stands for, once; None when unknown, used or expired."""
        found = self._pending.pop(token, None)
        if found is None or found[0] <= time.monotonic():
            return None
        return found[1]
