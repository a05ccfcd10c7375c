"""Least recently used: the candidate released or hit longest ago leaves first.

vLLM's prefix cache behaves like this: freed blocks join the tail of a free queue and are
reused from its head (``vllm/v1/core/block_pool.py``); a request's blocks are freed in
reverse order, so a chain's deepest granules leave before its root (the KV manager admits
them in that order).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from simkv.registry import register


@dataclass(slots=True)
class LRUConfig:
    pass


@register("eviction", "lru", LRUConfig)
class LRU:
    def __init__(self, cfg: LRUConfig | None = None, **_: object) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def admit(self, key: int, now: float, cost: float) -> None:
        self._order[key] = None
        self._order.move_to_end(key)

    def access(self, key: int, now: float) -> None:
        if key in self._order:
            self._order.move_to_end(key)

    def pin(self, key: int) -> None:
        self._order.pop(key, None)

    def forget(self, key: int) -> None:
        self._order.pop(key, None)

    def victim(self) -> int | None:
        if not self._order:
            return None
        return self._order.popitem(last=False)[0]

    def __len__(self) -> int:
        return len(self._order)
