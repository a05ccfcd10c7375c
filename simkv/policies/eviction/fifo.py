"""First in, first out: the granule stored earliest leaves first, hits or not.

The baseline that shows what recency buys; its order is the first insertion into the tier,
kept across pins until the granule leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from simkv.policies.eviction.heap import PriorityCandidates
from simkv.registry import register


@dataclass(slots=True)
class FIFOConfig:
    pass


@register("eviction", "fifo", FIFOConfig)
class FIFO:
    def __init__(self, cfg: FIFOConfig | None = None, **_: object) -> None:
        self._born: dict[int, int] = {}
        self._n = 0
        self._cands = PriorityCandidates()

    def admit(self, key: int, now: float, cost: float) -> None:
        if key not in self._born:
            self._n += 1
            self._born[key] = self._n
        self._cands.push(key, self._born[key])

    def access(self, key: int, now: float) -> None:
        pass

    def pin(self, key: int) -> None:
        self._cands.discard(key)

    def forget(self, key: int) -> None:
        self._cands.discard(key)
        self._born.pop(key, None)

    def victim(self) -> int | None:
        got = self._cands.pop()
        return None if got is None else got[0]

    def __len__(self) -> int:
        return len(self._cands)
