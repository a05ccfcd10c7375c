"""The requests of a replica that are decoding, advanced in closed form.

Between two changes of a batch's composition every decoding request gains exactly one KV
token and one output token per iteration. So instead of touching each request each
iteration, the batch keeps one tick counter ``ticks`` and per request the offsets
``base = computed - ticks`` and ``gen_base = generated - ticks`` fixed when it joined.
What the engine needs per iteration is then available from aggregates:

* batch size ``B`` and the sum of contexts ``sum(computed) = sum_base + B * ticks``;
* new KV blocks needed by the next tick: a request needs one when its blocks are exactly
  full, i.e. when ``(base + ticks) % block_size == 0``, so a histogram of ``base % block_size``
  answers it in O(1) (``phase``);
* which request finishes first: a heap keyed by the tick at which it reaches its output.

K iterations therefore cost O(K) numpy work plus O(log n) per request that joins or
leaves, never O(B * K) Python work. tests/test_fast_forward.py checks that advancing K
ticks at once gives the same per-request times as K single steps.
"""

from __future__ import annotations

import heapq

import numpy as np

from simkv.entities.request import DECODING, Request
from simkv.kv.block_pool import blocks_for


class DecodeBatch:
    __slots__ = ("_heap", "block_size", "members", "phase", "sum_base", "ticks")

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.ticks = 0
        self.sum_base = 0
        # NOTE: a list, not a numpy array: it is read one element at a time in the hot path.
        self.phase = [0] * block_size
        # NOTE: dict keyed by request id, in join order; ids are unique per run.
        self.members: dict[int, Request] = {}
        self._heap: list[tuple[int, int, Request]] = []

    def __len__(self) -> int:
        return len(self.members)

    # --- membership ---------------------------------------------------------------------
    def join(self, req: Request, skip: int = 0) -> None:
        """Add a request whose prefill produced its latest token.

        ``skip=1`` joins it from the tick after the next one: a request whose prefill runs
        in the next iteration is joined when that iteration is planned (the scheduler plans
        the decode run that follows in the same breath).
        """
        at = self.ticks + skip
        req.state = DECODING
        req.base = req.computed - at
        req.gen_base = req.generated - at
        self.sum_base += req.base
        self.phase[req.base % self.block_size] += 1
        self.members[req.id] = req
        heapq.heappush(self._heap, (req.output_tokens - req.gen_base, req.id, req))

    def leave(self, req: Request) -> None:
        """Remove a member (finished or preempted); its progress is materialised first."""
        self.materialise(req)
        del self.members[req.id]
        self.sum_base -= req.base
        self.phase[req.base % self.block_size] -= 1
        # NOTE: its heap entry stays; entries of non-members are skipped lazily.

    def materialise(self, req: Request) -> None:
        req.computed = req.base + self.ticks
        req.generated = req.gen_base + self.ticks

    # --- what the next iterations look like ---------------------------------------------
    def context_sum(self, skip: int = 0) -> int:
        """Sum over members of tokens in KV after ``skip`` more ticks."""
        return self.sum_base + len(self.members) * (self.ticks + skip)

    def need_next(self) -> int:
        """New blocks the next tick needs."""
        return self.phase[(-self.ticks) % self.block_size]

    def need_over(self, k: int, skip: int = 0) -> int:
        """New blocks needed by k ticks together, starting ``skip`` ticks from now."""
        bs = self.block_size
        full, rem = divmod(k, bs)
        return full * len(self.members) + _phase_window(self.phase, self.ticks + skip, rem, bs)

    def ticks_to_first_finish(self) -> int:
        heap = self._heap
        members = self.members
        while heap:
            tick, rid, req = heap[0]
            # Inlined _live(): this runs once per engine run.
            if (rid in members and req.state is DECODING
                    and req.output_tokens - req.gen_base == tick):
                return tick - self.ticks
            heapq.heappop(heap)
        return 0

    def cumulative_need(self, k: int, skip: int = 0) -> np.ndarray:
        """New blocks needed by ticks skip+1..skip+k, cumulated (length k)."""
        bs = self.block_size
        idx = (-(self.ticks + skip + np.arange(k, dtype=np.int64))) % bs
        return np.cumsum(np.asarray(self.phase, dtype=np.int64)[idx])

    # --- advancing ----------------------------------------------------------------------
    def advance(self, k: int) -> list[Request]:
        """Apply k ticks; return the members that reached their output, in finish order."""
        self.ticks += k
        done: list[Request] = []
        heap = self._heap
        while heap and heap[0][0] <= self.ticks:
            entry = heapq.heappop(heap)
            req = entry[2]
            # NOTE: a request that was preempted and rejoined can leave an identical entry;
            # identical entries pop back to back.
            if self._live(entry) and not (done and done[-1] is req):
                done.append(req)
        return done

    def _live(self, entry: tuple[int, int, Request]) -> bool:
        """False for entries left behind by a request that left (and perhaps rejoined)."""
        tick, rid, req = entry
        return (rid in self.members and req.state is DECODING
                and req.output_tokens - req.gen_base == tick)

    def held_blocks(self) -> int:
        """Blocks held by members, computed request by request (for invariant checks)."""
        bs = self.block_size
        return sum(blocks_for(r.base + self.ticks, bs) - r.shared for r in self.members.values())


def _phase_window(phase: list[int], t: int, rem: int, bs: int) -> int:
    """Blocks needed by the ``rem`` (< block size) ticks from tick ``t``: the members whose
    blocks are full at each. Typed to C integers by decode_batch.pxd in the compiled build
    (Python's modulo kept: Cython's default), once per committed run."""
    total = 0
    for j in range(rem):
        total += phase[(-(t + j)) % bs]
    return total
