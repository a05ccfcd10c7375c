"""The paged KV pool of one replica, counted in blocks of ``block_size`` tokens.

Like vLLM's BlockPool it hands out fixed-size blocks and never over-commits, but a running
request's own blocks are counted, not named: which physical block it holds changes no
latency, and counting keeps allocation O(1) so the decode batch advances in closed form.

Blocks that hold *cached* prefix granules (kv/manager.py) are named, by their granule id,
in the HBM cache: ``cached`` of them are resident, ``pinned`` of those are in use. As in
vLLM, evictable cached blocks count as free: ``allocate`` reclaims them (through the cache's
eviction policy) only when the never-used blocks run out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simkv._accel import slotted


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``tokens`` tokens (ceil division)."""
    return -(-tokens // block_size)


class OutOfBlocksError(RuntimeError):
    """An allocation was attempted without checking ``can_allocate`` first (a bug)."""


@dataclass
class BlockPool:
    capacity: int
    block_size: int
    # Private blocks of running requests.
    used: int = 0
    # Blocks of cached granules (pinned or evictable), and those pinned.
    cached: int = 0
    pinned: int = 0
    # Evicts at least n evictable cached blocks (set by the HBM cache).
    reclaim: Callable[[int], None] | None = None
    # Memory borrowed from / lent to other instances (DistAttention, kv_pool=distattention):
    # ``borrow(n)`` asks for n more blocks of capacity and returns how many it got;
    # ``give_back()`` returns borrowed capacity no longer needed; ``reach`` is how many blocks
    # borrowing could add at most (admission counts it). All None/0 without a KV pool.
    borrow: Callable[[int], int] | None = None
    give_back: Callable[[], None] | None = None
    reach: int = 0
    borrowed: int = 0
    lent: int = 0

    @property
    def free(self) -> int:
        """Blocks an allocation may take: never used, or cached but evictable."""
        return self.capacity - self.used - self.pinned

    def can_allocate(self, n: int) -> bool:
        return n <= self.capacity - self.used - self.pinned

    def allocate(self, n: int) -> None:
        if n > self.capacity - self.used - self.pinned:
            raise OutOfBlocksError(f"asked for {n} blocks with {self.free} free")
        short = n - (self.capacity - self.used - self.cached)
        if short > 0:
            assert self.reclaim is not None
            self.reclaim(short)
        self.used += n

    def resize(self, capacity: int) -> None:
        """Change the pool's size (an elastic instance gained or lost GPUs). Shrinking
        evicts cached blocks beyond the new size; blocks in use must fit (callers check)."""
        if capacity < self.capacity:
            if self.used + self.pinned > capacity:
                raise OutOfBlocksError(f"cannot shrink to {capacity} blocks: {self.used} used "
                                       f"and {self.pinned} pinned")
            short = self.used + self.cached - capacity
            if short > 0:
                assert self.reclaim is not None
                self.reclaim(short)
        self.capacity = capacity

    def release(self, n: int) -> None:
        self.used -= n
        if self.used < 0:
            raise OutOfBlocksError(f"released {n} blocks more than were held")

    def check_invariants(self, held: int) -> None:
        """``held`` is the sum of private blocks owned by live requests, counted independently."""
        if not 0 <= self.pinned <= self.cached:
            raise AssertionError(f"KV pool pins {self.pinned} of {self.cached} cached blocks")
        if not 0 <= self.used + self.cached <= self.capacity:
            raise AssertionError(
                f"KV pool used {self.used} + cached {self.cached} outside [0, {self.capacity}]")
        if held != self.used:
            raise AssertionError(f"KV pool counts {self.used} used blocks but requests hold {held}")


# Compiled, BlockPool is an extension type (block_pool.pxd); interpreted, the same dataclass
# with slots (simkv._accel.slotted).
if __file__.endswith(".py"):
    globals()["BlockPool"] = slotted(BlockPool)
