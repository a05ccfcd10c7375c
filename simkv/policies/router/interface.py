"""The router contract: which replica receives an arriving request."""

from __future__ import annotations

from typing import Protocol

from simkv.entities.request import Request


class ReplicaLoad(Protocol):
    """What a router may read of an instance (no access to its internals)."""

    index: int  # the instance's id, stable while it lives
    outstanding_requests: int
    outstanding_tokens: int
    # Tokens per second of a full iteration of its layout: how fast its pool's GPUs are.
    work_rate: float

    def cached_tokens(self, req: Request) -> int:
        """Prompt tokens of ``req`` whose KV this instance holds in HBM (read-only)."""
        ...

    def pending_prefill_tokens(self) -> int:
        """Prompt tokens queued or part-way through prefill on this instance and not yet
        scheduled (a chunk counts as done once planned, as in vLLM)."""
        ...


class Router(Protocol):
    def route(self, req: Request, replicas: list[ReplicaLoad], now: float) -> int:
        """Position in ``replicas`` (the serving instances, in start order) of the one that
        gets ``req``. The list changes when instances start or stop."""
        ...
