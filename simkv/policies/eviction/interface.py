"""The eviction contract: which cached granule of a tier leaves first.

A tier holds cached KV in granules (``kv.prefix_block_tokens`` tokens each, identified by
their hash-chain id). Only *evictable* granules are candidates: in HBM a granule is pinned
while a running request (or a tool-call pin) uses it and becomes evictable when released,
as in vLLM's free-block queue. The store tells its policy every change; the policy only
orders the candidates. Policies keep their own per-key history (hit counts, first insertion)
until ``forget``.
"""

from __future__ import annotations

from typing import Protocol


class EvictionPolicy(Protocol):
    def admit(self, key: int, now: float, cost: float) -> None:
        """``key`` became evictable: newly stored, or its last pin was released.

        ``cost`` is the relative cost of recomputing it (cost-aware policies use it).
        """
        ...

    def access(self, key: int, now: float) -> None:
        """A request hit ``key``."""
        ...

    def pin(self, key: int) -> None:
        """``key`` is in use and may not be evicted until admitted again."""
        ...

    def forget(self, key: int) -> None:
        """``key`` left the tier; drop its history."""
        ...

    def victim(self) -> int | None:
        """Remove and return the candidate to evict next (None when there is none)."""
        ...

    def __len__(self) -> int:
        """Number of evictable candidates."""
        ...
