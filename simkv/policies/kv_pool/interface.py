"""The KV-pool contract: may an instance use other instances' memory for its KV?

A KV pool is the cluster-wide planner of Infinite-LLM's gManager: it is told of every
instance (``attach``) and decides who lends to whom when an instance's blocks run short
(``BlockPool.borrow``); the engine moves only capacity (the borrowed blocks live on the
lender, whose own pool shrinks by as much) and prices attention over them where they live.
"""

from __future__ import annotations

from typing import Any, Protocol


class KVPool(Protocol):
    # True where what an instance may borrow, lend and pay changes with every iteration of
    # every instance: the cluster then plans each instance one iteration at a time
    # (engine.max_fast_forward does not act), as a run planned ahead would price and hold
    # memory as of its plan.
    per_iteration: bool

    def attach(self, instance: Any) -> None:
        """A new instance joins (its ``scheduler.pool`` gains borrow/give_back hooks)."""
        ...

    def detach(self, instance: Any) -> None:
        """An instance stops: what it borrowed goes back, what it lent is recalled."""
        ...
