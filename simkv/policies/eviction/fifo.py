"""First in, first out: the granule stored earliest leaves first, hits or not.

The baseline that shows what recency buys; its order is the first insertion into the tier,
kept across pins until the granule leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.policies.eviction.heap import HeapPolicy
from simkv.registry import register


@dataclass(slots=True)
class FIFOConfig:
    pass


@register("eviction", "fifo", FIFOConfig)
class FIFO(HeapPolicy):
    def __init__(self, cfg: FIFOConfig | None = None, **_: object) -> None:
        super().__init__()
        self._born: dict[int, int] = {}
        self._n = 0

    def admit(self, key: int, now: float, cost: float) -> None:
        if key not in self._born:
            self._n += 1
            self._born[key] = self._n
        self._cands.push(key, self._born[key])

    def access(self, key: int, now: float) -> None:
        pass

    def forget(self, key: int) -> None:
        self._cands.discard(key)
        self._born.pop(key, None)
