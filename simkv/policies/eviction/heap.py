"""A candidate heap with lazy deletion, shared by the priority-ordered policies.

Each policy only says what a key's priority is (lowest leaves first); pinned or forgotten
keys leave stale heap entries that ``victim`` skips, so every operation is O(log n).
"""

from __future__ import annotations

import heapq


class PriorityCandidates:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._live: dict[int, int] = {}  # key -> sequence number of its valid heap entry
        self._seq = 0

    def push(self, key: int, priority: float) -> None:
        self._seq += 1
        self._live[key] = self._seq
        heapq.heappush(self._heap, (priority, self._seq, key))

    def discard(self, key: int) -> None:
        self._live.pop(key, None)

    def __contains__(self, key: int) -> bool:
        return key in self._live

    def pop(self) -> tuple[int, float] | None:
        heap, live = self._heap, self._live
        while heap:
            prio, seq, key = heapq.heappop(heap)
            if live.get(key) == seq:
                del live[key]
                return key, prio
        return None

    def __len__(self) -> int:
        return len(self._live)


class HeapPolicy:
    """Base of the priority-ordered policies: candidates in a lazy heap, lowest first."""

    def __init__(self) -> None:
        self._cands = PriorityCandidates()

    def pin(self, key: int) -> None:
        self._cands.discard(key)

    def victim(self) -> int | None:
        got = self._cands.pop()
        if got is None:
            return None
        self._evicted_at(got[1])
        return got[0]

    def _evicted_at(self, priority: float) -> None:
        """Hook: the priority of the victim just taken (cost_aware ages by it)."""

    def __len__(self) -> int:
        return len(self._cands)
