"""The paged KV pool of one replica, counted in blocks of ``block_size`` tokens.

Like vLLM's BlockPool it hands out fixed-size blocks and never over-commits, but it counts
blocks instead of naming them: without a prefix cache (issue 4 adds hashed blocks) which
physical block a request holds changes no latency, and counting keeps allocation O(1) so the
decode batch can be advanced in closed form.
"""

from __future__ import annotations

from dataclasses import dataclass


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks needed to hold ``tokens`` tokens (ceil division)."""
    return -(-tokens // block_size)


class OutOfBlocksError(RuntimeError):
    """An allocation was attempted without checking ``can_allocate`` first (a bug)."""


@dataclass(slots=True)
class BlockPool:
    capacity: int
    block_size: int
    used: int = 0

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def can_allocate(self, n: int) -> bool:
        return n <= self.capacity - self.used

    def allocate(self, n: int) -> None:
        if n > self.capacity - self.used:
            raise OutOfBlocksError(f"asked for {n} blocks with {self.free} free")
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n
        if self.used < 0:
            raise OutOfBlocksError(f"released {n} blocks more than were held")

    def check_invariants(self, held: int) -> None:
        """``held`` is the sum of blocks owned by live requests, counted independently."""
        if not 0 <= self.used <= self.capacity:
            raise AssertionError(f"KV pool used {self.used} outside [0, {self.capacity}]")
        if held != self.used:
            raise AssertionError(f"KV pool counts {self.used} used blocks but requests hold {held}")
