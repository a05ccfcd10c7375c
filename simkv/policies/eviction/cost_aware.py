"""Cost-aware eviction: GreedyDual-Size-Frequency over recompute cost.

Priority ``H = L + hits x cost / size``, lowest leaves first; ``L`` is the priority of the
last victim, so granules not touched for a while fall behind newer ones (recency through
aging). ``cost`` is what recomputing the granule would take, relative to a granule at
position 0: deeper granules attend to more context, so they cost more to rebuild (the KV
manager computes it from the model). All granules of a tier have the same size, so size
drops out. Reference: Cherkasova, "Improving WWW proxies performance with GreedyDual-Size-
Frequency caching policy", HP Labs 1998; Continuum and cost-aware KV caches use the same
idea of weighing recompute cost against recency.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.policies.eviction.heap import HeapPolicy
from simkv.registry import register


@dataclass(slots=True)
class CostAwareConfig:
    pass


@register("eviction", "cost_aware", CostAwareConfig)
class CostAware(HeapPolicy):
    def __init__(self, cfg: CostAwareConfig | None = None, **_: object) -> None:
        super().__init__()
        self._hits: dict[int, int] = {}
        self._cost: dict[int, float] = {}
        self._aging = 0.0

    def _priority(self, key: int) -> float:
        return self._aging + (1 + self._hits[key]) * self._cost[key]

    def admit(self, key: int, now: float, cost: float) -> None:
        self._hits.setdefault(key, 0)
        self._cost[key] = cost
        self._cands.push(key, self._priority(key))

    def access(self, key: int, now: float) -> None:
        if key in self._hits:
            self._hits[key] += 1
            if key in self._cands:
                self._cands.push(key, self._priority(key))

    def forget(self, key: int) -> None:
        self._cands.discard(key)
        self._hits.pop(key, None)
        self._cost.pop(key, None)

    def _evicted_at(self, priority: float) -> None:
        self._aging = priority
