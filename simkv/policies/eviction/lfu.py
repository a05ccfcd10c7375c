"""Least frequently used: the granule with the fewest hits leaves first (ties: oldest).

Counts live while the granule stays in the tier (no aging), the textbook LFU; cost_aware
adds aging and recompute cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.policies.eviction.heap import HeapPolicy
from simkv.registry import register


@dataclass(slots=True)
class LFUConfig:
    pass


@register("eviction", "lfu", LFUConfig)
class LFU(HeapPolicy):
    def __init__(self, cfg: LFUConfig | None = None, **_: object) -> None:
        super().__init__()
        self._hits: dict[int, int] = {}

    def admit(self, key: int, now: float, cost: float) -> None:
        self._hits.setdefault(key, 0)
        self._cands.push(key, self._hits[key])

    def access(self, key: int, now: float) -> None:
        self._hits[key] = self._hits.get(key, 0) + 1
        if key in self._cands:
            self._cands.push(key, self._hits[key])

    def forget(self, key: int) -> None:
        self._cands.discard(key)
        self._hits.pop(key, None)
